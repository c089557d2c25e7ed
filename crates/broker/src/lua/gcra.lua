-- GCRA rate limit (the generic cell rate algorithm), one atomic step per request.
-- KEYS[1]: the limiter's key (holds the "theoretical arrival time" in microseconds)
-- ARGV[1]: requests allowed per period; ARGV[2]: the period in microseconds
-- Returns {allowed (1/0), remaining, retry_after_us, reset_us}.
-- Time comes from the Redis server, so every API replica shares one clock.
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
local remaining = math.floor((now + period - new_tat) / interval)
return {1, remaining, 0, math.ceil(new_tat - now)}
