-- Deletes both keys of a conversation (KEYS: its hash, its message list).
-- Returns the sessionId it belonged to, or false if it was unknown.
local session = redis.call('HGET', KEYS[1], 'sessionId')
if not session then return false end
redis.call('DEL', KEYS[1], KEYS[2])
return session
