-- Removes a session mapping (KEYS[1]) only if it still points at conversation ARGV[1].
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
