-- Counts one stored message of conversation ARGV[1] in the totals (KEYS: counts per
-- conversation, the total): always for a message that may create the conversation
-- (ARGV[2] = '1'), else only while the conversation is counted, so a reply stored after its
-- conversation was deleted adds nothing.
if ARGV[2] == '1' or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
  redis.call('INCR', KEYS[2])
end
