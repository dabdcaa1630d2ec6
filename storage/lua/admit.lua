-- Decides whether a chat request may go on, in one atomic step, in this order:
--   1. the client's rate window (every request counts, even one refused later);
--   2. the key (ARGV[9] = '1' when the request carries a valid widget key);
--   3. only for a turn (ARGV[3] = '1'): the session's quota window, then the daily budgets;
--   4. an admitted turn is counted in the session window and the day's requests, and reserves
--      ARGV[11] output tokens of the day's budget (settled when the turn ends), so simultaneous
--      turns cannot all pass a budget that none has spent yet.
-- Windows start with their first request and expire with it, so idle clients and sessions leave
-- nothing behind; daily counters carry the date and expire a day after it. The request, and a
-- refusal (401 or 429), are added to this hour's counts (KEYS[5..7]) in the same step.
-- KEYS: client window, session quota, day's requests, day's tokens, hourly counts of chat
--       requests, 401s and 429s, the knowledge version.
-- ARGV: client window ms, client max, turn, session window ms, session max, daily max requests,
--       daily max tokens (0 = unlimited), daily counter lifetime ms, key valid, hourly lifetime ms,
--       tokens a turn reserves.
-- Returns {verdict, ms until the refusing window resets}; verdict 'ok', 'ip', 'key', 'session'
-- or 'budget' (storage.limits.Verdict). An admitted turn's answer adds the knowledge version
-- (nil while no document was ever stored).
local function count(key, window_ms)
  local n = redis.call('INCR', key)
  if n == 1 or redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, window_ms) end
  return n
end
local function refuse(verdict, counter, retry_ms)
  count(counter, ARGV[10])
  return {verdict, retry_ms}
end
count(KEYS[5], ARGV[10])
if count(KEYS[1], ARGV[1]) > tonumber(ARGV[2]) then return refuse('ip', KEYS[7], redis.call('PTTL', KEYS[1])) end
if ARGV[9] ~= '1' then return refuse('key', KEYS[6], 0) end
if ARGV[3] ~= '1' then return {'ok', 0} end
if tonumber(redis.call('GET', KEYS[2]) or '0') >= tonumber(ARGV[5]) then
  return refuse('session', KEYS[7], redis.call('PTTL', KEYS[2]))
end
local max_requests, max_tokens = tonumber(ARGV[6]), tonumber(ARGV[7])
if (max_requests > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') >= max_requests)
    or (max_tokens > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') >= max_tokens) then
  return refuse('budget', KEYS[7], 0)
end
count(KEYS[2], ARGV[4])
count(KEYS[3], ARGV[8])
if tonumber(ARGV[11]) > 0 then
  redis.call('INCRBY', KEYS[4], ARGV[11])
  if redis.call('PTTL', KEYS[4]) < 0 then redis.call('PEXPIRE', KEYS[4], ARGV[8]) end
end
return {'ok', 0, redis.call('GET', KEYS[8])}
