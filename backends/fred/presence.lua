-- Presence: one hub's open streams per user, in a hash of its own that expires unless refreshed.
-- KEYS[1]: the hubs' sorted set (member: hub id, score: when its hash expires, Unix ms);
-- KEYS[2]: this hub's hash (field: user id, value: its open streams here).
-- ARGV[1]: 'flush' or 'leave'; ARGV[2]: the hub id; ARGV[3]: the hash's time to live (ms);
-- then pairs of user id and count ('0' removes the user).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if ARGV[1] == 'leave' then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
for i = 4, #ARGV, 2 do
  if ARGV[i + 1] == '0' then
    redis.call('HDEL', KEYS[2], ARGV[i])
  else
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  end
end
local ttl = tonumber(ARGV[3])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
return redis.call('HLEN', KEYS[2])
