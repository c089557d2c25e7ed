-- A chord header task finished: add its result to the join and claim the body if every header result is in.
-- Same keys and semantics as Celery 5.7's Redis backend, so Python and Rust workers can share one chord.
-- KEYS: 1 .j (zset, or list when unordered), 2 .t (size adjustment), 3 .s (size), 4 .d (dedup set),
--       5 the group meta key, 6 .c (claim token, then "done")
-- ARGV: 1 task id, 2 [1, id, state, result] JSON, 3 "1" = ordered, 4 score (group_index or +inf),
--       5 expiry of the join keys, 6 expiry of the group key, 7 claim expiry, 8 claim token
-- Returns {ready count, size adjustment, size, claimed (1/0)}; ready count -1 when the chord is already done.
local j, t, s, d, g, c = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
if redis.call('GET', c) == 'done' then
  return {-1, 0, 0, 0}
end
local ordered = ARGV[3] == '1'
local member = ARGV[1] .. ':' .. ARGV[4]
if redis.call('SISMEMBER', d, member) == 0 then
  if ordered then redis.call('ZADD', j, ARGV[4], ARGV[2]) else redis.call('RPUSH', j, ARGV[2]) end
  redis.call('SADD', d, member)
end
local ready = ordered and redis.call('ZCOUNT', j, '-inf', '+inf') or redis.call('LLEN', j)
local expires, group_expires = tonumber(ARGV[5]), tonumber(ARGV[6])
if expires > 0 then
  for _, key in ipairs({j, t, s, d}) do redis.call('EXPIRE', key, expires) end
  if group_expires > 0 then redis.call('EXPIRE', g, group_expires) end
end
local adjust = redis.call('GET', t)
local size = redis.call('GET', s)
local claimed = 0
if size and ready == tonumber(size) + tonumber(adjust or 0) then
  if redis.call('SET', c, ARGV[8], 'NX', 'EX', tonumber(ARGV[7])) then claimed = 1 end
end
return {ready, adjust, size, claimed}
