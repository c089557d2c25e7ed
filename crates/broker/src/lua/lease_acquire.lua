-- Take or renew a leader lease with a fencing term (celeriac-coordinator high availability).
-- KEYS[1] the lease key, KEYS[2] the term counter; ARGV[1] the holder's random token, ARGV[2] the lease in ms.
-- The lease value is "<term>:<token>". A free lease is taken with a new term (INCR, so terms only grow); the
-- holder's own lease is renewed with the same term. Returns {1, term, ""} when the caller holds the lease now,
-- {0, term, holder_token} when someone else does.
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, ':', 1, true)
  local term = tonumber(string.sub(cur, 1, sep - 1))
  local holder = string.sub(cur, sep + 1)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, term, ''}
  end
  return {0, term, holder}
end
local term = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], term .. ':' .. ARGV[1], 'PX', ARGV[2])
return {1, term, ''}
