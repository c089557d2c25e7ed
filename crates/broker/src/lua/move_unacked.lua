-- Put an unacknowledged message back on a queue list, atomically and only if it is still the one we read:
-- the equivalent of kombu's WATCH/HGET/MULTI/ZREM/HDEL/(L|R)PUSH/EXEC in restore_by_tag.
-- KEYS[1] = unacked, KEYS[2] = unacked_index, KEYS[3] = destination list
-- ARGV[1] = tag, ARGV[2] = the unacked value we read, ARGV[3] = message to push, ARGV[4] = 'left' or 'right'
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur ~= ARGV[2] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[4] == 'left' then
  redis.call('LPUSH', KEYS[3], ARGV[3])
else
  redis.call('RPUSH', KEYS[3], ARGV[3])
end
return 1
