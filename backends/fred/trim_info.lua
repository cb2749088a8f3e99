-- A helper of the replay scripts (concatenated after prelude.lua in scripts.rs).

-- What XINFO STREAM says of a stream's entries: { length, entries-added, first entry id, last generated id,
-- last entry id } (false where it says nothing); false for a missing stream.
local function trim_info(key)
  local reply = redis.pcall('XINFO', 'STREAM', key)
  if type(reply) == 'table' and reply.err then
    if string.find(reply.err, 'no such key', 1, true) then return false end
    error(reply)
  end
  local info = { false, false, false, false, false }
  for i = 1, #reply, 2 do
    local name, value = reply[i], reply[i + 1]
    if name == 'length' then info[1] = value
    elseif name == 'entries-added' then info[2] = value
    elseif name == 'first-entry' then info[3] = type(value) == 'table' and value[1] or false
    elseif name == 'last-generated-id' then info[4] = value
    elseif name == 'last-entry' then info[5] = type(value) == 'table' and value[1] or false
    end
  end
  return info
end
