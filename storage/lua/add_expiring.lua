-- Adds ARGV[2i-1] to the counter KEYS[i] and sets it to expire ARGV[2i] ms from now, for each i.
for i, key in ipairs(KEYS) do
  redis.call('INCRBY', key, ARGV[2 * i - 1])
  redis.call('PEXPIRE', key, ARGV[2 * i])
end
