-- The session's conversation id: the candidate if this call created the mapping, else the
-- existing one. Two simultaneous first requests of a session therefore agree on one id.
-- KEYS: the session mapping. ARGV: candidate id, retention ms ('0' = none), so a mapping never
-- outlives its conversation.
local created
if ARGV[2] == '0' then created = redis.call('SET', KEYS[1], ARGV[1], 'NX')
else created = redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) end
if created then return ARGV[1] end
return redis.call('GET', KEYS[1])
