-- Appends one message and updates the conversation's summary in one atomic step.
-- KEYS: the conversation hash, its message list.
-- ARGV: id, sessionId, now, message JSON without createdAt, lastMessage, history count, create (1/0),
-- retention ms ('0' = keep forever: a conversation kept under an earlier retention is kept from now on).
-- Workers stamp `now` before their request reaches Redis, so simultaneous appends can arrive out
-- of clock order: the message's createdAt is never earlier than the conversation's updatedAt,
-- which keeps createdAt in list order and makes updatedAt the running maximum of the stamps.
-- With create=0 a missing conversation (deleted meanwhile) is not brought back; returns false.
-- Returns the newest <history count> messages, including the new one.
local now = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[7] ~= '1' then return false end
  redis.call('HSET', KEYS[1], '_id', ARGV[1], 'sessionId', ARGV[2], 'createdAt', now)
else
  now = math.max(now, tonumber(redis.call('HGET', KEYS[1], 'updatedAt')))
end
local message = string.sub(ARGV[4], 1, -2) .. ',"createdAt":' .. string.format('%d', now) .. '}'
local count = redis.call('RPUSH', KEYS[2], message)
redis.call('HSET', KEYS[1], 'updatedAt', now, 'lastMessage', ARGV[5], 'messageCount', count)
for i = 1, 2 do
  if ARGV[8] == '0' then redis.call('PERSIST', KEYS[i]) else redis.call('PEXPIRE', KEYS[i], ARGV[8]) end
end
local history = tonumber(ARGV[6])
if history > 0 then return redis.call('LRANGE', KEYS[2], -history, -1) end
return {}
