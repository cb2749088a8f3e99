-- Publishes one event with retention, atomically (cluster layouts): XADD, trim, sliding expiry, SPUBLISH.
-- (The standalone layouts publish through publish_batch.lua, with their order key.)
-- KEYS[1]  the audience's stream
-- KEYS[2]  the event's publish marker (in the stream's slot)
-- ARGV[1]  the audience's channel
-- ARGV[2]  the JSON envelope without its closing brace
-- ARGV[3]  the most entries to keep
-- ARGV[4]  the longest age to keep, in milliseconds (0: no age limit, no expiry)
-- ARGV[5]  PUBLISH or SPUBLISH
-- ARGV[6]  ~ (approximate trimming) or = (exact)
-- ARGV[7]  the highest entry id the publishing hub has seen: the new id is above it
-- ARGV[8]  how long the publish marker lives, in milliseconds
-- Returns the entry's id. The channel message is the envelope with that id
-- added as "stream_id", so subscribers know each live event's stream position.
--
-- Publishing is idempotent by event id: a stored event leaves its marker key
-- holding its entry id, for ARGV[8] ms. If the marker exists, an earlier call
-- stored the event (a retry after a lost reply): the script returns that entry
-- id, and adds and publishes nothing.
--
-- Redis numbers the entries of each stream on its own: two streams can both
-- have an entry 1700000000000-0. A cluster has no key that shares a slot with
-- every stream, so no one sequence can number them all (as the standalone
-- layouts' order key does); ARGV[7] stands in for it as far as the publishing
-- hub knows it (a hybrid clock: Redis time, kept above every id the hub has
-- given out or received).

local stored = redis.call('GET', KEYS[2])
if stored then return stored end

local now = server_time_ms()
local last_ms, last_seq = parse_id(ARGV[7])
-- Other publishers may add entries with ids of their own choosing: stay above them too.
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if #top > 0 then
  local ms, seq = parse_id(top[1][1])
  if ms > last_ms or (ms == last_ms and seq > last_seq) then last_ms, last_seq = ms, seq end
end
local id
if now > last_ms then id = format_id(now, 0) else id = format_id(last_ms, last_seq + 1) end

id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[6], ARGV[3], id, 'event', ARGV[2] .. '}')
local max_age = tonumber(ARGV[4])
if max_age > 0 then
  local ms = parse_id(id)
  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[6], string.format('%.0f', ms - max_age))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call('SET', KEYS[2], id, 'PX', ARGV[8])
redis.call(ARGV[5], ARGV[1], ARGV[2] .. ',"stream_id":"' .. id .. '"}')
return id
