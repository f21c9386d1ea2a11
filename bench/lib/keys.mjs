/**
 * keygate as the benchmark uses it: only the public entry files of the build under test (what
 * package.json "exports" names: index, redis, sql, testing), and keys made by `keys.create`.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { crc32 } from 'node:zlib';

export const PREFIX = 'pk_live';
export const PEPPER = 'bench-pepper';

/** The scopes every keygate variant's route requires. */
export const REQUIRED_SCOPES = ['leads:read'];

/** The options every process of a run gets from the runner (BENCH_OPTIONS). */
export const benchOptions = () => JSON.parse(process.env.BENCH_OPTIONS ?? '{}');

/** A public entry point of the keygate build in `dist` (`<dist>/esm/<entry>.js`): `keygate`, `keygate/redis`, `keygate/sql`. */
export function importKeygate(dist, entry = 'index') {
  return import(pathToFileURL(join(dist, 'esm', `${entry}.js`)).href);
}

/** What every keygate key carries, so every check and every counter runs and nothing refuses. */
export function keySettings(now = Date.now()) {
  return {
    name: 'bench key',
    ownerId: 'user_42',
    tenantId: 'acme',
    environment: 'live',
    scopes: ['leads:read', 'leads:write', 'reports:*'],
    allowedIps: ['127.0.0.0/8', '::1', '::ffff:127.0.0.1/128'],
    maxUses: 1_000_000_000_000,
    rateLimit: { perSecond: 1_000_000_000, burst: 1_000_000_000, perDay: 1_000_000_000_000 },
    expiresAt: new Date(now + 365 * 86_400_000),
    metadata: { plan: 'pro' },
    tags: ['bench'],
  };
}

/**
 * `count` records made by `keys.create` (HMAC-SHA-256 with a pepper, `settings`) on a scratch
 * MemoryStore, read back through the store: `[{ key, record }]`.
 */
export async function createdRecords({ keygate, MemoryStore }, count, settings = { name: 'bench' }) {
  const store = new MemoryStore();
  const keys = keygate({ store, prefix: PREFIX, hashing: 'sha256', pepper: PEPPER });
  const made = [];
  for (let i = 0; i < count; i++) {
    const { key, apiKey } = await keys.create(settings);
    made.push({ key, record: await store.findById(apiKey.id) });
  }
  await keys.close();
  return made;
}

/** A flat (sequential) copy of a string, as a database driver or JSON.parse hands it over. */
const flat = (text) => Buffer.from(text, 'latin1').toString('latin1');

/** Records made by `keys.create` that `fillStore` copies. */
const ORIGINALS = 1_000;

/**
 * Adds `count` records to `store` through `store.insert` (the public ApiKeyStore interface).
 * `keys.create` takes ~115 µs a key here (a million: ~2 minutes per store), so 1,000 records
 * are made by `keys.create` with `settings` and each is inserted again and again with its own id,
 * keyPrefix (the last 6 characters of the lookupId replaced by a copy number) and createdAt.
 * Every string that differs per record (id, keyPrefix, keyHash) is a flat copy of its own, so
 * heap figures are not flattered by sharing.
 */
export async function fillStore(keygateModule, store, settings, count) {
  const originals = await createdRecords(keygateModule, Math.min(count, ORIGINALS), settings);
  for (let i = 0; i < count; i++) {
    const { record } = originals[i % originals.length];
    const copy = Math.floor(i / originals.length).toString(36).padStart(6, '0');
    const createdAt = new Date(record.createdAt.getTime() + i);
    await store.insert({
      ...record,
      id: flat(randomUUID()),
      keyPrefix: flat(record.keyPrefix.slice(0, -copy.length) + copy),
      keyHash: flat(record.keyHash),
      createdAt,
      updatedAt: createdAt,
    });
  }
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

/**
 * `count` keys with `key`'s keyPrefix and random wrong secrets: what an attacker who saw a
 * keyPrefix sends. No public API makes a key for a given keyPrefix, so these follow the documented
 * format (README, "Key format"): 32 random base62 characters, then the CRC-32 of
 * `<prefix>_<lookupId>_<secret>` in base62, left-padded with 0 to 6 characters. They pass the
 * format and checksum checks and reach the store lookup and the secret comparison (the runner
 * checks that keygate answers one with `invalid_api_key`, not `malformed_api_key`).
 */
export function wrongSecretsFor(key, count) {
  const keyPrefix = key.slice(0, key.lastIndexOf('_'));
  return Array.from({ length: count }, () => {
    const body = `${keyPrefix}_${Array.from(randomBytes(32), (byte) => BASE62[byte % 62]).join('')}`;
    let check = '';
    for (let rest = crc32(body); rest > 0; rest = Math.floor(rest / 62)) check = BASE62[rest % 62] + check;
    return body + check.padStart(6, '0');
  });
}
