-- kombu 5.7's bind for queues with x-expires (pidbox mailboxes, reply queues, event receivers):
-- SADD the binding member and push the exchange's deadline forward (ZADD GT, Redis >= 6.2).
-- KEYS[1] = _kombu.binding.<exchange>, KEYS[2] = _kombu.binding_deadlines
-- ARGV[1] = member, ARGV[2] = exchange, ARGV[3] = ttl in ms
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'GT', now_ms + tonumber(ARGV[3]), ARGV[2])
return 1
