-- Publishes one event with retention, atomically: XADD, trim, sliding expiry, PUBLISH.
-- KEYS[1]  the audience's stream
-- KEYS[2]  (standalone layouts only) the order key: the last entry id given out in any stream
-- ARGV[1]  the audience's channel
-- ARGV[2]  the JSON envelope without its closing brace
-- ARGV[3]  the most entries to keep
-- ARGV[4]  the longest age to keep, in milliseconds (0: no age limit, no expiry)
-- ARGV[5]  PUBLISH or SPUBLISH
-- ARGV[6]  ~ (approximate trimming) or = (exact)
-- ARGV[7]  (cluster layouts only) the highest entry id the publishing hub has seen: the new id is above it
-- Returns the new entry's id. The channel message is the envelope with that id
-- added as "stream_id", so subscribers know each live event's stream position.
--
-- Redis numbers the entries of each stream on its own: two streams can both
-- have an entry 1700000000000-0. With an order key, every stream's ids come
-- from one sequence instead, so ids order events across streams (a user's and
-- the broadcasts) exactly as they were published. A cluster has no key that
-- shares a slot with every stream; there ARGV[7] stands in for the order key
-- as far as the publishing hub knows it (a hybrid clock: Redis time, kept above
-- every id the hub has given out or received).

local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end

local function format_id(ms, seq)
  return string.format('%.0f-%.0f', ms, seq)
end

local id = '*'
if KEYS[2] or ARGV[7] then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  local last_ms, last_seq = -1, 0
  local last = ARGV[7]
  if KEYS[2] then last = redis.call('GET', KEYS[2]) end
  if last then last_ms, last_seq = parse(last) end
  -- Other publishers may add entries with ids of their own choosing: stay above them too.
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #top > 0 then
    local ms, seq = parse(top[1][1])
    if ms > last_ms or (ms == last_ms and seq > last_seq) then last_ms, last_seq = ms, seq end
  end
  if now > last_ms then id = format_id(now, 0) else id = format_id(last_ms, last_seq + 1) end
  if KEYS[2] then redis.call('SET', KEYS[2], id) end
end

id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[6], ARGV[3], id, 'event', ARGV[2] .. '}')
local max_age = tonumber(ARGV[4])
if max_age > 0 then
  local ms = parse(id)
  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[6], string.format('%.0f', ms - max_age))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  if KEYS[2] then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
end
redis.call(ARGV[5], ARGV[1], ARGV[2] .. ',"stream_id":"' .. id .. '"}')
return id
