-- Pop up to ARGV[2] messages from the queue lists (KEYS[3..], already in priority-major order) and record each
-- one in kombu's ack-emulation structures in the same atomic step, so no crash can lose a popped message.
-- KEYS[1] = unacked (hash), KEYS[2] = unacked_index (zset)
-- ARGV[1] = receive time (float seconds, the zset score kombu uses), ARGV[2] = how many messages at most
-- Returns a flat list: key1, message1, key2, message2, ...; a message whose delivery tag cannot be read is
-- returned too (unrecorded) so the worker can dead-letter it with a reason.
local out = {}
local max = tonumber(ARGV[2])
local n = 0
for i = 3, #KEYS do
  while n < max do
    local m = redis.call('RPOP', KEYS[i])
    if not m then break end
    local ok, env = pcall(cjson.decode, m)
    if ok and type(env) == 'table' and type(env.properties) == 'table' then
      local tag = env.properties.delivery_tag
      if type(tag) == 'string' and tag ~= '' then
        local ex, rk = '', ''
        local info = env.properties.delivery_info
        if type(info) == 'table' then
          if type(info.exchange) == 'string' then ex = info.exchange end
          if type(info.routing_key) == 'string' then rk = info.routing_key end
        end
        redis.call('ZADD', KEYS[2], ARGV[1], tag)
        redis.call('HSET', KEYS[1], tag, '[' .. m .. ', ' .. cjson.encode(ex) .. ', ' .. cjson.encode(rk) .. ']')
      end
    end
    n = n + 1
    out[#out + 1] = KEYS[i]
    out[#out + 1] = m
  end
  if n >= max then break end
end
return out
