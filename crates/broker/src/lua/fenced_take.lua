-- Step one of a fenced move: only while the caller's lease is current, the oldest waiting message of a queue
-- (its priority lists in KEYS[3..], highest priority first) is moved into the holding list KEYS[2].
-- KEYS[1] the lease key; ARGV[1] the lease value "<term>:<token>" the caller holds.
-- Returns {0} when the lease is not the caller's (deposed: nothing is taken), {1} when the queue is empty,
-- {1, message} when a message was taken.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return {0}
end
for i = 3, #KEYS do
  local m = redis.call('RPOPLPUSH', KEYS[i], KEYS[2])
  if m then
    return {1, m}
  end
end
return {1}
