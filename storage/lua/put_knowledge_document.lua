-- Stores or replaces one knowledge document with its chunks in one atomic step.
-- KEYS: the document hash, its chunk list.
-- ARGV: id, title, url ('' = none), format, content, updatedAt ms, then one JSON chunk each.
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'title', ARGV[2], 'url', ARGV[3], 'format', ARGV[4],
  'content', ARGV[5], 'updatedAt', ARGV[6], 'chunks', #ARGV - 6)
for i = 7, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
