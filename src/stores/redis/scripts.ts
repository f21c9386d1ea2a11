/**
 * The Lua scripts of the Redis store. Each touches one record's hash (one hash tag), so it runs
 * atomically on standalone Redis and on Redis Cluster alike. ioredis loads them once and runs them
 * with EVALSHA, falling back to EVAL on NOSCRIPT (`defineCommand`).
 *
 * Numbers are written with `%.17g` so doubles (the token bucket level) round-trip exactly between
 * Lua and JavaScript.
 *
 * Record fields are JSON (see codec.ts). The scripts that judge a record's lifecycle read `status`,
 * `revokedAt` and `expiresAt` with `cjson.decode`, so they see what `JSON.parse` sees, and they fail
 * closed: a status that is not exactly `active` or `suspended` (a hand-edited `"Revoked"`,
 * `"disabled"`, text that is not JSON, a missing field) counts as revoked, and a date that is
 * neither JSON `null` nor a finite number counts as already passed.
 */

/**
 * Lua helpers shared by the scripts below (prepended to each script's body).
 * - status_of(raw): 'active', 'suspended' or 'revoked' (anything else, decoded or not).
 * - date_of(raw): false for absent/null, the number for a finite JSON number, or true for a value
 *   that is neither (unreadable: the callers treat it as a date already passed).
 * - passed(date, now): a date from date_of is at or before `now` (an unreadable one always is).
 */
const LIFECYCLE_HELPERS = `
local function status_of(raw)
  if not raw then return 'revoked' end
  local ok, value = pcall(cjson.decode, raw)
  if ok and (value == 'active' or value == 'suspended') then return value end
  return 'revoked'
end
local function date_of(raw)
  if not raw then return false end
  local ok, value = pcall(cjson.decode, raw)
  if not ok then return true end
  if value == cjson.null then return false end
  if type(value) == 'number' and value == value and value ~= math.huge and value ~= -math.huge then return value end
  return true
end
local function passed(date, now)
  return date == true or (date ~= false and date <= now)
end
`;

/** Inserts the hash fields in ARGV unless the record exists. Returns 1, or 0 when taken. */
export const INSERT_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`;

/**
 * Patches an existing record: ARGV[1] = n, then n field/value pairs to set, then fields to delete.
 * Returns the whole hash after the patch; nil when the record does not exist; the number 0 (and
 * changes nothing) when the patch sets `status` to anything but `revoked` while the stored record
 * is revoked: its status is not `active`/`suspended`, or its `revokedAt` is at or before the
 * patch's `updatedAt` (a revoked key stays revoked; checked and written in this one step).
 */
export const UPDATE_SCRIPT = `${LIFECYCLE_HELPERS}
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = tonumber(ARGV[1])
local newStatus = nil
local updatedAt = nil
for i = 2, 2 * n, 2 do
  if ARGV[i] == 'status' then newStatus = ARGV[i + 1] end
  if ARGV[i] == 'updatedAt' then updatedAt = tonumber(ARGV[i + 1]) end
end
local function is_revoked_text(raw)
  local ok, value = pcall(cjson.decode, raw)
  return ok and value == 'revoked'
end
if newStatus and not is_revoked_text(newStatus) then
  local stored = redis.call('HMGET', KEYS[1], 'status', 'revokedAt')
  if status_of(stored[1]) == 'revoked' then return 0 end
  local revokedAt = date_of(stored[2])
  if revokedAt == true or (revokedAt ~= false and (updatedAt == nil or revokedAt <= updatedAt)) then return 0 end
end
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 2 + 2 * n)) end
return redis.call('HGETALL', KEYS[1])
`;

/**
 * The first step of a rotation, on the OLD record: claims it for retirement, atomically.
 * ARGV: revokedAt (epoch ms), updatedAt (epoch ms), status (JSON, or '' to leave it).
 *
 * Refuses (returns 0, changes nothing) when the record is already retired or retiring: its status
 * is not `active`/`suspended`, or its `revokedAt` is anything but null (a rotation already
 * happened). Of concurrent rotations of one key, exactly one gets past this point.
 * Otherwise sets revokedAt, updatedAt (and status) and returns
 * { previous revokedAt, previous updatedAt, previous status, HGETALL after the claim }, the
 * previous values raw ('' when the field was absent) so the claim can be undone exactly. The
 * snapshot holds maxUses and useCount at the moment of retirement: the uses the replacement
 * carries. Returns nil when the record does not exist.
 */
export const CLAIM_ROTATION_SCRIPT = `${LIFECYCLE_HELPERS}
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return false end
local before = redis.call('HMGET', key, 'revokedAt', 'updatedAt', 'status')
if status_of(before[3]) == 'revoked' or date_of(before[1]) ~= false then return 0 end
redis.call('HSET', key, 'revokedAt', ARGV[1], 'updatedAt', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', key, 'status', ARGV[3]) end
return { before[1] or '', before[2] or '', before[3] or '', redis.call('HGETALL', key) }
`;

/**
 * Undoes a claim whose replacement could not be inserted. ARGV: the claimed revokedAt, updatedAt
 * and status ('' = left alone), then the previous revokedAt, updatedAt and status ('' = absent).
 * Restores a field only while it still holds what the claim wrote: a change made in between (a
 * revocation, a rename) wins, so an undo never brings back a key someone revoked meanwhile.
 * Returns 1 when the claim was undone, 0 when the record had changed (or is gone).
 */
export const UNDO_ROTATION_SCRIPT = `
local key = KEYS[1]
local now = redis.call('HMGET', key, 'revokedAt', 'updatedAt', 'status')
if now[1] ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' and now[3] ~= ARGV[3] then return 0 end
local function restore(field, current, claimed, previous)
  if current ~= claimed then return end
  if previous == '' then redis.call('HDEL', key, field) else redis.call('HSET', key, field, previous) end
end
restore('revokedAt', now[1], ARGV[1], ARGV[4])
restore('updatedAt', now[2], ARGV[2], ARGV[5])
if ARGV[3] ~= '' then restore('status', now[3], ARGV[3], ARGV[6]) end
return 1
`;

/**
 * One atomic consume, in the order of the store contract, all or nothing:
 * 1. the caller's wall-clock deadline against the Redis server's clock (TIME): once it has passed
 *    the caller has answered 503, so nothing is applied (`deadline_exceeded`);
 * 2. the record's lifecycle as stored now, with the request's clock (the rules of
 *    `lifecycleRefusal` in src/policy/status.ts): a status other than active/suspended or a
 *    revokedAt at or before now is `api_key_revoked`, suspended is `api_key_disabled`, an
 *    expiresAt at or before now is `api_key_expired`;
 * 3. the limits, with the arithmetic of `decideConsume` in src/policy/limits.ts: maxUses, then the
 *    UTC-day quota, then the token bucket; the request is counted at max(now, last admitted time)
 *    so counters never move back in time.
 *
 * ARGV: now, maxUses, perSecond, burst, perDay, deadline (empty string = none).
 * Returns nil for an unknown record; { 0, refusal, useCount } for a deadline or lifecycle
 * refusal; else { admitted 0|1, refusal, useCount, dayCount, tokens }.
 *
 * TIME before the writes is safe: Redis 5+ replicates a script's effects, not the script (older
 * servers are asked to with `redis.replicate_commands()`).
 */
export const CONSUME_SCRIPT = `${LIFECYCLE_HELPERS}
local key = KEYS[1]
local state = redis.call('HMGET', key, 'useCount', 'c:day', 'c:dayCount', 'c:tokens', 'c:tokensAt', 'status', 'revokedAt', 'expiresAt')
if not state[1] then return false end
local requestNow = tonumber(ARGV[1])
local useCount = tonumber(state[1])
-- A count written by hand as nan, a negative or a fraction would let limits pass: fail closed.
if useCount == nil or useCount ~= useCount or useCount < 0 or useCount ~= math.floor(useCount) or useCount == math.huge then
  return redis.error_reply('ERR keygate: the record useCount is not a non-negative integer')
end
local deadline = tonumber(ARGV[6])
if deadline then
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  local serverNow = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  if serverNow >= deadline then return { 0, 'deadline_exceeded', useCount } end
end
local status = status_of(state[6])
if status == 'revoked' or passed(date_of(state[7]), requestNow) then return { 0, 'api_key_revoked', useCount } end
if status == 'suspended' then return { 0, 'api_key_disabled', useCount } end
if passed(date_of(state[8]), requestNow) then return { 0, 'api_key_expired', useCount } end
local maxUses = tonumber(ARGV[2])
local perSecond = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local perDay = tonumber(ARGV[5])
local day = tonumber(state[2]) or -1
local dayCount = tonumber(state[3]) or 0
local tokens = tonumber(state[4])
local tokensAt = tonumber(state[5]) or 0
local now = math.max(requestNow, tokensAt)
local today = math.floor(now / 86400000)
if day ~= today then dayCount = 0 end
local level = nil
if perSecond then
  local capacity = burst or perSecond
  if tokens == nil then
    level = capacity
  else
    level = math.min(capacity, tokens + (math.max(0, now - tokensAt) * perSecond) / 1000)
  end
end
local refusal = ''
if maxUses and useCount >= maxUses then
  refusal = 'usage_exhausted'
elseif perDay and dayCount >= perDay then
  refusal = 'quota_exceeded'
elseif level and level < 1 then
  refusal = 'rate_limited'
end
if refusal ~= '' then
  local levelText = ''
  if level then levelText = string.format('%.17g', level) end
  return { 0, refusal, useCount, dayCount, levelText }
end
useCount = useCount + 1
dayCount = dayCount + 1
local tokensField = 'null'
local levelText = ''
if level then
  levelText = string.format('%.17g', level - 1)
  tokensField = levelText
end
redis.call('HSET', key,
  'useCount', useCount,
  'lastUsedAt', ARGV[1],
  'c:day', today,
  'c:dayCount', dayCount,
  'c:tokens', tokensField,
  'c:tokensAt', string.format('%.17g', now))
return { 1, '', useCount, dayCount, levelText }
`;
