-- Reads the server's clock and the last entry id ssehub gave out, for a consistent cut of several streams.
-- KEYS[1]  (standalone layouts only) the order key
-- Returns { the order key's value or nil, the server time in milliseconds }.
local now = server_time_ms()
local last = false
if KEYS[1] then last = redis.call('GET', KEYS[1]) end
return { last, string.format('%.0f', now) }
