-- Record every message in this consumer's in-flight list (where the idle wait's BLMOVE put it) in kombu's
-- ack-emulation structures, in one atomic step, and return them. Nothing else reads this list but the sweeper
-- (sweep_in_flight.lua), which only takes it over once this consumer's alive key has expired.
-- KEYS[1] = unacked (hash), KEYS[2] = unacked_index (zset), KEYS[3] = the in-flight list
-- ARGV[1] = receive time (float seconds, the zset score kombu uses), ARGV[2] = the most messages to take
-- Returns a flat list of messages, oldest first; a message whose delivery tag cannot be read is returned too
-- (unrecorded) so the worker can dead-letter it with a reason, as pop_and_record.lua does.
local out = {}
local max = tonumber(ARGV[2]) or 1
while #out < max do
  local m = redis.call('RPOP', KEYS[3])
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
  out[#out + 1] = m
end
return out
