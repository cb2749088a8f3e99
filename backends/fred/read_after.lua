-- A replay's reads after a cursor in one atomic step: each stream read after its own position.
-- (Two streams on one server; on a cluster, one call per stream.)
-- KEYS[1..n]  the streams, n = 1 or 2
-- ARGV[1]     the most entries to read per stream
-- ARGV[1+i]   KEYS[i]'s position: an entry id ('0-0' before every entry), or '' for none (nothing is read)
-- Returns per stream in KEYS order: { what the stream says of its entries (`trim_info`, trim_info.lua) or
-- false for a missing stream, whether the position's entry is held (always for '0-0' and none), the entries
-- after the position (as XRANGE returns them, at most ARGV[1]) }.
--
-- The work is bounded whatever the streams hold: a look-up of the position's entry and one ranged read.

local read_count = tonumber(ARGV[1])
local reply = {}
for i = 1, #KEYS do
  local key, position = KEYS[i], ARGV[1 + i]
  local info = trim_info(key)
  local held, entries = 1, {}
  if info and position ~= '' then
    if position ~= '0-0' and #redis.call('XRANGE', key, position, position, 'COUNT', 1) == 0 then
      held = 0
    end
    entries = redis.call('XRANGE', key, '(' .. position, '+', 'COUNT', read_count)
  elseif position ~= '' and position ~= '0-0' then
    held = 0
  end
  reply[i] = { info, held, entries }
end
return reply
