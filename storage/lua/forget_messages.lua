-- Takes the messages counted for the conversations ARGV off the total and forgets them.
-- KEYS: counts per conversation, the total. Returns how many were taken off.
local sum = 0
for _, n in ipairs(redis.call('HMGET', KEYS[1], unpack(ARGV))) do sum = sum + (tonumber(n) or 0) end
redis.call('HDEL', KEYS[1], unpack(ARGV))
if sum > 0 then redis.call('DECRBY', KEYS[2], sum) end
return sum
