-- A replay's reads in one atomic step: locates an event id in one or two streams, reads what followed it,
-- and says what each stream dropped. (Two streams on one server; on a cluster, one call per stream.)
-- KEYS[1..n]  the streams, n = 1 or 2; with 2, the user's first: an id it holds is taken from there
-- ARGV[1]     the event id, hyphenated, lower case
-- ARGV[2]     how to look for it: 'time' (a UUIDv7: around its millisecond) or 'newest' (among the newest entries)
-- ARGV[3]     'time': the first entry id of the forward search (the id's millisecond); 'newest': the most entries
-- ARGV[4]     'time': the last entry id of the forward search (the id's millisecond plus the clock skew)
-- ARGV[5]     'time': the exclusive start ('(ms-0') and ARGV[6] the end of the backward search, both '' for none
-- ARGV[7]     where to read a stream when no stream of this call holds the id: an entry id, '-', or '' (no read)
-- ARGV[8]     the most entries to scan per stream when locating; ARGV[9] the most entries to read per stream
-- Returns 'undecided' when a search ran out of its budget (the caller locates step by step instead), else
-- 'ok' and per stream in KEYS order: { the id's entry id or false, the start read from ('(id', 'id', '-') or
-- false, what the stream says of its entries (`trim_info`, trim_info.lua) or false for a missing stream,
-- the entries read (as XRANGE returns them) }.
--
-- The work is bounded by the budgets, whatever the streams hold: the entries around the id's time (or the
-- newest ones) are scanned in pages that stop at the id, and at most ARGV[9] entries are read after it.

local id, how = ARGV[1], ARGV[2]
local budget, read_count = tonumber(ARGV[8]), tonumber(ARGV[9])
local hex = function(n) return string.rep('%x', n) end
local uuid_form = '^' .. hex(8) .. '%-' .. hex(4) .. '%-' .. hex(4) .. '%-' .. hex(4) .. '%-' .. hex(12) .. '$'

-- Whether `value` is the event id as the Rust side parses one: up to 128 bytes, ASCII whitespace around it,
-- the hyphenated form in either case.
local function is_id(value)
  if type(value) ~= 'string' or #value > 128 then return false end
  local trimmed = string.match(value, '^[ \t\n\f\r]*(.-)[ \t\n\f\r]*$')
  return #trimmed == 36 and string.find(trimmed, uuid_form) ~= nil and string.lower(trimmed) == id
end

-- Whether an entry's fields (flat: name, value, ...) hold the event: the envelope's event_id in the 'event'
-- field, else an 'event_id' field (entries written one field per envelope key).
local function holds(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'event' then
      local envelope = fields[i + 1]
      -- Without escapes, the id's text is in the envelope as is: most entries are passed over undecoded.
      if not string.find(envelope, '\\', 1, true) and not string.find(string.lower(envelope), id, 1, true) then
        return false
      end
      local ok, decoded = pcall(cjson.decode, envelope)
      return ok and type(decoded) == 'table' and is_id(decoded.event_id)
    end
  end
  for i = 1, #fields, 2 do
    if fields[i] == 'event_id' then return is_id(fields[i + 1]) end
  end
  return false
end

-- Scans `key` with XRANGE or XREVRANGE from `from` to `to`, at most `limit` entries, in growing pages.
-- Returns the entry id holding the event, false when not there, nil when the budget ran out first.
local function scan(key, command, from, to, limit, left)
  local page_size, seen = 16, 0
  while seen < limit do
    local count = math.min(page_size, limit - seen)
    if left.entries == 0 then return nil end
    count = math.min(count, left.entries)
    local page = redis.call(command, key, from, to, 'COUNT', count)
    left.entries = left.entries - #page
    seen = seen + #page
    for _, entry in ipairs(page) do
      if holds(entry[2]) then return entry[1] end
    end
    if #page < count then return false end
    from = '(' .. page[#page][1]
    page_size = math.min(page_size * 2, 512)
  end
  return false
end

-- Where `key` holds the event (false: nowhere searched), nil when the budget ran out first.
local function locate(key)
  local left = { entries = budget }
  if how == 'newest' then return scan(key, 'XREVRANGE', '+', '-', tonumber(ARGV[3]), left) end
  local found = scan(key, 'XRANGE', ARGV[3], ARGV[4], math.huge, left)
  if found ~= false or ARGV[5] == '' then return found end
  -- Backward: the Redis clock may lag the publisher's.
  return scan(key, 'XREVRANGE', ARGV[5], ARGV[6], math.huge, left)
end

local positions, holder = {}, nil
for i = 1, #KEYS do
  -- An id the user's stream holds is taken from there: the other stream need not be searched.
  if holder then
    positions[i] = false
  else
    local found = locate(KEYS[i])
    if found == nil then return { 'undecided' } end
    positions[i] = found
    if found then holder = i end
  end
end

local reply = { 'ok' }
for i = 1, #KEYS do
  local start
  if holder == i then
    start = '(' .. positions[i]
  elseif holder then
    -- Another publisher's XADD * can give an entry of this stream the very same id: it may have come after.
    start = positions[holder]
  elseif ARGV[7] ~= '' then
    start = ARGV[7]
  end
  local entries = {}
  if start then entries = redis.call('XRANGE', KEYS[i], start, '+', 'COUNT', read_count) end
  reply[#reply + 1] = { positions[i], start or false, trim_info(KEYS[i]), entries }
end
return reply
