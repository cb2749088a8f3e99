-- Reads the server's clock and the last entry id ssehub gave out, for a consistent cut of several streams.
-- KEYS[1]  (standalone layouts only) the order key
-- Returns { the order key's value or nil, the server time in milliseconds }.
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local last = false
if KEYS[1] then last = redis.call('GET', KEYS[1]) end
return { last, string.format('%.0f', now) }
