-- Publishes a batch of events with retention on one cluster master, in one script call: publish.lua's
-- steps for each event in turn (publish.lua is compiled in above this as the function
-- publish_one(KEYS, ARGV)), each event's id above the one before it.
-- KEYS[1]  the first event's stream: it routes the call to the master that serves it. The other
--          streams come in ARGV: they hash to other slots, and Redis refuses a call whose declared
--          keys span slots (CROSSSLOT). A script without flags may reach keys of other slots of its
--          own node; a stream whose slot this node does not serve fails that event alone.
-- ARGV[1]  the most entries to keep
-- ARGV[2]  the longest age to keep, in milliseconds (0: no age limit, no expiry)
-- ARGV[3]  ~ (approximate trimming) or = (exact)
-- ARGV[4]  the highest entry id the publishing hub has seen: the first new id is above it
-- ARGV[2+3i], ARGV[3+3i], ARGV[4+3i]  event i's stream, channel, and JSON envelope without its closing brace
-- Returns, per event in order, its new entry id, or '!' and the error that kept it from being
-- stored (such an event is not published either).

local max_events, max_age, trim = ARGV[1], ARGV[2], ARGV[3]
local floor = ARGV[4]
local ids = {}
for i = 1, (#ARGV - 4) / 3 do
  local stream, channel, envelope = ARGV[2 + 3 * i], ARGV[3 + 3 * i], ARGV[4 + 3 * i]
  local ok, id = pcall(publish_one, { stream }, { channel, envelope, max_events, max_age, 'SPUBLISH', trim, floor })
  if ok then
    ids[i] = id
    floor = id
  else
    if type(id) == 'table' then id = id.err end
    ids[i] = '!' .. tostring(id)
  end
end
return ids
