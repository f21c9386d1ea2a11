/**
 * The Lua scripts of the Redis store. Each touches one record's hash (one hash tag), so it runs
 * atomically on standalone Redis and on Redis Cluster alike. ioredis loads them once and runs them
 * with EVALSHA, falling back to EVAL on NOSCRIPT (`defineCommand`).
 *
 * Numbers are written with `%.17g` so doubles (the token bucket level) round-trip exactly between
 * Lua and JavaScript.
 */

/** Inserts the hash fields in ARGV unless the record exists. Returns 1, or 0 when taken. */
export const INSERT_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`;

/**
 * Patches an existing record: ARGV[1] = n, then n field/value pairs to set, then fields to delete.
 * Returns the whole hash after the patch, or nil when the record does not exist.
 */
export const UPDATE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = tonumber(ARGV[1])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 2, 1 + 2 * n)) end
if #ARGV > 1 + 2 * n then redis.call('HDEL', KEYS[1], unpack(ARGV, 2 + 2 * n)) end
return redis.call('HGETALL', KEYS[1])
`;

/**
 * One atomic consume, the same arithmetic as `decideConsume` in src/policy/limits.ts:
 * maxUses, then the UTC-day quota, then the token bucket; all or nothing; the request is counted at
 * max(now, last admitted time) so counters never move back in time.
 *
 * ARGV: now, maxUses, perSecond, burst, perDay (empty string = none).
 * Returns nil for an unknown record, else { admitted 0|1, refusal, useCount, dayCount, tokens }.
 */
export const CONSUME_SCRIPT = `
local key = KEYS[1]
local state = redis.call('HMGET', key, 'useCount', 'c:day', 'c:dayCount', 'c:tokens', 'c:tokensAt')
if not state[1] then return false end
local requestNow = tonumber(ARGV[1])
local maxUses = tonumber(ARGV[2])
local perSecond = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local perDay = tonumber(ARGV[5])
local useCount = tonumber(state[1])
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
