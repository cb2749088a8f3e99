-- Publishes a batch of events with retention, atomically (standalone layouts): per event XADD and PUBLISH,
-- per stream trimming by age and a sliding expiry.
-- KEYS[1..n]  each event's stream (the audience's; a stream may appear more than once)
-- KEYS[n+1]   the current window's publish markers, KEYS[n+2] the previous window's (see below)
-- KEYS[n+3]   the order key: the last entry id given out in any stream
-- ARGV[1]     the most entries to keep
-- ARGV[2]     the longest age to keep, in milliseconds (0: no age limit, no expiry)
-- ARGV[3]     ~ (approximate trimming) or = (exact)
-- ARGV[2+2i], ARGV[3+2i]  event i's channel, and its JSON envelope without its closing brace
-- ARGV[3+2n+i]  event i's id
-- ARGV[4+3n]  the length of a marker window, in milliseconds
-- Returns, per event in order, its entry id, or '!' and the error that kept it
-- from being stored (such an event is not published either). The channel message
-- is the envelope with the id added as "stream_id".
--
-- Publishing is idempotent by event id: each stored event's id goes into the
-- current window's marker hash (event id -> entry id), which lives two windows.
-- An event found in the current or the previous window's hash was stored by an
-- earlier call (a retry after a lost reply): it is neither added nor published
-- again, and its stored entry id is returned. One hash per window instead of one
-- key per event keeps this to three commands per batch.
--
-- Every stream's ids come from one sequence, the order key's, so ids order events
-- across streams (a user's and the broadcasts) exactly as they were published.
-- One script per batch instead of one per event: the script call's own cost, the
-- clock and the order key are paid once, and each stream is trimmed and expired once.

local n = #KEYS - 3
local current_markers, previous_markers, order_key = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local max_events, max_age, trim = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local event_ids = {}
for i = 1, n do event_ids[i] = ARGV[3 + 2 * n + i] end
local window = tonumber(ARGV[4 + 3 * n])

-- Read, not written, before the XADDs: under maxmemory Redis refuses a script's first write, and then
-- nothing of the batch is stored; once one write went through, the rest do too.
local in_current = redis.call('HMGET', current_markers, unpack(event_ids))
local in_previous = redis.call('HMGET', previous_markers, unpack(event_ids))
local stored_now = {}
local new_markers = {}

local now = server_time_ms()
local last_ms, last_seq = -1, 0
local last = redis.call('GET', order_key)
if last then last_ms, last_seq = parse_id(last) end

local function next_id()
  if now > last_ms then last_ms, last_seq = now, 0 else last_seq = last_seq + 1 end
  return format_id(last_ms, last_seq)
end

local function add(stream, entry)
  local added = redis.pcall('XADD', stream, 'MAXLEN', trim, max_events, next_id(), 'event', entry)
  if type(added) == 'table' and added.err and string.find(added.err, 'equal or smaller', 1, true) then
    -- Another publisher added an entry with an id of its own choosing, above ours: go above it.
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    last_ms, last_seq = parse_id(top[1][1])
    added = redis.pcall('XADD', stream, 'MAXLEN', trim, max_events, next_id(), 'event', entry)
  end
  return added
end

local ids = {}
local touched, touched_order = {}, {}
for i = 1, n do
  local stream, channel, envelope = KEYS[i], ARGV[2 + 2 * i], ARGV[3 + 2 * i]
  local event_id = event_ids[i]
  local stored = in_current[i] or in_previous[i] or stored_now[event_id]
  local added = stored or add(stream, envelope .. '}')
  if stored then
    ids[i] = stored
  elseif type(added) == 'table' and added.err then
    ids[i] = '!' .. added.err
  else
    ids[i] = added
    stored_now[event_id] = added
    new_markers[#new_markers + 1] = event_id
    new_markers[#new_markers + 1] = added
    if not touched[stream] then
      touched[stream] = true
      touched_order[#touched_order + 1] = stream
    end
    redis.call('PUBLISH', channel, envelope .. ',"stream_id":"' .. added .. '"}')
  end
end

if #touched_order > 0 then
  redis.call('HSET', current_markers, unpack(new_markers))
  redis.call('PEXPIRE', current_markers, 2 * window)
  redis.call('SET', order_key, format_id(last_ms, last_seq))
  if max_age > 0 then
    local oldest = string.format('%.0f', last_ms - max_age)
    for _, stream in ipairs(touched_order) do
      redis.call('XTRIM', stream, 'MINID', trim, oldest)
      redis.call('PEXPIRE', stream, ARGV[2])
    end
    redis.call('PEXPIRE', order_key, ARGV[2])
  end
end
return ids
