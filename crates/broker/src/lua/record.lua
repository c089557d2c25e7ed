-- Record one message (already popped by BRPOP) in kombu's ack-emulation structures.
-- KEYS[1] = unacked, KEYS[2] = unacked_index; ARGV[1] = tag, ARGV[2] = score, ARGV[3] = [message, exchange, rk] JSON
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
