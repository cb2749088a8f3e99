-- Presence across hubs: one user's open streams (ARGV[2] a user id), or the users online (ARGV[2] '').
-- KEYS[1]: the hubs' sorted set; ARGV[1]: the prefix of a hub's hash name (the hub id follows).
-- Hubs whose hash expired (killed without leaving) are dropped from the set first.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local hubs = redis.call('ZRANGE', KEYS[1], 0, -1)
if ARGV[2] ~= '' then
  local streams = 0
  for _, hub in ipairs(hubs) do
    local count = redis.call('HGET', ARGV[1] .. hub, ARGV[2])
    if count then streams = streams + tonumber(count) end
  end
  return streams
end
local seen, online = {}, 0
for _, hub in ipairs(hubs) do
  for _, user in ipairs(redis.call('HKEYS', ARGV[1] .. hub)) do
    if not seen[user] then
      seen[user] = true
      online = online + 1
    end
  end
end
return online
