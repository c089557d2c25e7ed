-- Celery's result write for several tasks at once (one script call for a batch, instead of one per task): for each
-- key, in order, skip it if the stored state is already SUCCESS, else SETEX (or SET) and PUBLISH the same payload on
-- a channel named like the key. Each write is exactly what store_result.lua does for one key.
-- KEYS[i] = celery-task-meta-<id>; ARGV[2i-1] = meta JSON, ARGV[2i] = expiry seconds (0 = none)
-- Returns one integer per key: 1 written, 0 skipped (already SUCCESS).
local out = {}
for i = 1, #KEYS do
  local key, meta, ttl = KEYS[i], ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local skip = false
  local cur = redis.call('GET', key)
  if cur then
    local ok, m = pcall(cjson.decode, cur)
    skip = ok and type(m) == 'table' and m.status == 'SUCCESS'
  end
  if skip then
    out[i] = 0
  else
    if ttl and ttl > 0 then
      redis.call('SETEX', key, ttl, meta)
    else
      redis.call('SET', key, meta)
    end
    redis.call('PUBLISH', key, meta)
    out[i] = 1
  end
end
return out
