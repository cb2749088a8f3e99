-- Publishes a batch of events with retention, atomically (standalone layouts): per event XADD and PUBLISH,
-- per stream trimming by age and a sliding expiry.
-- KEYS[1..n]     each event's stream (the audience's; a stream may appear more than once)
-- KEYS[n+1..2n]  the key of each event's publish marker (see below), in the same order
-- KEYS[2n+1]     the order key: the last entry id given out in any stream
-- ARGV[1]     the most entries to keep
-- ARGV[2]     the longest age to keep, in milliseconds (0: no age limit, no expiry)
-- ARGV[3]     ~ (approximate trimming) or = (exact)
-- ARGV[1+3i], ARGV[2+3i], ARGV[3+3i]  event i's channel, its JSON envelope without its closing brace,
--             and its marker's field in the hash KEYS[n+i], or '' when KEYS[n+i] is a marker key of its own
-- ARGV[4+3n]  how long a publish marker lives, in milliseconds
-- ARGV[5+3n]  the expiry each stream trimmed by age gets, in milliseconds
-- ARGV[6+3n..] the positions (1..n) of the events whose stream is trimmed by age and gets that expiry:
--             the hub picks them (every stream of the batch, or with approximate trimming each stream
--             at most once a second; see age_trims.rs)
-- Returns, per event in order, its entry id, or '!' and the error that kept it
-- from being stored (such an event is not published either). The channel message
-- is the envelope with the id added as "stream_id".
--
-- Publishing is idempotent by event id: each stored event leaves a marker holding
-- its entry id, for ARGV[4+3n] ms. An event whose marker exists was stored by an
-- earlier call (a retry after a lost reply): it is neither added nor published
-- again, and its stored entry id is returned. A UUIDv7 event id's marker is a field
-- of the hash of its id's second (keys.rs): one HMGET and one HSET per hash and
-- batch, and each hash expires a window after its last write, so the markers'
-- memory stays level under a steady load (one second of it comes and goes at a
-- time). Other ids get a marker key each.
--
-- Every stream's ids come from one sequence, the order key's, so ids order events
-- across streams (a user's and the broadcasts) exactly as they were published.
-- One script per batch instead of one per event: the script call's own cost, the
-- clock and the order key are paid once, and each stream is trimmed and expired at most once.

local n = (#KEYS - 1) / 2
local order_key = KEYS[2 * n + 1]
local max_events, max_age, trim = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local marker_ttl, expiry = ARGV[4 + 3 * n], ARGV[5 + 3 * n]

-- The markers, grouped: keys of their own, and each hash's fields (hashes in first-seen order).
local keys_alone, keys_alone_at = {}, {}
local hashes, fields_of = {}, {}
for i = 1, n do
  local key, field = KEYS[n + i], ARGV[3 + 3 * i]
  if field == '' then
    keys_alone[#keys_alone + 1], keys_alone_at[#keys_alone_at + 1] = key, i
  else
    local group = fields_of[key]
    if not group then
      group = { fields = {}, at = {}, written = {} }
      fields_of[key], hashes[#hashes + 1] = group, key
    end
    group.fields[#group.fields + 1], group.at[#group.at + 1] = field, i
  end
end

-- Read, not written, before the XADDs: under maxmemory Redis refuses a script's first write, and then
-- nothing of the batch is stored; once one write went through, the rest do too.
local already = {}
if #keys_alone > 0 then
  local found = redis.call('MGET', unpack(keys_alone))
  for j, i in ipairs(keys_alone_at) do already[i] = found[j] end
end
for _, key in ipairs(hashes) do
  local group = fields_of[key]
  local found = redis.call('HMGET', key, unpack(group.fields))
  for j, i in ipairs(group.at) do already[i] = found[j] end
end
-- Markers written by this call, by field or key: the same event twice in a batch is stored once.
local stored_now = {}

local now = server_time_ms()
local last_ms, last_seq = -1, 0
local last = redis.call('GET', order_key)
if last then last_ms, last_seq = parse_id(last) end

-- last_ms as text, formatted once per millisecond rather than once per event (%.0f is slow).
local ms_text = nil
local function next_id()
  if now > last_ms then last_ms, last_seq, ms_text = now, 0, nil else last_seq = last_seq + 1 end
  ms_text = ms_text or string.format('%.0f', last_ms)
  if last_seq < 9007199254740992 then return ms_text .. '-' .. string.format('%d', last_seq) end
  return ms_text .. '-' .. string.format('%.0f', last_seq)
end

local function add(stream, entry)
  local added = redis.pcall('XADD', stream, 'MAXLEN', trim, max_events, next_id(), 'event', entry)
  if type(added) == 'table' and added.err and string.find(added.err, 'equal or smaller', 1, true) then
    -- Another publisher added an entry with an id of its own choosing, above ours: go above it.
    local top = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
    last_ms, last_seq = parse_id(top[1][1])
    ms_text = nil
    added = redis.pcall('XADD', stream, 'MAXLEN', trim, max_events, next_id(), 'event', entry)
  end
  return added
end

local ids = {}
local stored_any = false
for i = 1, n do
  local stream, channel, envelope, field = KEYS[i], ARGV[1 + 3 * i], ARGV[2 + 3 * i], ARGV[3 + 3 * i]
  -- An event id names one hash field (the hash follows from it); a marker key of its own names itself.
  local marker = field ~= '' and field or KEYS[n + i]
  local stored = already[i] or stored_now[marker]
  local added = stored or add(stream, envelope .. '}')
  if stored then
    ids[i] = stored
  elseif type(added) == 'table' and added.err then
    ids[i] = '!' .. added.err
  else
    ids[i] = added
    stored_now[marker] = added
    stored_any = true
    if field == '' then
      redis.call('SET', KEYS[n + i], added, 'PX', marker_ttl)
    else
      local written = fields_of[KEYS[n + i]].written
      written[#written + 1], written[#written + 2] = field, added
    end
    redis.call('PUBLISH', channel, envelope .. ',"stream_id":"' .. added .. '"}')
  end
end

for _, key in ipairs(hashes) do
  local written = fields_of[key].written
  if #written > 0 then
    redis.call('HSET', key, unpack(written))
    redis.call('PEXPIRE', key, marker_ttl)
  end
end

if stored_any then
  redis.call('SET', order_key, format_id(last_ms, last_seq))
  if max_age > 0 then redis.call('PEXPIRE', order_key, expiry) end
end
if max_age > 0 and #ARGV >= 6 + 3 * n then
  local oldest = string.format('%.0f', now - max_age)
  for j = 6 + 3 * n, #ARGV do
    local i = tonumber(ARGV[j])
    -- Not a stream whose XADD failed: it may not be a stream at all.
    if string.byte(ids[i], 1) ~= 33 then
      redis.call('XTRIM', KEYS[i], 'MINID', trim, oldest)
      redis.call('PEXPIRE', KEYS[i], expiry)
    end
  end
end
return ids
