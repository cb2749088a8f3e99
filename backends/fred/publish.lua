-- Publishes one event with retention, atomically: XADD, trim, sliding expiry, PUBLISH.
-- KEYS[1]  the audience's stream
-- ARGV[1]  the audience's channel
-- ARGV[2]  the JSON envelope without its closing brace
-- ARGV[3]  the most entries to keep (approximate trimming)
-- ARGV[4]  the longest age to keep, in milliseconds (0: no age limit, no expiry)
-- ARGV[5]  PUBLISH or SPUBLISH
-- Returns the new entry's id. The channel message is the envelope with that id
-- added as "stream_id", so subscribers know each live event's stream position.
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'event', ARGV[2] .. '}')
local max_age = tonumber(ARGV[4])
if max_age > 0 then
  local ms = tonumber(string.match(id, '^(%d+)-'))
  redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%.0f', ms - max_age))
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
redis.call(ARGV[5], ARGV[1], ARGV[2] .. ',"stream_id":"' .. id .. '"}')
return id
