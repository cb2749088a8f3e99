-- Helpers every ssehub script starts with (concatenated in front of each script in scripts.rs).

-- A stream entry id "ms-seq" as two numbers.
local function parse_id(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

-- Two numbers as a stream entry id; %.0f, because Lua numbers are doubles and %d would refuse large ones.
local function format_id(ms, seq)
  return string.format('%.0f-%.0f', ms, seq)
end

-- The server's clock in milliseconds.
local function server_time_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end

