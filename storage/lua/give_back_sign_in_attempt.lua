-- Un-counts one attempt of a sign-in window (KEYS[1]) if the window still exists: a plain DECR
-- after it expired would leave a counter of -1 that never expires.
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECR', KEYS[1]) end
