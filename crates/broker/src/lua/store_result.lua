-- Celery's result write: skip if the stored state is already SUCCESS, else SETEX (or SET) and PUBLISH the same
-- payload on a channel named like the key, atomically.
-- KEYS[1] = celery-task-meta-<id>; ARGV[1] = meta JSON, ARGV[2] = expiry seconds (0 = none)
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, meta = pcall(cjson.decode, cur)
  if ok and type(meta) == 'table' and meta.status == 'SUCCESS' then return 0 end
end
local ttl = tonumber(ARGV[2])
if ttl and ttl > 0 then
  redis.call('SETEX', KEYS[1], ttl, ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1])
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
