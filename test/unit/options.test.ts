import { availableParallelism } from 'node:os';
import { KeygateError } from '../../src/errors';
import { keygate } from '../../src/manager/keygate';
import { resolveOptions } from '../../src/manager/options';
import { resolveAuthenticate } from '../../src/middleware/authenticate-options';
import { rejectUnknownOptions as rejectUnknown } from '../../src/options/checks';
import { MemoryStore } from '../../src/stores/memory-store';

/** A structurally complete store that is never called: option checks must not touch the store. */
function fakeStore(): Record<string, () => never> {
  const fail = (): never => {
    throw new Error('options validation must not call the store');
  };
  return { insert: fail, findById: fail, findByKeyPrefix: fail, update: fail, rotate: fail, list: fail, consume: fail, purge: fail };
}

/** The TypeError `fn` throws. */
function typeError(fn: () => unknown): TypeError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(TypeError);
    expect(error).not.toBeInstanceOf(KeygateError);
    return error as TypeError;
  }
  throw new Error('expected a TypeError, but nothing was thrown');
}

describe('resolveOptions: defaults', () => {
  it('fills in prefix kg, bcrypt cost 10, the default cache, Date.now, a 1000 ms store timeout and the hashing guards', () => {
    const store = fakeStore();
    const resolved = resolveOptions({ store });
    expect(resolved).toEqual({
      store,
      prefix: 'kg',
      prefixes: new Map([['kg', undefined]]),
      environments: undefined,
      hashing: 'bcrypt',
      bcryptCost: 10,
      pepper: undefined,
      cache: {},
      now: Date.now,
      storeTimeoutMs: 1000,
      hashThreads: Math.max(1, Math.min(4, availableParallelism() - 1)),
      maxHashQueue: 64,
      failedAttemptLimit: { burst: 10, perSecond: 1, delayMs: 1000 },
      concurrencyLeaseMs: 60_000,
      audit: undefined,
      usage: undefined,
      quotaThresholds: [0.8, 1],
      webhooks: undefined,
    });
  });

  it('validates the hashing guards', () => {
    const store = fakeStore();
    expect(resolveOptions({ store, hashThreads: 0, failedAttemptLimit: false })).toMatchObject({ hashThreads: 0, failedAttemptLimit: false });
    expect(resolveOptions({ store, failedAttemptLimit: { burst: 3 } }).failedAttemptLimit).toEqual({ burst: 3, perSecond: 1, delayMs: 1000 });
    expect(() => resolveOptions({ store, hashThreads: -1 })).toThrow(TypeError);
    expect(() => resolveOptions({ store, failedAttemptLimit: { burts: 3 } as never })).toThrow(/did you mean `burst`/);
    expect(() => resolveOptions({ store, hashTreads: 2 } as never)).toThrow(/did you mean `hashThreads`/);
  });

  it('keeps valid overrides', () => {
    const now = () => 1_700_000_000_000;
    const resolved = resolveOptions({
      store: fakeStore(),
      prefix: 'pk_live',
      hashing: 'sha256',
      bcryptCost: 4,
      pepper: 'p',
      cache: { max: 10, ttlMs: 500 },
      now,
      storeTimeoutMs: 50,
    });
    expect(resolved).toMatchObject({
      prefix: 'pk_live',
      hashing: 'sha256',
      bcryptCost: 4,
      pepper: 'p',
      cache: { max: 10, ttlMs: 500 },
      storeTimeoutMs: 50,
    });
    expect(resolved.now).toBe(now);
  });

  it('accepts cache: false to turn the cache off', () => {
    expect(resolveOptions({ store: fakeStore(), cache: false }).cache).toBe(false);
  });

  it('accepts a real MemoryStore', () => {
    expect(resolveOptions({ store: new MemoryStore() }).prefix).toBe('kg');
  });
});

describe('resolveOptions: unknown option names', () => {
  it.each([
    [{ storeTimeout: 5 }, 'keygate()', 'storeTimeout', 'storeTimeoutMs'],
    [{ prefx: 'kg' }, 'keygate()', 'prefx', 'prefix'],
    [{ hashng: 'sha256' }, 'keygate()', 'hashng', 'hashing'],
    [{ peper: 'x' }, 'keygate()', 'peper', 'pepper'],
    [{ bcryptcost: 4 }, 'keygate()', 'bcryptcost', 'bcryptCost'],
    [{ cache: { ttl: 5 } }, 'keygate() cache', 'ttl', 'ttlMs'],
    [{ cache: { maxx: 5 } }, 'keygate() cache', 'maxx', 'max'],
  ])('rejects %j with a TypeError naming it and suggesting the closest name', (extra, where, name, hint) => {
    const error = typeError(() => resolveOptions({ store: fakeStore(), ...extra }));
    expect(error.message).toContain(where);
    expect(error.message).toContain(`\`${name}\``);
    expect(error.message).toMatch(new RegExp(`did you mean \`${hint}\``));
  });

  it('gives no "did you mean" for a name far from every option', () => {
    const error = typeError(() => resolveOptions({ store: fakeStore(), frobnicate: true }));
    expect(error.message).toContain('`frobnicate`');
    expect(error.message).not.toContain('did you mean');
  });

  it('rejectUnknown accepts known names and rejects the first unknown one', () => {
    expect(() => rejectUnknown({ a: 1, bb: 2 }, ['a', 'bb'], 'f()')).not.toThrow();
    expect(() => rejectUnknown({ a: 1, cc: 2 }, ['a', 'bb'], 'f()')).toThrow(/f\(\): unsupported option `cc`/);
  });
});

describe('resolveOptions: prefix', () => {
  it.each(['', 'Kg', '1kg', 'pk__live', 'pk_', '_pk', 'a'.repeat(33), 'pk-live', 42])(
    'rejects the prefix %p with KeygateError invalid_argument naming prefix',
    (prefix) => {
      let caught: unknown;
      try {
        resolveOptions({ store: fakeStore(), prefix });
      } catch (error) {
        caught = error;
      }
      expect(caught).toBeInstanceOf(KeygateError);
      expect(caught).toMatchObject({ code: 'invalid_argument', field: 'prefix', status: 400 });
    },
  );

  it.each(['kg', 'pk_live', 'sk_test', 'a1_b2', 'a'.repeat(32)])('accepts the prefix %p', (prefix) => {
    expect(resolveOptions({ store: fakeStore(), prefix }).prefix).toBe(prefix);
  });

  it('rejects a bad prefix through keygate() itself', () => {
    expect(() => keygate({ store: new MemoryStore(), prefix: 'PK' })).toThrow(
      expect.objectContaining({ code: 'invalid_argument', field: 'prefix' }),
    );
  });
});

describe('resolveOptions: store', () => {
  it('rejects a missing store', () => {
    expect(typeError(() => resolveOptions({})).message).toMatch(/store/);
  });

  it.each([null, 'memory', 42])('rejects the store %p', (store) => {
    expect(typeError(() => resolveOptions({ store })).message).toMatch(/store/);
  });

  it('rejects an object with no store methods', () => {
    expect(typeError(() => resolveOptions({ store: {} })).message).toMatch(/ApiKeyStore/);
  });

  it.each(['insert', 'findById', 'findByKeyPrefix', 'update', 'rotate', 'list', 'consume', 'purge'])(
    'rejects a store without %s(), naming the method',
    (method) => {
      const store = fakeStore();
      delete store[method];
      expect(typeError(() => resolveOptions({ store })).message).toContain(`${method}()`);
    },
  );

  it('rejects a store whose method is not a function', () => {
    expect(() => resolveOptions({ store: { ...fakeStore(), consume: 'yes' } })).toThrow(TypeError);
  });

  it('rejects the MemoryStore class itself in place of an instance', () => {
    expect(() => resolveOptions({ store: MemoryStore })).toThrow(TypeError);
  });
});

describe('keygate() arguments', () => {
  it('rejects the store class passed as the options (keygate(MemoryStore))', () => {
    expect(() => keygate(MemoryStore as never)).toThrow(TypeError);
    expect(() => keygate(MemoryStore as never)).toThrow(/options object/);
  });

  it.each([undefined, null, 'kg', 42])('rejects %p as the options', (options) => {
    expect(() => keygate(options as never)).toThrow(TypeError);
  });

  it('rejects an unknown option through keygate() with a hint', () => {
    expect(() => keygate({ store: new MemoryStore(), storeTimeout: 10 } as never)).toThrow(/did you mean `storeTimeoutMs`/);
  });
});

describe('resolveOptions: other values', () => {
  it.each([
    ['hashing', 'md5'],
    ['hashing', 'SHA256'],
    ['bcryptCost', 3],
    ['bcryptCost', 16],
    ['bcryptCost', 10.5],
    ['bcryptCost', '10'],
    ['pepper', ''],
    ['pepper', 42],
    ['cache', true],
    ['cache', null],
    ['cache', 'lru'],
    ['cache', { max: 0 }],
    ['cache', { max: 1.5 }],
    ['cache', { ttlMs: 0 }],
    ['cache', { ttlMs: -1 }],
    ['now', 1_700_000_000_000],
    ['now', 'Date.now'],
    ['storeTimeoutMs', 0],
    ['storeTimeoutMs', -1],
    ['storeTimeoutMs', 1.5],
    ['storeTimeoutMs', 2 ** 31],
    ['storeTimeoutMs', '1000'],
  ])('rejects %s = %p with a TypeError naming it', (name, value) => {
    expect(typeError(() => resolveOptions({ store: fakeStore(), [name]: value })).message).toContain(name);
  });

  it.each([
    ['bcryptCost', 4],
    ['bcryptCost', 15],
    ['storeTimeoutMs', 1],
    ['storeTimeoutMs', 2_147_483_647],
  ])('accepts the bound %s = %p', (name, value) => {
    expect(resolveOptions({ store: fakeStore(), [name]: value })).toMatchObject({ [name]: value });
  });
});

describe('resolveAuthenticate', () => {
  it('reads Bearer and X-API-Key but not the query by default', () => {
    expect(resolveAuthenticate(undefined)).toEqual({
      sources: { bearer: true, header: 'x-api-key', query: null },
      scopes: undefined,
      anyScopes: undefined,
      style: { realm: 'api', rateLimitHeaders: true, onError: undefined, passErrors: false },
      requireHttps: false,
    });
    expect(resolveAuthenticate({})).toEqual(resolveAuthenticate(undefined));
  });

  it('lower-cases a configured header name and turns sources off with false', () => {
    expect(resolveAuthenticate({ header: 'X-Custom-Key' }).sources.header).toBe('x-custom-key');
    expect(resolveAuthenticate({ header: false }).sources).toEqual({ bearer: true, header: null, query: null });
    expect(resolveAuthenticate({ bearer: false, header: false, query: 'api_key' }).sources).toEqual({
      bearer: false,
      header: null,
      query: 'api_key',
    });
  });

  it('keeps route scopes, deduplicated, and drops an empty list', () => {
    expect(resolveAuthenticate({ scopes: ['leads:read', 'leads:read'], anyScopes: ['a', 'b'] })).toMatchObject({
      scopes: ['leads:read'],
      anyScopes: ['a', 'b'],
    });
    expect(resolveAuthenticate({ scopes: [] }).scopes).toBeUndefined();
  });

  it.each([
    [{ scope: ['a'] }, 'scope', 'scopes'],
    [{ anyScope: ['a'] }, 'anyScope', 'anyScopes'],
    [{ passError: true }, 'passError', 'passErrors'],
    [{ onerror: () => undefined }, 'onerror', 'onError'],
    [{ headers: 'x-key' }, 'headers', 'header'],
  ])('rejects the unknown option %j with a hint', (options, name, hint) => {
    const error = typeError(() => resolveAuthenticate(options));
    expect(error.message).toContain('authenticate()');
    expect(error.message).toContain(`\`${name}\``);
    expect(error.message).toContain(`did you mean \`${hint}\``);
  });

  it.each([
    ['scopes', ['*']],
    ['scopes', ['leads:*']],
    ['scopes', 'leads:read'],
    ['scopes', ['bad scope']],
    ['anyScopes', ['*']],
    ['anyScopes', [5]],
    ['header', ''],
    ['header', 'x api key'],
    ['header', 'x-key:'],
    ['header', 5],
    ['header', true],
    ['query', ''],
    ['query', true],
    ['bearer', 'yes'],
    ['realm', 'a\nb'],
    ['realm', 5],
    ['onError', 'handler'],
    ['passErrors', 'true'],
    ['rateLimitHeaders', 'no'],
  ])('rejects %s = %j with a TypeError naming it', (name, value) => {
    expect(typeError(() => resolveAuthenticate({ [name]: value })).message).toContain(name);
  });

  it('rejects turning off every credential source', () => {
    expect(typeError(() => resolveAuthenticate({ bearer: false, header: false })).message).toMatch(/every credential source/);
  });

  it('rejects onError together with passErrors', () => {
    expect(() => resolveAuthenticate({ onError: () => undefined, passErrors: true })).toThrow(TypeError);
  });

  it.each([null, 'scopes', 42, [['leads:read']]])('rejects %p as the options', (options) => {
    expect(() => resolveAuthenticate(options)).toThrow(TypeError);
  });

  it('keeps onError, passErrors, realm and rateLimitHeaders', () => {
    const onError = () => undefined;
    expect(resolveAuthenticate({ onError, realm: 'leads', rateLimitHeaders: false }).style).toEqual({
      realm: 'leads',
      rateLimitHeaders: false,
      onError,
      passErrors: false,
    });
    expect(resolveAuthenticate({ passErrors: true }).style.passErrors).toBe(true);
  });
});
