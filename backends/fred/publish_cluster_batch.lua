-- Publishes a batch of events with retention on one cluster master, in one script call: publish.lua's
-- steps for each event in turn (publish.lua is compiled in above this as the function
-- publish_one(KEYS, ARGV)), each event's id above the one before it.
-- KEYS[1]  the first event's stream: it routes the call to the master that serves it. The other
--          streams and every publish marker come in ARGV: they hash to other slots, and Redis refuses
--          a call whose declared keys span slots (CROSSSLOT). A script without flags may reach keys
--          of other slots of its own node; a stream whose slot this node does not serve fails that
--          event alone.
-- ARGV[1]  the most entries to keep
-- ARGV[2]  the longest age to keep, in milliseconds (0: no age limit, no expiry)
-- ARGV[3]  ~ (approximate trimming) or = (exact)
-- ARGV[4]  the highest entry id the publishing hub has seen: the first new id is above it
-- ARGV[5]  how long a publish marker lives, in milliseconds
-- ARGV[2+4i]..ARGV[5+4i]  event i's stream, its publish marker (in the stream's slot), its channel,
--          and its JSON envelope without its closing brace
-- Returns, per event in order, its entry id, or '!' and the error that kept it from being
-- stored (such an event is not published either). An event stored by an earlier call (its marker
-- holds it) is not stored again: its stored entry id is returned.

local max_events, max_age, trim, marker_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local floor = ARGV[4]
local ids = {}
for i = 1, (#ARGV - 5) / 4 do
  local base = 2 + 4 * i
  local stream, marker, channel, envelope = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local ok, id = pcall(publish_one, { stream, marker },
    { channel, envelope, max_events, max_age, 'SPUBLISH', trim, floor, marker_ttl })
  if ok then
    ids[i] = id
    -- An id stored by an earlier call may lie below the floor: the floor only rises.
    local ms, seq = parse_id(id)
    local floor_ms, floor_seq = parse_id(floor)
    if ms > floor_ms or (ms == floor_ms and seq > floor_seq) then floor = id end
  else
    if type(id) == 'table' then id = id.err end
    ids[i] = '!' .. tostring(id)
  end
end
return ids
