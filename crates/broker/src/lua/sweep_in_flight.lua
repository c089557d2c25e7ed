-- Take over the in-flight list of a consumer that is gone (its alive key expired): record each message in kombu's
-- unacked structures with score 0, so the restore that follows (any consumer's, Python's too) puts it back at the
-- front of its queue at once. A message without a readable delivery tag cannot be recorded; it is moved to the
-- unreadable list (KEYS[6]) for an operator, not dropped. The consumer leaves the registry once its list is empty.
-- KEYS[1] = unacked, KEYS[2] = unacked_index, KEYS[3] = the in-flight list, KEYS[4] = its alive key,
-- KEYS[5] = the registry (set of in-flight lists), KEYS[6] = the unreadable list
-- Returns {recorded, unreadable}, or {-1, 0} when the consumer is alive.
if redis.call('EXISTS', KEYS[4]) == 1 then return {-1, 0} end
local recorded, unreadable = 0, 0
while true do
  local m = redis.call('RPOP', KEYS[3])
  if not m then break end
  local ok, env = pcall(cjson.decode, m)
  local tag = nil
  if ok and type(env) == 'table' and type(env.properties) == 'table' then tag = env.properties.delivery_tag end
  if type(tag) == 'string' and tag ~= '' then
    local ex, rk = '', ''
    local info = env.properties.delivery_info
    if type(info) == 'table' then
      if type(info.exchange) == 'string' then ex = info.exchange end
      if type(info.routing_key) == 'string' then rk = info.routing_key end
    end
    redis.call('ZADD', KEYS[2], 0, tag)
    redis.call('HSET', KEYS[1], tag, '[' .. m .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
    recorded = recorded + 1
  else
    redis.call('LPUSH', KEYS[6], m)
    unreadable = unreadable + 1
  end
end
redis.call('SREM', KEYS[5], KEYS[3])
return {recorded, unreadable}
