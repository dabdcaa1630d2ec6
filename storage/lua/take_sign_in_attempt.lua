-- Takes one dashboard sign-in attempt of a client's window (KEYS[1]), if fewer than ARGV[1] were
-- taken: checking and counting in one step, so simultaneous tries cannot slip past the limit.
-- The window (ARGV[2] ms) starts with the first attempt and expires with it.
-- Returns {1, 0} when taken, {0, ms until the window ends} when not.
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[1]) then return {0, redis.call('PTTL', KEYS[1])} end
if redis.call('INCR', KEYS[1]) == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return {1, 0}
