-- The dead-letter store (docs/dead-letters.md): a hash id -> record (KEYS[1]) and a sorted set id -> time kept in
-- milliseconds by Redis's clock (KEYS[2]), always changed together here, so list/show/drop by id are one lookup
-- and nothing is half-written. ARGV[1] names the operation:
--   keep   ARGV[2] id, ARGV[3] record, ARGV[4] max entries, ARGV[5] max age ms (0: no bound) -> {too_many, too_old}
--   trim   ARGV[2] max entries, ARGV[3] max age ms -> {too_many, too_old}
--   drop   ARGV[2..] ids -> {1 or 0 per id}
--   replay KEYS[3] queue list; ARGV[2] id, ARGV[3] message -> 1 when pushed and removed, 0 when the id is gone
--   adopt  KEYS[3] the old list; ARGV[2] entry as in the list, ARGV[3] id, ARGV[4] time ms, ARGV[5] record to keep
--          -> 1 when moved from the list (0: someone else moved it first)
local op = ARGV[1]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local function remove(ids)
  for i = 1, #ids, 500 do
    local chunk = {unpack(ids, i, math.min(i + 499, #ids))}
    redis.call('HDEL', KEYS[1], unpack(chunk))
    redis.call('ZREM', KEYS[2], unpack(chunk))
  end
end

local function trim(max_entries, max_age_ms)
  local too_many, too_old = 0, 0
  if max_age_ms > 0 then
    local cutoff = '(' .. string.format('%d', now_ms - max_age_ms)
    while true do
      local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', cutoff, 'LIMIT', 0, 500)
      if #ids == 0 then break end
      remove(ids)
      too_old = too_old + #ids
    end
  end
  if max_entries > 0 then
    local n = redis.call('ZCARD', KEYS[2])
    while n > max_entries do
      local ids = redis.call('ZRANGE', KEYS[2], 0, math.min(n - max_entries, 500) - 1)
      if #ids == 0 then break end
      remove(ids)
      too_many = too_many + #ids
      n = n - #ids
    end
  end
  return {too_many, too_old}
end

if op == 'keep' then
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
  redis.call('ZADD', KEYS[2], now_ms, ARGV[2])
  return trim(tonumber(ARGV[4]), tonumber(ARGV[5]))
elseif op == 'trim' then
  return trim(tonumber(ARGV[2]), tonumber(ARGV[3]))
elseif op == 'drop' then
  local out = {}
  for i = 2, #ARGV do
    local gone = redis.call('HDEL', KEYS[1], ARGV[i])
    redis.call('ZREM', KEYS[2], ARGV[i])
    out[#out + 1] = gone
  end
  return out
elseif op == 'replay' then
  if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return 0 end
  redis.call('LPUSH', KEYS[3], ARGV[3])
  redis.call('HDEL', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[2])
  return 1
elseif op == 'adopt' then
  if redis.call('LREM', KEYS[3], -1, ARGV[2]) == 0 then return 0 end
  if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 then
    redis.call('HSET', KEYS[1], ARGV[3], ARGV[5])
    redis.call('ZADD', KEYS[2], tonumber(ARGV[4]), ARGV[3])
  end
  return 1
end
return redis.error_reply('dead_letters.lua: unknown operation ' .. tostring(op))
