-- Give a lease up, only if it is still ours. KEYS[1] the lease key; ARGV[1] the exact value "<term>:<token>".
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
