-- The claimer applied the chord body: drop the join keys and mark the chord done (late duplicates are ignored).
-- KEYS: 1 .c, 2 .j, 3 .t, 4 .s, 5 .d; ARGV: 1 claim token, 2 expiry of the done marker
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5])
local ex = tonumber(ARGV[2])
if ex and ex > 0 then redis.call('SET', KEYS[1], 'done', 'EX', ex) end
return 1
