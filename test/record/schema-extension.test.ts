/**
 * Adding a field to the record is a change in the schema plus its behaviour, nothing else. This
 * test adds one (`colour`, a setting introduced in schema version 2) to RECORD_SCHEMA only — the
 * module is replaced for this file — and loads keygate fresh around it. With no other edit, the
 * field is validated, stored, read back, updated, cleared, handed to the app, and kept by every
 * store: MemoryStore, SQLite and PostgreSQL (whose existing tables gain the column on migrate())
 * and Redis.
 */
import Database from 'better-sqlite3';
import type Redis from 'ioredis';
import { Pool } from 'pg';
import { type PostgresServer, describePostgres, startPostgres } from '../helpers/postgres-server';
import { RedisServer, describeWithRedis } from '../helpers/redis-server';
import type * as Schema from '../../src/record/schema';
// The real library, loaded before the schema is replaced below.
import { keygate, MemoryStore } from '../../src/index';
import { SqlStore } from '../../src/sql';

jest.setTimeout(60_000);

type Library = typeof import('../../src/index');
type Sql = typeof import('../../src/sql');
type RedisModule = typeof import('../../src/redis');

/** A setting callers give and change. */
const COLOUR: Schema.FieldSpec = { kind: 'optionalText', column: 'colour', source: 'settings', since: 2 };
/** A field only keygate writes, with an initial value. */
const REVIEWED_AT: Schema.FieldSpec = { kind: 'nullableInstant', column: 'reviewed_at', source: 'system', initial: () => null, since: 2 };

/** keygate loaded with a schema that has one more field, and nothing else changed. */
function loadExtended(): { lib: Library; sql: Sql; redis: RedisModule } {
  let loaded: { lib: Library; sql: Sql; redis: RedisModule } | undefined;
  jest.isolateModules(() => {
    jest.doMock('../../src/record/schema', () => {
      const actual = jest.requireActual<typeof Schema>('../../src/record/schema');
      const RECORD_SCHEMA = { ...actual.RECORD_SCHEMA, colour: COLOUR, reviewedAt: REVIEWED_AT };
      return { ...actual, RECORD_SCHEMA, ...actual.deriveSchema(RECORD_SCHEMA) };
    });
    /* eslint-disable @typescript-eslint/no-require-imports -- isolateModules loads synchronously */
    loaded = {
      lib: require('../../src/index') as Library,
      sql: require('../../src/sql') as Sql,
      redis: require('../../src/redis') as RedisModule,
    };
    /* eslint-enable @typescript-eslint/no-require-imports */
  });
  jest.dontMock('../../src/record/schema');
  return loaded!;
}

/** Everything a caller does with a field, through the manager and the middleware's pipeline. */
async function exerciseColour(lib: Library, store: import('../../src/index').ApiKeyStore): Promise<void> {
  const keys = lib.keygate({ store, hashing: 'sha256' });
  try {
    const { key, apiKey } = await keys.create({ name: 'colourful', colour: 'teal' } as never);
    expect((apiKey as unknown as { colour?: string }).colour).toBe('teal');
    // A system field starts at its initial value, and callers cannot set it.
    expect((apiKey as unknown as { reviewedAt?: unknown }).reviewedAt).toBeNull();
    await expect(keys.create({ name: 'x', reviewedAt: null } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'reviewedAt' });
    expect(((await keys.get(apiKey.id)) as unknown as { colour?: string }).colour).toBe('teal');

    const verified = await keys.verify(key);
    expect(verified.ok && (verified.apiKey as unknown as { colour?: string }).colour).toBe('teal');

    const updated = await keys.update(apiKey.id, { colour: 'navy' } as never);
    expect((updated as unknown as { colour?: string }).colour).toBe('navy');
    const cleared = await keys.update(apiKey.id, { colour: null } as never);
    expect('colour' in cleared).toBe(false);
    expect('colour' in ((await keys.get(apiKey.id)) as object)).toBe(false);

    // A rotation copies what callers set and starts keygate's own fields afresh.
    await keys.update(apiKey.id, { colour: 'olive' } as never);
    const rotated = await keys.rotate(apiKey.id);
    expect(rotated.apiKey as unknown).toMatchObject({ colour: 'olive', reviewedAt: null, useCount: 0, rotatedFromId: apiKey.id });
    await keys.revoke(rotated.apiKey.id);

    // Validated by its kind: a caller's bad value is invalid_argument naming the field, nothing written.
    await expect(keys.create({ name: 'bad', colour: 42 } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'colour' });
    await expect(keys.update(apiKey.id, { colour: '' } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'colour' });
    expect((await keys.list()).items).toHaveLength(2); // the key and its rotation

    // A record that keygate did not write is refused when the field has the wrong type.
    const stored = await store.findById(apiKey.id);
    expect(() => lib.decodeStoredRecord({ ...stored, colour: 7 })).toThrow(expect.objectContaining({ code: 'invalid_record', field: 'colour' }));
  } finally {
    await keys.close();
  }
}

describe('a field added to the record schema only', () => {
  const extended = loadExtended();

  it('is accepted by create/update only because the schema says so (the real schema refuses it)', async () => {
    const keys = keygate({ store: new MemoryStore(), hashing: 'sha256' });
    await expect(keys.create({ name: 'x', colour: 'teal' } as never)).rejects.toMatchObject({ code: 'invalid_argument', field: 'colour' });
    await keys.close();
  });

  it('MemoryStore keeps it', async () => {
    await exerciseColour(extended.lib, new extended.lib.MemoryStore());
  });

  it('SQLite: migrate() adds its column to a table made by the version-1 schema, whose rows still read', async () => {
    const db = new Database(':memory:');
    try {
      const before = new SqlStore({ dialect: 'sqlite', client: db });
      await before.migrate();
      const old = await keygate({ store: before, hashing: 'sha256' }).create({ name: 'from version 1' });

      const store = new extended.sql.SqlStore({ dialect: 'sqlite', client: db });
      await store.migrate();
      await store.migrate(); // twice is harmless
      const columns = (db.prepare('SELECT name FROM pragma_table_info(?)').all('keygate_api_keys') as { name: string }[]).map((row) => row.name);
      expect(columns).toEqual(expect.arrayContaining(['colour', 'reviewed_at']));
      expect((await store.findById(old.apiKey.id))?.name).toBe('from version 1');
      db.prepare('DELETE FROM keygate_api_keys').run(); // exerciseColour counts the keys it lists
      await exerciseColour(extended.lib, store);
    } finally {
      db.close();
    }
  });

  describePostgres('PostgreSQL: migrate() adds its column to an existing table', () => {
    let server: PostgresServer;
    let pool: Pool;
    beforeAll(async () => {
      server = await startPostgres();
      pool = new Pool({ connectionString: server.connectionString });
      pool.on('error', () => undefined); // idle connections cut when the server stops
    });
    afterAll(async () => {
      await pool?.end();
      await server?.destroy();
    });

    it('keeps it', async () => {
      await new SqlStore({ dialect: 'postgres', client: pool }).migrate();
      const store = new extended.sql.SqlStore({ dialect: 'postgres', client: pool });
      await store.migrate();
      const { rows } = await pool.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'keygate_api_keys' AND column_name = 'colour'");
      expect(rows).toHaveLength(1);
      await exerciseColour(extended.lib, store);
    });
  });

  describeWithRedis('RedisStore keeps it', () => {
    let server: RedisServer;
    let client: Redis;
    beforeAll(async () => {
      server = await RedisServer.start();
      client = server.client();
    });
    afterAll(async () => {
      client?.disconnect();
      await server?.stop();
    });

    it('keeps it', async () => {
      await exerciseColour(extended.lib, new extended.redis.RedisStore({ client, keyPrefix: 'ext:' }));
    });
  });
});
