/**
 * The Lua scripts of the Redis store. ioredis loads them once and runs them with EVALSHA, falling
 * back to EVAL on NOSCRIPT (`defineCommand`).
 *
 * Three families:
 * - Scripts on one record's hash (one hash tag, so one slot): consume (with the record's leases
 *   set, under the same hash tag), reserve and settle of leased mode (with the record's holds
 *   hash, under the same hash tag), update, the claim and undo of a rotation and the removal of a
 *   purged record on a Cluster (PURGE_RECORD_SCRIPT), and the compare-and-delete of one index
 *   entry (DELETE_IF_SCRIPT, on the index key alone). Atomic on standalone Redis and on Redis
 *   Cluster alike. UPDATE_SCRIPT also takes the deleted set (below) as a second key, given only on
 *   standalone Redis.
 * - Scripts that also write the keyPrefix index, the list sorted sets or the deleted set
 *   (INSERT_RECORD_SCRIPT, ROTATE_SCRIPT, PURGE_SCRIPT): several slots, so for standalone Redis
 *   only, where every key can be declared in one script. They check everything before their first
 *   write, so a refusal changes nothing: Redis does not roll a script back when a command fails
 *   half-way.
 * - Scripts of the optional capabilities, each on the keys of one hash tag: the audit trail's
 *   (APPEND_AUDIT_SCRIPT, LIST_AUDIT_SCRIPT, all under `{audit}`), one API key's usage
 *   (ADD_USAGE_SCRIPT, which also checks that the record exists, and READ_USAGE_SCRIPT, under the
 *   record's `{<id>}`) and one alert claim
 *   (CLAIM_ALERT_SCRIPT, a single key). Atomic on a Cluster too. They read no clock: every instant
 *   is the caller's. The purge scripts also remove a record's usage (USAGE_PURGE_HELPERS), which
 *   lives in the record's slot. Scripts that touch a variable number of day hashes are given them as
 *   KEYS, read by the caller from the days set just before, and answer 'changed' (writing nothing)
 *   when that set no longer holds exactly those days; no script reaches a key it was not given.
 *
 * The deleted set (`ns deleted`) holds one member per deleted record, `<deletedAt>:<id>` with the
 * instant offset and zero-padded as in the list sets (DELETED_MEMBER_HELPERS), all at score 0: it
 * sorts by deletedAt, so `purge` reads the records deleted before an instant with one
 * ZRANGEBYLEX, and walks it with an exact cursor (the last member) whatever is removed meanwhile.
 *
 * Numbers are written with `%.17g` so doubles (the token bucket level) round-trip exactly between
 * Lua and JavaScript.
 *
 * Record fields are JSON (see codec.ts). The scripts that judge a record's lifecycle read `status`,
 * `revokedAt` and `expiresAt` with `cjson.decode`, so they see what `JSON.parse` sees, and they fail
 * closed: a status that is not exactly `active` or `suspended` (a hand-edited `"Revoked"`,
 * `"disabled"`, text that is not JSON, a missing field) counts as revoked, and a date that is
 * neither JSON `null` nor a finite number counts as already passed.
 *
 * The consume, reserve and settle scripts fail closed on counters they cannot read, too: a
 * `useCount`, `c:tokens`, `c:tokensAt` or a window counter (`c:minute`, `c:minuteCount`, …
 * `c:month`, `c:monthCount`) written by hand as something other than a number it could hold is an
 * error reply (a 503), never an empty state (a full bucket, a new window). They read a key with
 * the same Lua (KEY_STATE_LUA, COUNTERS_LUA; consume and reserve also ADMISSION_GATE_LUA).
 *
 * The window part of those scripts is generated from `QUOTA_WINDOWS` (src/policy/windows.ts) when
 * this module loads (see WINDOW_LUA): a window added there needs no edit here.
 *
 * Concurrency leases (`maxConcurrent`) live beside the record, in a sorted set in the same hash
 * slot (`<record key>:leases`, member = lease id, score = the instant it lapses): the consume script
 * reads and writes it only for a request with a claim, and fails closed (an error reply, nothing
 * counted) when that key holds something other than a sorted set.
 *
 * Holds of leased mode (reservations not yet settled) live beside the record too, in a hash in
 * the same slot (`<record key>:holds`, field = lease, value = `until,units,tokens,at`, see
 * HOLDS_LUA): RESERVE_SCRIPT and SETTLE_SCRIPT read and write it with the counters in one step, and
 * fail closed when it holds something else or a hold cannot be read, since a hold read as none
 * would let the bucket refill past the tokens it holds. The purge scripts remove it with the record.
 *
 * UPDATE_SCRIPT, ROTATE_SCRIPT and the purge scripts (PURGE_SCRIPT, PURGE_RECORD_SCRIPT) PUBLISH
 * the changed id on the invalidation channel themselves, after their checks and before their
 * first write. The message is then part of the same atomic
 * step: it is never lost to a failure between the write and a separate PUBLISH, and no command
 * runs before the script ends, so whatever a subscriber reads on hearing it includes the change.
 * Publishing first also means a server that refuses the PUBLISH (an ACL without the PUBLISH
 * command or the channel) refuses before anything is written: such a user cannot update, revoke,
 * rotate, delete or purge keys at all.
 */
import { type CounterState, initialCounters } from '../../policy/limits.js';
import { QUOTA_WINDOWS } from '../../policy/windows.js';
import { USAGE_COUNT_FIELDS } from '../../usage/cells.js';

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

/**
 * Lua helpers for `deletedAt` and the deleted set (used with LIFECYCLE_HELPERS).
 * - instant_of(raw): date_of, but a number is also required to be an instant a JavaScript Date
 *   holds (within ±8.64e15 ms, else true: unreadable), and is truncated toward zero to whole
 *   milliseconds as a Date truncates it; so the instant judged here is the one the decoder reads.
 * - deleted_member(at, id): the record's member in the deleted set, as `deletedMember` writes it
 *   in redis-store.ts (`at` offset by 8.64e15, zero-padded to 17 digits, then `:` and the id).
 * - zset_unwritable(key): an error reply when `key` holds something other than a sorted set (a
 *   ZADD or ZREM on it would fail after earlier writes), else nil.
 */
const DELETED_MEMBER_HELPERS = `
local function instant_of(raw)
  local date = date_of(raw)
  if type(date) ~= 'number' then return date end
  if date < -8640000000000000 or date > 8640000000000000 then return true end
  if date < 0 then return math.ceil(date) end
  return math.floor(date)
end
local function deleted_member(at, id)
  return string.format('%017.0f', at + 8640000000000000) .. ':' .. id
end
local function zset_unwritable(key)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('WRONGTYPE keygate: the key ' .. key .. ' is not a sorted set')
  end
  return nil
end
`;

/**
 * Lua helpers for the scripts that write a whole new record with its index and list entries
 * (standalone Redis only). KEYS[first_list..] are the list sorted sets.
 * - taken(record, index): 'id' or 'keyPrefix' when that one is in use, else false.
 * - lists_unwritable(first_list): an error reply when a list key holds something other than a
 *   sorted set (its ZADD would fail after earlier writes), else nil.
 * - count_of(raw, nullable): a stored count as a number; false for JSON null when `nullable`;
 *   nil when it is not a non-negative safe integer (the record decoder's rule).
 * - write_record(record, index, first_list, id, member, first_pair): SET the index, ZADD every
 *   list, HSET the record's pairs ARGV[first_pair..].
 */
const RECORD_WRITE_HELPERS = `
local function taken(record, index)
  if redis.call('EXISTS', record) == 1 then return 'id' end
  if redis.call('EXISTS', index) == 1 then return 'keyPrefix' end
  return false
end
local function lists_unwritable(first_list)
  for i = first_list, #KEYS do
    local kind = redis.call('TYPE', KEYS[i])['ok']
    if kind ~= 'none' and kind ~= 'zset' then
      return redis.error_reply('WRONGTYPE keygate: the list key ' .. KEYS[i] .. ' is not a sorted set')
    end
  end
  return nil
end
local function count_of(raw, nullable)
  if not raw then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if not ok then return nil end
  if nullable and value == cjson.null then return false end
  if type(value) == 'number' and value >= 0 and value <= 9007199254740991 and value == math.floor(value) then return value end
  return nil
end
local function write_record(record, index, first_list, id, member, first_pair)
  redis.call('SET', index, id)
  for i = first_list, #KEYS do redis.call('ZADD', KEYS[i], 0, member) end
  redis.call('HSET', record, unpack(ARGV, first_pair))
end
`;

/**
 * Inserts one record's hash only (Cluster, where the index and lists live in other slots and are
 * written before it, see RedisStore): the hash fields in ARGV unless the record exists.
 * Returns 1, or 0 when the id is taken.
 */
export const INSERT_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
`;

/**
 * A whole insert in one atomic step (standalone Redis): the record's hash, its keyPrefix index, its
 * list entries and, for a record inserted already deleted (`deletedAt` set), its member in the
 * deleted set; or nothing.
 * KEYS: the record, the keyPrefix index, the deleted set, then 1 to 3 list sorted sets.
 * ARGV: id, list member, deleted-set member ('' for a record not deleted), then the record's
 * field/value pairs.
 * Returns { 'inserted' }, or { 'taken', 'id' | 'keyPrefix' } having changed nothing.
 */
export const INSERT_RECORD_SCRIPT = `${RECORD_WRITE_HELPERS}
local field = taken(KEYS[1], KEYS[2])
if field then return { 'taken', field } end
local unwritable = lists_unwritable(4)
if unwritable then return unwritable end
if ARGV[3] ~= '' then
  local kind = redis.call('TYPE', KEYS[3])['ok']
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('WRONGTYPE keygate: the deleted set ' .. KEYS[3] .. ' is not a sorted set')
  end
end
write_record(KEYS[1], KEYS[2], 4, ARGV[1], ARGV[2], 4)
if ARGV[3] ~= '' then redis.call('ZADD', KEYS[3], 0, ARGV[3]) end
return { 'inserted' }
`;

/**
 * A whole rotation in one atomic step (standalone Redis): retires the old record and inserts its
 * replacement with the old record's settings AS STORED NOW and the uses the old key has left, or
 * changes nothing.
 * KEYS: the old record, the replacement's record, its keyPrefix index, then 1 to 3 list sorted sets.
 * ARGV:
 *   1-3  the old record's new revokedAt (epoch ms), updatedAt (epoch ms) and status (JSON, '' to
 *        leave it);
 *   4-5  the invalidation channel, the old id (the message);
 *   6-7  the replacement's id, its list member;
 *   8-9  the ownerId and tenantId (JSON text, '' for none) the list KEYS were declared for;
 *   10   n, then ARGV[11 .. 10 + n]: the fields a caller sets (`CREATE_FIELDS` of the record
 *        schema), copied from the old hash;
 *   then the replacement's own field/value pairs (identity, keygate's fields, empty counters).
 *
 * The caller read the old record before asking (it hashed a secret in between), so an update made
 * since (a suspension, narrowed scopes or IPs) would be lost if the replacement carried what the
 * caller read. The settings are therefore copied here, from the old hash as this script reads it
 * (the rule of `replacementFor` in the store toolkit): a field absent on the old record is absent
 * on the replacement; `maxUses` becomes the uses left. The field names come from the schema, so a
 * new record field needs no change here.
 *
 * Refusals, in this order, each before any write:
 * - nil when the old record does not exist;
 * - { 'retired' } when it is revoked or already rotated (the rule of CLAIM_ROTATION_SCRIPT);
 * - { 'taken', 'id' | 'keyPrefix' } when the replacement's id or keyPrefix is in use;
 * - { 'invalid', field, problem } when a field of the old record is not JSON, its maxUses or
 *   useCount is not a count, or its ownerId or tenantId is not a string;
 * - { 'lists', ownerId, tenantId } (JSON text, '' for none) when the old record's owner or tenant
 *   is not the one the list KEYS were declared for: the caller runs it again with those lists.
 * Otherwise publishes the old id, writes the old record's revokedAt, updatedAt (and status),
 * writes the replacement and returns { 'rotated', HGETALL of the old record, HGETALL of the
 * replacement }.
 */
export const ROTATE_SCRIPT = `${LIFECYCLE_HELPERS}${RECORD_WRITE_HELPERS}
local old, replacement, index = KEYS[1], KEYS[2], KEYS[3]
local stored = redis.call('HGETALL', old)
if #stored == 0 then return false end
local before = {}
for i = 1, #stored, 2 do before[stored[i]] = stored[i + 1] end
if status_of(before['status']) == 'revoked' or date_of(before['revokedAt']) ~= false then return { 'retired' } end
local field = taken(replacement, index)
if field then return { 'taken', field } end
-- The old record is returned for decoding once written, and its settings are copied: refuse now
-- what could not be decoded then.
for i = 1, #stored, 2 do
  if string.sub(stored[i], 1, 2) ~= 'c:' and not pcall(cjson.decode, stored[i + 1]) then
    return { 'invalid', stored[i], 'is not valid JSON' }
  end
end
local maxUses = count_of(before['maxUses'], true)
if maxUses == nil then return { 'invalid', 'maxUses', 'is not a non-negative integer or null' } end
local useCount = count_of(before['useCount'], false)
if useCount == nil then return { 'invalid', 'useCount', 'is not a non-negative integer' } end
-- The lists the replacement joins are its owner's and tenant's, which are the old record's.
local function text_of(raw)
  if not raw then return false end
  local value = cjson.decode(raw)
  if value == cjson.null then return false end
  if type(value) == 'string' then return value end
  return nil
end
local owner, tenant = text_of(before['ownerId']), text_of(before['tenantId'])
if owner == nil then return { 'invalid', 'ownerId', 'is not a string' } end
if tenant == nil then return { 'invalid', 'tenantId', 'is not a string' } end
local function declared(arg)
  if arg == '' then return false end
  return cjson.decode(arg)
end
if owner ~= declared(ARGV[8]) or tenant ~= declared(ARGV[9]) then
  return { 'lists', owner and cjson.encode(owner) or '', tenant and cjson.encode(tenant) or '' }
end
local unwritable = lists_unwritable(4)
if unwritable then return unwritable end
local remaining = 'null'
if maxUses then remaining = string.format('%.17g', math.max(0, maxUses - useCount)) end
local copied = tonumber(ARGV[10])
redis.call('PUBLISH', ARGV[4], ARGV[5])
redis.call('HSET', old, 'revokedAt', ARGV[1], 'updatedAt', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', old, 'status', ARGV[3]) end
write_record(replacement, index, 4, ARGV[6], ARGV[7], 11 + copied)
for i = 11, 10 + copied do
  local value = before[ARGV[i]]
  if value then redis.call('HSET', replacement, ARGV[i], value) else redis.call('HDEL', replacement, ARGV[i]) end
end
redis.call('HSET', replacement, 'maxUses', remaining)
return { 'rotated', redis.call('HGETALL', old), redis.call('HGETALL', replacement) }
`;

/**
 * Patches an existing record, the checks and the write in one step.
 * KEYS: the record, then (standalone Redis only) the deleted set. On a Cluster the deleted set is
 * in another slot: the store writes its member in steps of its own (see RedisStore).
 * ARGV: the invalidation channel, the record's id (the message), n, then n field/value pairs to
 * set, then fields to delete.
 *
 * - Returns nil when the record does not exist.
 * - A revoked key stays revoked: returns the number 0 and changes nothing when the patch sets
 *   `status` to anything but `revoked` while the stored record is revoked (its status is not
 *   `active`/`suspended`, or its `revokedAt` is at or before the patch's `updatedAt`).
 * - A revocation is stamped here: when the patch sets `status` to `revoked`, `revokedAt` becomes
 *   the earlier of the stored one and the patch's `updatedAt`, whatever `revokedAt` the patch
 *   carries (the rule of `revokedAtAfterUpdate` in the store toolkit), so a key already revoked
 *   keeps its instant and a key in a rotation grace period stops now. A stored `revokedAt` that
 *   cannot be read is replaced by `updatedAt`.
 * - A key is deleted once: when the patch sets `deletedAt` and the stored record has one, the
 *   stored one stays (the rule of `deletedAtAfterUpdate` in the store toolkit), so deleting again
 *   never postpones a purge. A stored `deletedAt` that cannot be read (edited by hand) is replaced
 *   by the patch's. When the patch sets `deletedAt` and the deleted set is given, the record's
 *   member for the `deletedAt` it keeps is added to it (again, when it is there already). An error
 *   reply, before any write, when the patch's `deletedAt` is not an instant or the deleted set is
 *   not a sorted set.
 * Otherwise publishes the id and returns the whole hash after the patch.
 */
export const UPDATE_SCRIPT = `${LIFECYCLE_HELPERS}${DELETED_MEMBER_HELPERS}
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n = tonumber(ARGV[3])
local last_pair = 3 + 2 * n
local newStatus = nil
local updatedAtText = nil
local deletedAtText = nil
for i = 4, last_pair, 2 do
  if ARGV[i] == 'status' then newStatus = ARGV[i + 1] end
  if ARGV[i] == 'updatedAt' then updatedAtText = ARGV[i + 1] end
  if ARGV[i] == 'deletedAt' then deletedAtText = ARGV[i + 1] end
end
local updatedAt = tonumber(updatedAtText)
local function is_revoked_text(raw)
  local ok, value = pcall(cjson.decode, raw)
  return ok and value == 'revoked'
end
local stored = redis.call('HMGET', KEYS[1], 'status', 'revokedAt', 'deletedAt')
local storedRevokedAt = date_of(stored[2])
local revoking = newStatus ~= nil and is_revoked_text(newStatus)
if newStatus and not revoking then
  if status_of(stored[1]) == 'revoked' then return 0 end
  if storedRevokedAt == true or (storedRevokedAt ~= false and (updatedAt == nil or storedRevokedAt <= updatedAt)) then return 0 end
end
local stamp = nil
if revoking then
  if updatedAt == nil then return redis.error_reply('ERR keygate: a patch that revokes needs updatedAt') end
  if type(storedRevokedAt) == 'number' and storedRevokedAt <= updatedAt then stamp = stored[2] else stamp = updatedAtText end
end
-- Deleted once: the instant the record keeps, and the stored text to write back over the patch's.
local deletedAt, keptDeletedAt = nil, nil
if deletedAtText then
  local storedDeletedAt = instant_of(stored[3])
  if type(storedDeletedAt) == 'number' then
    deletedAt, keptDeletedAt = storedDeletedAt, stored[3]
  else
    deletedAt = instant_of(deletedAtText)
    if type(deletedAt) ~= 'number' then return redis.error_reply('ERR keygate: the patch deletedAt is not an instant') end
  end
  if KEYS[2] then
    local unwritable = zset_unwritable(KEYS[2])
    if unwritable then return unwritable end
  end
end
redis.call('PUBLISH', ARGV[1], ARGV[2])
if n > 0 then redis.call('HSET', KEYS[1], unpack(ARGV, 4, last_pair)) end
if #ARGV > last_pair then redis.call('HDEL', KEYS[1], unpack(ARGV, last_pair + 1)) end
if stamp then redis.call('HSET', KEYS[1], 'revokedAt', stamp) end
if keptDeletedAt then redis.call('HSET', KEYS[1], 'deletedAt', keptDeletedAt) end
if deletedAt and KEYS[2] then redis.call('ZADD', KEYS[2], 0, deleted_member(deletedAt, ARGV[2])) end
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
 * Lua helpers for a record's usage analytics (capability `usage`), which live in the record's hash
 * slot (`<ns>usage:{<id>}:days` and one hash per day, see RedisStore) so that a purge removes them
 * in the same step as the record.
 * - usage_changed(days, first_day_arg, first_day_key): true when the days set `days` no longer
 *   holds exactly the days ARGV[first_day_arg ..] the caller read and declared day hashes for
 *   (KEYS[first_day_key ..], one per day, in the same order): a day was added since (a flush at the
 *   turn of a day), so the caller reads the set again and asks again.
 * - delete_usage(days, first_day_key, count): DELs the days set and the `count` declared day hashes.
 */
const USAGE_PURGE_HELPERS = `
local function usage_changed(days, first_day_arg, first_day_key)
  local stored = redis.call('ZRANGE', days, 0, -1)
  local declared = #ARGV - first_day_arg + 1
  if #stored ~= declared then return true end
  for i = 1, declared do
    if stored[i] ~= ARGV[first_day_arg + i - 1] then return true end
  end
  return false
end
local function delete_usage(days, first_day_key, count)
  redis.call('DEL', days)
  for i = first_day_key, first_day_key + count - 1 do redis.call('DEL', KEYS[i]) end
end
`;

/**
 * Removes one deleted record for good, in one atomic step (standalone Redis): the record, its
 * leases, its holds, its usage analytics, its keyPrefix index entry, its list entries and its
 * members in the deleted set, or nothing. The record is judged here, as stored now: whatever a reader or a writer
 * did since the caller read it, a record is removed only when its `deletedAt` is before
 * `deletedBefore`.
 * KEYS: the record, its leases, its holds, the deleted set, its usage days set, then, when the
 * caller read the record, its keyPrefix index and its 1 to 3 list sorted sets, then one usage day hash per day the
 * caller read in the days set.
 * ARGV: deletedBefore (epoch ms), the invalidation channel, the id, the deleted-set member the
 * caller is visiting, the number of list keys ('0' when the caller found no record), then (when it
 * read the record) the raw hash values of keyPrefix, ownerId, tenantId and createdAt the caller
 * read ('' for an absent field) and declared KEYS for, and the list member; then the days it read
 * in the usage days set, in order.
 *
 * - 'gone': the record does not exist (another purge removed it); the visited member is removed.
 * - 'kept': the record is not deleted (a member added by hand: removed, nothing else changes), its
 *   `deletedAt` cannot be read (it stays, member and all, for someone to look at: never removed on
 *   a guess), or it was deleted at or after `deletedBefore`. A visited member that is not the
 *   record's own (`deleted_member` of its `deletedAt`) is replaced by the record's own.
 * - 'changed': the record is to be removed, but its keyPrefix, owner, tenant or createdAt is not
 *   what the caller declared KEYS for (edited by hand, or an id used again), or its usage days
 *   are not the ones it declared (a flush added a day): nothing is written, and the caller reads
 *   the record and its days and asks again.
 * - 'purged': publishes the id, then DELs the record, its leases, its holds and its usage (days
 *   set and day hashes), the index entry if it still names this id, the list members and the record's
 *   deleted-set members.
 * An error reply, before any write, when the index is not a string, a list key not a sorted set or
 * the usage days set not a sorted set.
 */
export const PURGE_SCRIPT = `${LIFECYCLE_HELPERS}${DELETED_MEMBER_HELPERS}${USAGE_PURGE_HELPERS}
local record, leases, holds, deleted, days = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local deletedBefore = tonumber(ARGV[1])
local id, visited = ARGV[3], ARGV[4]
local lists = tonumber(ARGV[5])
if redis.call('EXISTS', record) == 0 then
  redis.call('ZREM', deleted, visited)
  return 'gone'
end
local stored = redis.call('HMGET', record, 'deletedAt', 'keyPrefix', 'ownerId', 'tenantId', 'createdAt')
local deletedAt = instant_of(stored[1])
if deletedAt == true then return 'kept' end
if deletedAt == false then
  redis.call('ZREM', deleted, visited)
  return 'kept'
end
local own = deleted_member(deletedAt, id)
if own ~= visited then
  redis.call('ZREM', deleted, visited)
  redis.call('ZADD', deleted, 0, own)
end
if not (deletedAt < deletedBefore) then return 'kept' end
if lists == 0 then return 'changed' end
for i = 2, 5 do
  if (stored[i] or '') ~= ARGV[4 + i] then return 'changed' end
end
local index, first_list, last_list = KEYS[6], 7, 6 + lists
local first_day_key = last_list + 1
if usage_changed(days, 11, first_day_key) then return 'changed' end
local kind = redis.call('TYPE', index)['ok']
if kind ~= 'none' and kind ~= 'string' then
  return redis.error_reply('WRONGTYPE keygate: the index key ' .. index .. ' is not a string')
end
for i = first_list, last_list do
  local unwritable = zset_unwritable(KEYS[i])
  if unwritable then return unwritable end
end
redis.call('PUBLISH', ARGV[2], id)
redis.call('DEL', record, leases, holds)
delete_usage(days, first_day_key, #KEYS - first_day_key + 1)
if redis.call('GET', index) == id then redis.call('DEL', index) end
for i = first_list, last_list do redis.call('ZREM', KEYS[i], ARGV[10]) end
redis.call('ZREM', deleted, own)
return 'purged'
`;

/**
 * The last step of a purge on a Cluster, on the record's slot: removes the record, its leases, its
 * holds and its usage analytics when, as stored now, its `deletedAt` is before `deletedBefore` and its
 * keyPrefix is the one whose index entry the caller removed. The index and list entries are gone
 * by then (see RedisStore), so no index entry ever names a record that no longer exists.
 * KEYS: the record, its leases, its holds, its usage days set, then one usage day hash per day the
 * caller read in that set. ARGV: deletedBefore (epoch ms), the invalidation channel, the id, the
 * keyPrefix as the caller read it (raw hash value), then the days it read, in order.
 * Returns 'purged' (having published the id, then deleted every key), 'gone' (no such record),
 * 'kept' (not deleted, deleted at or after deletedBefore, unreadable, or another keyPrefix), or
 * 'changed' (the usage days are not the ones declared: nothing written, read them and ask again).
 */
export const PURGE_RECORD_SCRIPT = `${LIFECYCLE_HELPERS}${DELETED_MEMBER_HELPERS}${USAGE_PURGE_HELPERS}
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end
local stored = redis.call('HMGET', KEYS[1], 'deletedAt', 'keyPrefix')
local deletedAt = instant_of(stored[1])
if type(deletedAt) ~= 'number' or not (deletedAt < tonumber(ARGV[1])) or stored[2] ~= ARGV[4] then return 'kept' end
if usage_changed(KEYS[4], 5, 5) then return 'changed' end
redis.call('PUBLISH', ARGV[2], ARGV[3])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
delete_usage(KEYS[4], 5, #KEYS - 4)
return 'purged'
`;

/**
 * Deletes a key holding a string when it holds exactly ARGV[1] (an index entry that still names
 * this id), in one step. Returns 1 when it deleted it, else 0.
 */
export const DELETE_IF_SCRIPT = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`;

/**
 * Appends one audit entry (capability `audit`), in one step: the entry and its member in every
 * index, or nothing. Every key is under the `{audit}` hash tag, so one slot on a Cluster too.
 * KEYS: the entry's own key, then the indexes it joins (the global one, and those of its keyId,
 * tenantId, actor id and environment when it has them): sorted sets of `<at>:<id>` members at score 0.
 * ARGV: the entry as JSON, its member.
 * Returns 1, or 0 (having changed nothing) when an entry with this id exists; an error reply,
 * before any write, when an index key holds something other than a sorted set.
 */
export const APPEND_AUDIT_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
for i = 2, #KEYS do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= 'zset' then
    return redis.error_reply('WRONGTYPE keygate: the audit index ' .. KEYS[i] .. ' is not a sorted set')
  end
end
redis.call('SET', KEYS[1], ARGV[1])
for i = 2, #KEYS do redis.call('ZADD', KEYS[i], 0, ARGV[2]) end
return 1
`;

/** How many index members one run of LIST_AUDIT_SCRIPT reads with one ZRANGEBYLEX. */
const AUDIT_CHUNK = 256;

/**
 * One page of the audit trail's keyset walk: the members of `<at>:<id>` (in (at, id) order) that
 * are in EVERY index of KEYS (one per filter of the query: its keyId, tenantId, actor id and
 * environment; the global index alone when there is none), within a ZRANGEBYLEX range.
 * ARGV: the range's start and end (ZRANGEBYLEX bounds), how many matches are wanted, and how many
 * members this run may read at most (so that a query whose filters rarely meet never blocks Redis
 * for long: the caller runs it again from the cursor).
 * The index walked is the one with the fewest members in the range (ZLEXCOUNT, O(log n) each);
 * a member is kept when every other index holds it (ZSCORE). Returns { state, cursor, matches }:
 * state 'end' when the range has no more members, 'more' otherwise; cursor the last member read
 * ('' for none), from which the next run starts (exclusive).
 */
export const LIST_AUDIT_SCRIPT = `
local start, stop = ARGV[1], ARGV[2]
local wanted, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local primary = 1
if #KEYS > 1 then
  local fewest = nil
  for i = 1, #KEYS do
    local count = redis.call('ZLEXCOUNT', KEYS[i], start, stop)
    if fewest == nil or count < fewest then primary, fewest = i, count end
  end
  if fewest == 0 then return { 'end', '', {} } end
end
local matches, cursor, read = {}, '', 0
while read < budget do
  local chunk = math.min(${AUDIT_CHUNK}, budget - read)
  local members = redis.call('ZRANGEBYLEX', KEYS[primary], start, stop, 'LIMIT', 0, chunk)
  for _, member in ipairs(members) do
    read = read + 1
    cursor = member
    local kept = true
    for i = 1, #KEYS do
      if i ~= primary and not redis.call('ZSCORE', KEYS[i], member) then
        kept = false
        break
      end
    end
    if kept then
      matches[#matches + 1] = member
      if #matches >= wanted then return { 'more', cursor, matches } end
    end
  end
  if #members < chunk then return { 'end', cursor, matches } end
  start = '(' .. cursor
end
return { 'more', cursor, matches }
`;

/** How many numbers a stored usage cell holds: the counts of `USAGE_COUNT_FIELDS`, then the max. */
const USAGE_NUMBERS = USAGE_COUNT_FIELDS.length + 1;

/**
 * Adds one key's cells of one usage batch (capability `usage`), in one step and once per batch id:
 * all the key's cells, or none. Every key is under the record's hash tag (`{<keyId>}`), so one
 * slot on a Cluster too.
 * KEYS: the record's hash, the key's usage days set (day → day), its applied-batch set (batch id →
 * the instant, on the caller's clock, until which it is remembered), then one day hash per day the
 * cells name.
 * ARGV: the batch id; the batch's `now` and `now + RETAIN_BATCH_IDS_MS` (epoch ms, the caller's
 * clock); the applied-batch set's expiry in ms; then, per cell, the position in KEYS of its day
 * hash, its day, its field (the JSON of `[route, outcome]`) and its ${USAGE_NUMBERS} numbers (the counts of
 * `USAGE_COUNT_FIELDS` in order, then maxResponseMicros), each a non-negative safe integer as text.
 *
 * A day hash maps a cell's field to its numbers as `n1,n2,…` text: counts added, the last one the
 * larger of the stored and the given. Returns 1 when applied, 0 when this batch id was applied to
 * this key already (nothing written: a retried flush adds nothing), 2 when the record does not
 * exist (never inserted, or purged): its cells are dropped, and only the batch id is recorded, so
 * that a flush racing the record's purge leaves no cell behind whichever runs first (the purge
 * script removes the record and its usage in one step too). An error reply, before any write, when
 * a key holds another type or a stored cell is not ${USAGE_NUMBERS} non-negative integers.
 *
 * Lua numbers are doubles, exact for the integers below 2^53 that cells hold (a sum reaching 2^53
 * microseconds is some 285 years of response time); %.17g writes them back exactly.
 * Applied batch ids are forgotten by the callers' clocks (a member whose instant has passed for
 * the batch being applied is removed), and the whole set expires, on Redis's clock, a margin after
 * the last batch applied to the key: a key that gets no more traffic keeps nothing.
 */
export const ADD_USAGE_SCRIPT = `
local record, days, batches = KEYS[1], KEYS[2], KEYS[3]
local function check(key, expected)
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= expected then
    return redis.error_reply('WRONGTYPE keygate: the usage key ' .. key .. ' is not a ' .. expected)
  end
  return nil
end
local wrong = check(days, 'zset') or check(batches, 'zset')
if wrong then return wrong end
for i = 4, #KEYS do
  wrong = check(KEYS[i], 'hash')
  if wrong then return wrong end
end
if redis.call('ZSCORE', batches, ARGV[1]) then return 0 end
local function remember_batch()
  redis.call('ZREMRANGEBYSCORE', batches, '-inf', '(' .. ARGV[2])
  redis.call('ZADD', batches, ARGV[3], ARGV[1])
  redis.call('PEXPIRE', batches, ARGV[4])
end
if redis.call('EXISTS', record) == 0 then
  remember_batch()
  return 2
end
local NUMBERS = ${USAGE_NUMBERS}
local CELL = 3 + NUMBERS
local function count_of(text)
  local value = tonumber(text)
  if value == nil or value ~= value or value < 0 or value ~= math.floor(value) or value == math.huge then return nil end
  return value
end
local writes = {}
for first = 5, #ARGV, CELL do
  local key, field = KEYS[tonumber(ARGV[first])], ARGV[first + 2]
  local stored = redis.call('HGET', key, field)
  local values = {}
  if stored then
    for text in string.gmatch(stored, '[^,]+') do values[#values + 1] = count_of(text) or -1 end
    local readable = #values == NUMBERS
    for i = 1, #values do if values[i] < 0 then readable = false end end
    if not readable then
      return redis.error_reply('ERR keygate: the usage cell ' .. field .. ' of ' .. key .. ' is not ' .. NUMBERS .. ' non-negative integers')
    end
  else
    for i = 1, NUMBERS do values[i] = 0 end
  end
  local texts = {}
  for i = 1, NUMBERS do
    local given = tonumber(ARGV[first + 2 + i])
    local value
    if i < NUMBERS then value = values[i] + given else value = math.max(values[i], given) end
    texts[i] = string.format('%.17g', value)
  end
  writes[#writes + 1] = { key, field, table.concat(texts, ','), ARGV[first + 1] }
end
for _, write in ipairs(writes) do
  redis.call('HSET', write[1], write[2], write[3])
  redis.call('ZADD', days, write[4], write[4])
end
remember_batch()
return 1
`;

/**
 * Reads one key's usage cells in a range of days, in one step (so never half a batch).
 * KEYS: the key's usage days set, then one day hash per day the caller read in that set in the
 * range, in order. ARGV: the first and last day (inclusive), then those days.
 * Returns 'changed' when the days in the range are not the ones declared (a flush added a day
 * since: the caller reads them again and asks again), else one HGETALL reply per declared day, in order.
 */
export const READ_USAGE_SCRIPT = `
local days = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], ARGV[2])
if #days ~= #ARGV - 2 then return 'changed' end
for i = 1, #days do
  if days[i] ~= ARGV[2 + i] then return 'changed' end
end
local cells = {}
for i = 2, #KEYS do cells[#cells + 1] = redis.call('HGETALL', KEYS[i]) end
return cells
`;

/**
 * Claims one named alert (capability `alerts`), in one step: of concurrent claims of a name,
 * exactly one succeeds. KEYS: the claim's key. ARGV: the claim's expiresAt and the caller's now
 * (epoch ms), and the key's expiry in ms (expiresAt − now plus a margin).
 * Liveness is judged on the caller's clock, by the stored expiresAt against ARGV now, never by
 * whether Redis still holds the key: the expiry only collects claims nobody asks about any more.
 * A stored value that is not a number (written by hand) is no claim: an alert sent twice is a
 * smaller harm than one never sent.
 * Returns 1 (claimed: expiresAt stored) or 0 (a live claim exists: nothing written).
 */
export const CLAIM_ALERT_SCRIPT = `
local stored = redis.call('GET', KEYS[1])
if stored then
  local expiresAt = tonumber(stored)
  if expiresAt and expiresAt > tonumber(ARGV[2]) then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
`;

/** The hash field of a counter of `CounterState` (`c:tokens`, `c:day`, `c:dayCount`, …). */
export function counterField(field: keyof CounterState): string {
  return `c:${field}`;
}

/** A name the generated Lua quotes: letters and colons only, so it needs no escaping. */
function luaName(name: string): string {
  if (!/^[A-Za-z:]+$/.test(name)) throw new Error(`keygate: cannot use ${JSON.stringify(name)} as a counter name in Lua`);
  return `'${name}'`;
}

/** A number the generated Lua embeds: a safe integer, written exactly. */
function luaInteger(value: number): string {
  if (!Number.isSafeInteger(value)) throw new Error(`keygate: cannot embed ${value} in Lua as an exact integer`);
  return String(value);
}

/** The consume script's fixed arguments: now, maxUses, perSecond, burst, deadline. */
const FIXED_CONSUME_ARGS = 5;
/** ARGV position of the concurrency claim (limit, lease, leaseMs), after every window's quota. */
const CLAIM_ARG = FIXED_CONSUME_ARGS + QUOTA_WINDOWS.length + 1;
/**
 * How much longer than its newest lease a leases set lives (PEXPIRE), in ms. The expiry only
 * collects the set of a key nobody uses any more (a lease never released, its process gone):
 * each admitted consume with a claim prunes the lapsed ones itself. It must never drop a lease that is
 * still live, and the two do not run on the same clock: the expiry counts on Redis's clock from
 * this consume, a lapse instant on the callers' clocks from `at`, and a later consume counts at
 * the latest instant any caller reached (`tokensAt`). So when the app hosts' clocks disagree, a
 * lease can stay live, as the consumes see it, up to their skew longer than `leaseMs`; the margin
 * covers that skew (NTP keeps it far below), at the cost of keeping an abandoned set a minute longer.
 * The script raises the expiry and never lowers it (PTTL, then PEXPIRE: `PEXPIRE … GT` needs
 * Redis 7 and treats a set without expiry as one that never expires).
 */
export const LEASES_TTL_MARGIN_MS = 60_000;
const EMPTY_STATE = initialCounters(0);

/**
 * Lua for the quota windows, generated from `QUOTA_WINDOWS` (src/policy/windows.ts) when this
 * module loads, so that a window added to that table needs no Lua edit:
 * - WINDOWS: one entry per window, most lasting first (the order refusals are reported in): its
 *   counter fields in the hash (`index`, `count`), its length in ms (`false` for the calendar
 *   month), the ARGV position of its quota (`limit`) and its empty state (from `initialCounters`);
 * - month_index(at): the UTC calendar month of instant `at` (epoch ms) as `year × 12 + month`
 *   (month 0–11), exactly as `windowIndex` computes it with a JavaScript Date: the instant
 *   floored to whole milliseconds (as the fixed windows floor: -0.5 ms is in December 1969), its
 *   UTC day `floor(ms / 86 400 000)`, then the proleptic Gregorian date of that day (Howard Hinnant's
 *   `civil_from_days`, with floor division so days before 1970 work). Every intermediate value is
 *   an integer well below 2^53, so double arithmetic is exact. Returns false beyond ±8.64e15 ms,
 *   where a Date is invalid (JavaScript's month index is then NaN, equal to no stored index);
 * - window_index(window, at): `floor(at / length)` for a fixed window (the same IEEE division as
 *   JavaScript's), month_index for the month.
 */
export const WINDOW_LUA = `
local WINDOWS = {
${QUOTA_WINDOWS.map(
  (window, i) =>
    `  { name = ${luaName(window.name)}, index = ${luaName(counterField(window.indexField))}, count = ${luaName(counterField(window.countField))}, ` +
    `length = ${window.lengthMs === null ? 'false' : luaInteger(window.lengthMs)}, limit = ${FIXED_CONSUME_ARGS + 1 + i}, ` +
    `initialIndex = ${luaInteger(EMPTY_STATE[window.indexField])}, initialCount = ${luaInteger(EMPTY_STATE[window.countField])} },`,
).join('\n')}
}
local function month_index(at)
  local ms = math.floor(at)
  if not (ms >= -8640000000000000 and ms <= 8640000000000000) then return false end
  local z = math.floor(ms / 86400000) + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local year = yoe + era * 400
  local month
  if mp < 10 then month = mp + 2 else month = mp - 10 end
  if month < 2 then year = year + 1 end
  return year * 12 + month
end
local function window_index(window, at)
  if window.length then return math.floor(at / window.length) end
  return month_index(at)
end
`;

/**
 * The reading of a key by the scripts that count on it (CONSUME_SCRIPT, RESERVE_SCRIPT,
 * SETTLE_SCRIPT), after WINDOW_LUA, so that they read a key alike. KEYS[1] is the record's hash,
 * ARGV[1] the caller's now. Returns nil for an unknown record, an error reply when its useCount is
 * not a non-negative integer; leaves, as locals: key, fields (the HMGET field names: useCount,
 * status, revokedAt, expiresAt, `c:tokens`, `c:tokensAt`, then each window's index and count from
 * FIRST_WINDOW_FIELD on), state (their values), requestNow and useCount.
 */
const KEY_STATE_LUA = `
local key = KEYS[1]
local fields = { 'useCount', 'status', 'revokedAt', 'expiresAt', ${luaName(counterField('tokens'))}, ${luaName(counterField('tokensAt'))} }
local FIRST_WINDOW_FIELD = #fields + 1
for _, window in ipairs(WINDOWS) do
  fields[#fields + 1] = window.index
  fields[#fields + 1] = window.count
end
local state = redis.call('HMGET', key, unpack(fields))
if not state[1] then return false end
local requestNow = tonumber(ARGV[1])
local useCount = tonumber(state[1])
-- A count written by hand as nan, a negative or a fraction would let limits pass: fail closed.
if useCount == nil or useCount ~= useCount or useCount < 0 or useCount ~= math.floor(useCount) or useCount == math.huge then
  return redis.error_reply('ERR keygate: the record useCount is not a non-negative integer')
end`;

/**
 * The checks a use of a key passes before its limits (CONSUME_SCRIPT, RESERVE_SCRIPT), after
 * LIFECYCLE_HELPERS and KEY_STATE_LUA. ARGV[2..5] are maxUses, perSecond, burst and deadline (''
 * for none). Returns the refusal reply { 0, refusal, useCount } for a deadline passed on the Redis
 * server's clock (TIME) or a lifecycle refusal at the caller's now; leaves maxUses, perSecond and
 * burst as locals (nil for none).
 */
const ADMISSION_GATE_LUA = `
local deadline = tonumber(ARGV[5])
if deadline then
  if redis.replicate_commands then redis.replicate_commands() end
  local time = redis.call('TIME')
  local serverNow = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
  if serverNow >= deadline then return { 0, 'deadline_exceeded', useCount } end
end
local status = status_of(state[2])
if status == 'revoked' or passed(date_of(state[3]), requestNow) then return { 0, 'api_key_revoked', useCount } end
if status == 'suspended' then return { 0, 'api_key_disabled', useCount } end
if passed(date_of(state[4]), requestNow) then return { 0, 'api_key_expired', useCount } end
local maxUses = tonumber(ARGV[2])
local perSecond = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])`;

/**
 * The bucket's counters and the counting instant, after KEY_STATE_LUA (the scripts that count on
 * a key). Returns an error reply when `c:tokens` or `c:tokensAt` is not a number it could hold;
 * leaves, as locals, tokens (nil for a bucket never drawn from), tokensAt, now (the counting
 * instant: max(requestNow, tokensAt)) and the functions counter(raw, default, integer, nullable,
 * minimum) (true and the value, or false for a value that is not a number it could hold) and
 * unreadable(name) (the error reply for such a counter).
 */
const COUNTERS_LUA = `
-- A counter written by hand as something other than a number would reset a limit (an unreadable
-- bucket read as full, an unreadable window as a new one): fail closed, as for useCount. An
-- absent counter is the empty state; c:tokens is 'null' until the bucket is first used.
local function counter(raw, default, integer, nullable, minimum)
  if not raw then return true, default end
  if nullable and raw == 'null' then return true, nil end
  local value = tonumber(raw)
  if value == nil or value ~= value or value == math.huge or value == -math.huge then return false end
  if integer and value ~= math.floor(value) then return false end
  if minimum and value < minimum then return false end
  return true, value
end
local function unreadable(name)
  return redis.error_reply('ERR keygate: the record counter ' .. name .. ' is not a number it could hold')
end
local ok, tokens = counter(state[5], nil, false, true, 0)
if not ok then return unreadable(fields[5]) end
local tokensAt
ok, tokensAt = counter(state[6], ${luaInteger(EMPTY_STATE.tokensAt)}, false, false, nil)
if not ok then return unreadable(fields[6]) end
local now = math.max(requestNow, tokensAt)`;

/**
 * One atomic consume, in the order of the store contract, all or nothing:
 * 1. the caller's wall-clock deadline against the Redis server's clock (TIME): once it has passed
 *    the caller has answered 503, so nothing is applied (`deadline_exceeded`);
 * 2. the record's lifecycle as stored now, with the request's clock (the rules of
 *    `lifecycleRefusal` in src/policy/status.ts): a status other than active/suspended or a
 *    revokedAt at or before now is `api_key_revoked`, suspended is `api_key_disabled`, an
 *    expiresAt at or before now is `api_key_expired`;
 * 3. the limits, with the arithmetic of `decideConsume` in src/policy/limits.ts: maxUses, then the
 *    quota windows most lasting first (WINDOW_LUA: month, day, hour, minute), then the token
 *    bucket, then (for a request with a concurrency claim) the live leases against the claim's
 *    limit; the request is counted at `at` = max(now, last admitted time) so counters never move
 *    back in time, and an admitted request is counted in every window, quota or not.
 *
 * KEYS: the record's hash, then its leases (a sorted set in the same slot: lease → the instant it
 * lapses). Only a request with a claim reads or writes the leases: one without it runs no command
 * on KEYS[2], whatever it holds.
 * ARGV: now, maxUses, perSecond, burst, deadline (empty string = none), then the quota of each
 * window in WINDOWS order (empty = none), then the concurrency claim: limit, lease id, leaseMs
 * (three empty strings = no claim).
 *
 * With a claim, once the lifecycle has passed: the leases still live at `at` (score > at) are
 * counted (inFlight); `concurrency_limited` when nothing else refused and inFlight >= limit (a
 * refusal writes nothing, lapsed leases included); when admitted, the leases lapsed by `at` are
 * removed and the new lease added (score at + leaseMs), and the set's expiry
 * raised to leaseMs + LEASES_TTL_MARGIN_MS if it was shorter (never lowered: a lease added
 * earlier with a longer leaseMs keeps its set). Leases are added in non-decreasing `at` order
 * (tokensAt is the latest admitted `at`), so with one leaseMs the newest lease is the last to
 * lapse.
 *
 * Returns nil for an unknown record; { 0, refusal, useCount } for a deadline or lifecycle
 * refusal; else { admitted 0|1, refusal, useCount, tokens, then each window's count in WINDOWS
 * order, at, inFlight } (a refusal's counts are those that were used; an admission's include it;
 * inFlight is the number of live leases, the new one included when admitted, or '' without a
 * claim). An error reply (nothing written) when useCount or, for a key that is not refused by
 * then, a counter (`c:*`) is not a number it could hold: a key whose counters cannot be read is
 * not admitted; likewise (nothing counted or pruned) when a claim's limit or
 * leaseMs is not a finite number or the leases key is not a sorted set. An absent counter (a
 * record written before its window existed) is the empty state; absent leases are none.
 *
 * TIME before the writes is safe: Redis 5+ replicates a script's effects, not the script (older
 * servers are asked to with `redis.replicate_commands()`).
 */
export const CONSUME_SCRIPT = `${LIFECYCLE_HELPERS}${WINDOW_LUA}${KEY_STATE_LUA}${ADMISSION_GATE_LUA}${COUNTERS_LUA}
local refusal = ''
if maxUses and useCount >= maxUses then refusal = 'usage_exhausted' end
-- Every window, most lasting first: its count in the window holding now (0 in a new window).
local indices, used = {}, {}
for i, window in ipairs(WINDOWS) do
  local field = FIRST_WINDOW_FIELD + 2 * (i - 1)
  local stored, count
  ok, stored = counter(state[field], window.initialIndex, true, false, nil)
  if not ok then return unreadable(window.index) end
  ok, count = counter(state[field + 1], window.initialCount, true, false, 0)
  if not ok then return unreadable(window.count) end
  local index = window_index(window, now)
  if index == false or stored ~= index then count = 0 end
  indices[i] = index
  used[i] = count
  local quota = tonumber(ARGV[window.limit])
  if quota and refusal == '' and count >= quota then refusal = 'quota_exceeded' end
end
local level = nil
if perSecond then
  local capacity = burst or perSecond
  if tokens == nil then
    level = capacity
  else
    level = math.min(capacity, tokens + (math.max(0, now - tokensAt) * perSecond) / 1000)
  end
end
if refusal == '' and level and level < 1 then refusal = 'rate_limited' end
-- The concurrency claim, the least lasting limit; \`now\` here is the instant counted at (\`at\`).
-- Numbers go to Redis as %.17g text: a Lua number given to redis.call is written with 14 digits,
-- which would move a lapse instant.
local leases = KEYS[2]
local claimed = ARGV[${luaInteger(CLAIM_ARG)}] ~= ''
local inFlight = ''
local leaseMs
if claimed then
  local limit = tonumber(ARGV[${luaInteger(CLAIM_ARG)}])
  leaseMs = tonumber(ARGV[${luaInteger(CLAIM_ARG + 2)}])
  if not (limit and limit == limit and limit ~= math.huge and limit ~= -math.huge) then
    return redis.error_reply('ERR keygate: the concurrency limit is not a number')
  end
  if not (leaseMs and leaseMs == leaseMs and leaseMs ~= math.huge and leaseMs ~= -math.huge) then
    return redis.error_reply('ERR keygate: the concurrency leaseMs is not a number')
  end
  -- Live: the instant is after the one this request counts at. Counted, not pruned: a refusal
  -- changes nothing, and a later caller whose clock lags may still count a lease lapsed by now.
  local live = redis.pcall('ZCOUNT', leases, '(' .. string.format('%.17g', now), '+inf')
  if type(live) == 'table' and live['err'] then
    return redis.error_reply('WRONGTYPE keygate: the leases key ' .. leases .. ' is not a sorted set')
  end
  inFlight = live
  if refusal == '' and inFlight >= limit then refusal = 'concurrency_limited' end
end
if refusal ~= '' then
  local levelText = ''
  if level then levelText = string.format('%.17g', level) end
  local reply = { 0, refusal, useCount, levelText }
  for i = 1, #WINDOWS do reply[#reply + 1] = used[i] end
  reply[#reply + 1] = string.format('%.17g', now)
  reply[#reply + 1] = inFlight
  return reply
end
if claimed then
  -- Before the counters: should it fail, nothing is counted. Admitted, the key's latest instant
  -- becomes now, so the leases lapsed by now can never count again: drop them.
  redis.call('ZREMRANGEBYSCORE', leases, '-inf', string.format('%.17g', now))
  redis.call('ZADD', leases, string.format('%.17g', now + leaseMs), ARGV[${luaInteger(CLAIM_ARG + 1)}])
  -- At most 1e15 ms (some 30 000 years), an expiry Redis accepts whatever leaseMs is.
  local ttl = math.min(1e15, math.max(0, math.ceil(leaseMs)) + ${luaInteger(LEASES_TTL_MARGIN_MS)})
  -- PTTL is -1 for a set without expiry (a new one), which every ttl exceeds.
  if redis.call('PTTL', leases) < ttl then redis.call('PEXPIRE', leases, string.format('%.17g', ttl)) end
  inFlight = inFlight + 1
end
useCount = useCount + 1
local tokensField = 'null'
local levelText = ''
if level then
  levelText = string.format('%.17g', level - 1)
  tokensField = levelText
end
local writes = { 'useCount', useCount, 'lastUsedAt', ARGV[1], fields[5], tokensField, fields[6], string.format('%.17g', now) }
local reply = { 1, '', useCount, levelText }
for i, window in ipairs(WINDOWS) do
  local index, count = indices[i], used[i] + 1
  reply[#reply + 1] = count
  -- Beyond the range of a JavaScript Date the month is NaN there, equal to no index: the empty
  -- state behaves the same (a count of 0 whatever the next index).
  if index == false then index, count = window.initialIndex, window.initialCount end
  writes[#writes + 1] = window.index
  writes[#writes + 1] = string.format('%.17g', index)
  writes[#writes + 1] = window.count
  writes[#writes + 1] = string.format('%.17g', count)
end
redis.call('HSET', key, unpack(writes))
reply[#reply + 1] = string.format('%.17g', now)
reply[#reply + 1] = inFlight
return reply
`;

/** ARGV position of a reservation's own arguments (units, lease, leaseMs), after every window's quota. */
const RESERVE_ARG = FIXED_CONSUME_ARGS + QUOTA_WINDOWS.length + 1;

/**
 * How much longer than its newest hold a key's holds hash lives (PEXPIRE), in ms. The expiry only
 * collects the holds of a key nobody reserves any more after a process died holding them (each
 * admitted reservation drops the lapsed ones itself, each settlement its own), or of a record an
 * older keygate purged without knowing holds. It runs on Redis's clock and a hold lapses on the
 * counting clock (the callers'): should the hash expire while a hold is still live, the bucket
 * would forget the tokens it holds and could refill past them. A day covers any skew a host that
 * keeps time at all can have (the quota windows would be wrong long before), so unlike the
 * concurrency leases' minute this margin costs exactness nothing; an abandoned hash is kept a
 * day longer. Raised by each admitted reservation, never lowered.
 */
export const HOLDS_TTL_MARGIN_MS = 86_400_000;

/**
 * Lua helpers for a key's holds (leased mode), kept in a hash in the record's slot: field = the
 * reservation's lease, value = `until,units,tokens,at` (the instant it lapses on the counting
 * clock, the units granted, the bucket tokens granted, the instant it counted at), each `%.17g`,
 * so every double round-trips exactly.
 * - finite(value): a number that is neither nil, NaN nor infinite.
 * - hold_of(text): the hold { lapse, units, tokens, at } a value encodes, or nil when it is not
 *   four finite numbers with units and tokens non-negative.
 * - hold_text(lapse, units, tokens, at): the value of a hold.
 * - read_holds(holdsKey): every hold (lease → hold); or nil and an error reply when the key holds
 *   something other than a hash or a hold cannot be read. A hold read as none would stop counting
 *   its tokens against the bucket: fail closed, as for the counters.
 * - delete_fields(holdsKey, names): HDEL of every lease in `names`, a bounded number per command.
 */
const HOLDS_LUA = `
local function finite(value)
  return value ~= nil and value == value and value ~= math.huge and value ~= -math.huge
end
local function hold_of(text)
  local a, b, c, d = string.match(text, '^([^,]+),([^,]+),([^,]+),([^,]+)$')
  if not a then return nil end
  local hold = { lapse = tonumber(a), units = tonumber(b), tokens = tonumber(c), at = tonumber(d) }
  if not (finite(hold.lapse) and finite(hold.units) and finite(hold.tokens) and finite(hold.at)) then return nil end
  if hold.units < 0 or hold.tokens < 0 then return nil end
  return hold
end
local function hold_text(lapse, units, tokens, at)
  return string.format('%.17g,%.17g,%.17g,%.17g', lapse, units, tokens, at)
end
local function read_holds(holdsKey)
  local raw = redis.pcall('HGETALL', holdsKey)
  if raw['err'] then return nil, redis.error_reply('WRONGTYPE keygate: the holds key ' .. holdsKey .. ' is not a hash') end
  local holds = {}
  for i = 1, #raw, 2 do
    local hold = hold_of(raw[i + 1])
    if not hold then return nil, redis.error_reply('ERR keygate: a hold of ' .. holdsKey .. ' is not four numbers it could hold') end
    holds[raw[i]] = hold
  end
  return holds
end
local function delete_fields(holdsKey, names)
  for first = 1, #names, 256 do
    redis.call('HDEL', holdsKey, unpack(names, first, math.min(#names, first + 255)))
  end
end
`;

/**
 * One atomic reservation (leased mode), in the order of a consume, all or nothing: the deadline
 * against Redis TIME, the record's lifecycle at the caller's now, then the limits, with the
 * arithmetic of `decideReservation` in src/policy/reservation.ts, operation for operation:
 * - at = max(now, c:tokensAt), the counting instant, as for a consume;
 * - the holds live at `at` (until > at) and the tokens they hold; the bucket's level is refilled
 *   since c:tokensAt at perSecond, capped at max(0, capacity − those tokens);
 * - the grant starts at max(1, floor(units)) and is lowered to the uses left (maxUses − useCount),
 *   then each quota's room in its window holding `at`, most lasting first, then floor(level); the
 *   first that brings it below 1 is the refusal (`usage_exhausted`, `quota_exceeded`,
 *   `rate_limited`), and a refusal writes nothing (lapsed holds included);
 * - admitted: useCount, every window (quota or not) and the bucket count the grant (c:tokens =
 *   level − grant, c:tokensAt = at), lastUsedAt = now (as a consume writes it), the lapsed holds
 *   are dropped and the hold written (until = at + leaseMs, units = grant, tokens = grant for a
 *   key with perSecond else 0, at), and the holds hash's expiry raised to leaseMs +
 *   HOLDS_TTL_MARGIN_MS if it was shorter.
 * Neither updatedAt nor the invalidation channel: a reservation is a use, not a change.
 *
 * KEYS: the record's hash, its holds (a hash in the same slot, see HOLDS_LUA).
 * ARGV: as the consume's up to the quotas (now, maxUses, perSecond, burst, deadline, then each
 * window's quota in WINDOWS order; '' for none), then units, lease, leaseMs.
 *
 * Returns nil for an unknown record; { 0, refusal, useCount } for a deadline or lifecycle
 * refusal; else { admitted 0|1, refusal, useCount, tokens ('' without perSecond), then each
 * window's count in WINDOWS order, at, granted }, the numbers as `%.17g` text (a refusal's counts
 * are those that refused it; an admission's include the grant). An error reply, nothing written,
 * when a counter, a hold or the holds key cannot be read (see COUNTERS_LUA, HOLDS_LUA), or units
 * or leaseMs is not a finite number.
 */
export const RESERVE_SCRIPT = `${LIFECYCLE_HELPERS}${WINDOW_LUA}${KEY_STATE_LUA}${ADMISSION_GATE_LUA}${COUNTERS_LUA}${HOLDS_LUA}
local holdsKey = KEYS[2]
local units = tonumber(ARGV[${luaInteger(RESERVE_ARG)}])
local lease = ARGV[${luaInteger(RESERVE_ARG + 1)}]
local leaseMs = tonumber(ARGV[${luaInteger(RESERVE_ARG + 2)}])
if not finite(units) then return redis.error_reply('ERR keygate: the reservation units is not a number') end
if not finite(leaseMs) then return redis.error_reply('ERR keygate: the reservation leaseMs is not a number') end
local holds, wrong = read_holds(holdsKey)
if not holds then return wrong end
-- Lapsed at the counting instant: dropped if this reservation is admitted, ignored either way.
local held, lapsed = 0, {}
for name, hold in pairs(holds) do
  if hold.lapse > now then held = held + hold.tokens else lapsed[#lapsed + 1] = name end
end
local level = nil
if perSecond then
  local cap = math.max(0, (burst or perSecond) - held)
  if tokens == nil then
    level = cap
  else
    level = math.min(cap, tokens + (math.max(0, now - tokensAt) * perSecond) / 1000)
  end
end
local granted = math.max(1, math.floor(units))
local refusal = ''
if maxUses then
  granted = math.min(granted, maxUses - useCount)
  if granted < 1 then refusal = 'usage_exhausted' end
end
-- Every window, most lasting first: its count in the window holding now (0 in a new window).
local indices, used = {}, {}
for i, window in ipairs(WINDOWS) do
  local field = FIRST_WINDOW_FIELD + 2 * (i - 1)
  local stored, count
  ok, stored = counter(state[field], window.initialIndex, true, false, nil)
  if not ok then return unreadable(window.index) end
  ok, count = counter(state[field + 1], window.initialCount, true, false, 0)
  if not ok then return unreadable(window.count) end
  local index = window_index(window, now)
  if index == false or stored ~= index then count = 0 end
  indices[i] = index
  used[i] = count
  local quota = tonumber(ARGV[window.limit])
  if quota and refusal == '' then
    granted = math.min(granted, quota - count)
    if granted < 1 then refusal = 'quota_exceeded' end
  end
end
if level and refusal == '' then
  granted = math.min(granted, math.floor(level))
  if granted < 1 then refusal = 'rate_limited' end
end
if refusal ~= '' then granted = 0 end
local function text(value)
  return string.format('%.17g', value)
end
local levelText = ''
if level then levelText = text(level - granted) end
local admitted = 0
if refusal == '' then admitted = 1 end
local reply = { admitted, refusal, text(useCount + granted), levelText }
for i = 1, #WINDOWS do reply[#reply + 1] = text(used[i] + granted) end
reply[#reply + 1] = text(now)
reply[#reply + 1] = text(granted)
if refusal ~= '' then return reply end
-- The key's latest instant becomes now: the holds lapsed by now can never count again.
delete_fields(holdsKey, lapsed)
local heldTokens = 0
if level then heldTokens = granted end
redis.call('HSET', holdsKey, lease, hold_text(now + leaseMs, granted, heldTokens, now))
-- At most 1e15 ms (some 30 000 years), an expiry Redis accepts whatever leaseMs is; PTTL is -1
-- for a hash without expiry (a new one), which every ttl exceeds.
local ttl = math.min(1e15, math.max(0, math.ceil(leaseMs)) + ${luaInteger(HOLDS_TTL_MARGIN_MS)})
if redis.call('PTTL', holdsKey) < ttl then redis.call('PEXPIRE', holdsKey, text(ttl)) end
local tokensField = 'null'
if level then tokensField = levelText end
local writes = { 'useCount', text(useCount + granted), 'lastUsedAt', ARGV[1], fields[5], tokensField, fields[6], text(now) }
for i, window in ipairs(WINDOWS) do
  local index, count = indices[i], used[i] + granted
  -- Beyond the range of a JavaScript Date the month is NaN there, equal to no index: the empty
  -- state behaves the same (a count of 0 whatever the next index), as the consume writes it.
  if index == false then index, count = window.initialIndex, window.initialCount end
  writes[#writes + 1] = window.index
  writes[#writes + 1] = text(index)
  writes[#writes + 1] = window.count
  writes[#writes + 1] = text(count)
end
redis.call('HSET', key, unpack(writes))
return reply
`;

/**
 * One atomic settlement (leased mode): the end of a reservation, with the arithmetic of
 * `decideSettlement` in src/policy/reservation.ts. Nothing is checked of the record but that it
 * exists and its counters can be read: units reserved are given back whatever became of the key.
 * - No hold of that lease (settled before, lapsed and dropped by a later reservation, never made):
 *   nothing changes, so a retried settlement gives nothing back twice.
 * - at = max(now, c:tokensAt); unspent = min(the hold's units, max(0, floor(ARGV unspent)));
 *   useCount − unspent (at least 0), and each window count − unspent (at least 0) whose stored
 *   index is the index of the window holding the hold's `at` (a window since ended keeps its
 *   history);
 * - for a key with perSecond whose hold is live at `at` (until > at): with `rest` the tokens of the
 *   other holds live at `at`, the level refilled with the cap max(0, capacity − rest − the hold's
 *   tokens), then c:tokens = min(max(0, capacity − rest), level + min(unspent, the hold's
 *   tokens)) and c:tokensAt = at. A hold that lapsed gives no tokens: the bucket refilled past
 *   them already;
 * - the hold is removed, with every hold lapsed at `at`.
 * Neither updatedAt, lastUsedAt nor the invalidation channel.
 *
 * KEYS: the record's hash, its holds. ARGV: now, lease, unspent, perSecond, burst ('' for none).
 * Returns nil for an unknown record (nothing written), 0 when there is no such hold, 1 when
 * settled. An error reply, nothing written, when a counter, a hold or the holds key cannot be
 * read, or unspent is not a finite number.
 */
export const SETTLE_SCRIPT = `${WINDOW_LUA}${KEY_STATE_LUA}${COUNTERS_LUA}${HOLDS_LUA}
local holdsKey, lease = KEYS[2], ARGV[2]
local given = tonumber(ARGV[3])
if not finite(given) then return redis.error_reply('ERR keygate: the settlement unspent is not a number') end
local holds, wrong = read_holds(holdsKey)
if not holds then return wrong end
local hold = holds[lease]
if not hold then return 0 end
local function text(value)
  return string.format('%.17g', value)
end
local unspent = math.min(hold.units, math.max(0, math.floor(given)))
local writes = { 'useCount', text(math.max(0, useCount - unspent)) }
for i, window in ipairs(WINDOWS) do
  local field = FIRST_WINDOW_FIELD + 2 * (i - 1)
  local stored, count
  ok, stored = counter(state[field], window.initialIndex, true, false, nil)
  if not ok then return unreadable(window.index) end
  ok, count = counter(state[field + 1], window.initialCount, true, false, 0)
  if not ok then return unreadable(window.count) end
  -- The month of an instant beyond a JavaScript Date is false here (NaN there): equal to no index.
  if stored == window_index(window, hold.at) then
    writes[#writes + 1] = window.count
    writes[#writes + 1] = text(math.max(0, count - unspent))
  end
end
-- The holds other than this one still live at the counting instant, and the lapsed ones to drop.
local rest, gone = 0, { lease }
for name, other in pairs(holds) do
  if name ~= lease then
    if other.lapse > now then rest = rest + other.tokens else gone[#gone + 1] = name end
  end
end
local perSecond, burst = tonumber(ARGV[4]), tonumber(ARGV[5])
if perSecond and hold.lapse > now then
  local capacity = burst or perSecond
  -- The level with this hold still held, then with its unspent tokens back and its cap raised.
  local cap = math.max(0, capacity - (rest + hold.tokens))
  local level
  if tokens == nil then
    level = cap
  else
    level = math.min(cap, tokens + (math.max(0, now - tokensAt) * perSecond) / 1000)
  end
  writes[#writes + 1] = fields[5]
  writes[#writes + 1] = text(math.min(math.max(0, capacity - rest), level + math.min(unspent, hold.tokens)))
  writes[#writes + 1] = fields[6]
  writes[#writes + 1] = text(now)
end
delete_fields(holdsKey, gone)
redis.call('HSET', key, unpack(writes))
return 1
`;
