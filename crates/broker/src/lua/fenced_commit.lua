-- Step two of a fenced move: only while the caller's lease is current, the original message is removed from
-- the holding list KEYS[2] and its rewritten form pushed to the target list KEYS[3], atomically.
-- KEYS[1] the lease key; ARGV[1] the lease value "<term>:<token>"; ARGV[2] the original bytes; ARGV[3] the
-- rewritten bytes. Returns -1 when the lease is not the caller's (deposed: nothing changes), 0 when the message
-- is no longer held (someone finished this move already: nothing is pushed twice), 1 when it moved.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return -1
end
if redis.call('LREM', KEYS[2], 1, ARGV[2]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[3], ARGV[3])
return 1
