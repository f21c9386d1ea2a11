/**
 * The built package as users load it: `require` and `import` of every subpath, and a TypeScript
 * consumer compiled against the emitted `.d.ts` files. `npm test` builds dist/ before jest runs.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(__dirname, '../..');
let consumer: string;

/** Runs a file in the consumer folder with Node and returns what it printed. */
function run(file: string): string {
  return execFileSync(process.execPath, [file], { cwd: consumer, encoding: 'utf8', timeout: 30_000 });
}

beforeAll(() => {
  if (!existsSync(join(root, 'dist/cjs/index.js')) || !existsSync(join(root, 'dist/esm/index.js'))) {
    throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
  }
  consumer = mkdtempSync(join(tmpdir(), 'keygate-consumer-'));
  mkdirSync(join(consumer, 'node_modules'));
  // The package is linked in as an installed dependency would be; its own dependencies resolve from the repo.
  symlinkSync(root, join(consumer, 'node_modules/keygate'), 'dir');
  for (const dependency of ['express', '@types']) {
    symlinkSync(join(root, 'node_modules', dependency), join(consumer, 'node_modules', dependency), 'dir');
  }
});

afterAll(() => {
  if (consumer) rmSync(consumer, { recursive: true, force: true });
});

const SCRIPT_BODY = `
  const keys = keygate({ store: new MemoryStore(), prefix: 'sk_test', hashing: 'sha256' });
  const { key } = await keys.create({ name: 'pkg', scopes: ['a:b'] });
  const result = await keys.verify(key, { scopes: ['a:b'] });
  let redis = 'constructed';
  try { new RedisStore(); } catch (error) { redis = error.message; }
  console.log(JSON.stringify({
    ok: result.ok,
    isError: new KeygateError('not_found') instanceof Error,
    guards: [typeof requireScopes, typeof requireAnyScope],
    contract: typeof describeStoreContract,
    redis,
  }));
`;

function expectWorkingPackage(output: string): void {
  expect(JSON.parse(output)).toEqual({
    ok: true,
    isError: true,
    guards: ['function', 'function'],
    contract: 'function',
    redis: expect.stringMatching(/RedisStore needs options/),
  });
}

describe('the built package', () => {
  it('works through require() (CommonJS)', () => {
    writeFileSync(
      join(consumer, 'main.cjs'),
      `const { keygate, MemoryStore, KeygateError, requireScopes, requireAnyScope } = require('keygate');
       const { describeStoreContract } = require('keygate/testing');
       const { RedisStore } = require('keygate/redis');
       (async () => {${SCRIPT_BODY}})().catch((e) => { console.error(e); process.exit(1); });`,
    );
    expectWorkingPackage(run('main.cjs'));
  });

  it('works through import (ESM)', () => {
    writeFileSync(
      join(consumer, 'main.mjs'),
      `import { keygate, MemoryStore, KeygateError, requireScopes, requireAnyScope } from 'keygate';
       import { describeStoreContract } from 'keygate/testing';
       import { RedisStore } from 'keygate/redis';
       ${SCRIPT_BODY}`,
    );
    expectWorkingPackage(run('main.mjs'));
  });

  it('loads no store driver, from the main entry point or the store subpaths (the user passes the client)', () => {
    writeFileSync(
      join(consumer, 'drivers.cjs'),
      `require('keygate');
       require('keygate/redis');
       require('keygate/sql');
       const loaded = Object.keys(require.cache).filter((f) => /node_modules[\\\\/](ioredis|pg|better-sqlite3|jest)/.test(f));
       console.log(JSON.stringify(loaded));`,
    );
    expect(JSON.parse(run('drivers.cjs'))).toEqual([]);
  });

  it('types req.apiKey for a TypeScript consumer under node16 resolution, with no cast', () => {
    writeFileSync(
      join(consumer, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: { strict: true, module: 'node16', moduleResolution: 'node16', noEmit: true, skipLibCheck: false, types: [] },
        files: ['app.mts', 'app.cts'],
      }),
    );
    const body = `
      const keys = keygate({ store: new MemoryStore(), prefix: 'pk_live' });
      const app = express();
      app.use(keys.authenticate({ scopes: ['leads:read'] }));
      app.get('/', requireScopes('leads:read'), (req, res) => {
        const scopes: string[] = req.apiKey?.scopes ?? [];
        const active: boolean | undefined = res.locals.apiKey?.isActive;
        // @ts-expect-error keyHash is not part of the public view
        const hidden = req.apiKey?.keyHash;
        res.json({ scopes, active, hidden });
      });
      const codes: KeygateErrorCode[] = ['missing_api_key', 'rate_limited'];
      export { app, codes };`;
    writeFileSync(
      join(consumer, 'app.mts'),
      `import express from 'express';
       import { keygate, MemoryStore, requireScopes, type KeygateErrorCode } from 'keygate';
       ${body}`,
    );
    writeFileSync(
      join(consumer, 'app.cts'),
      `import express = require('express');
       import { keygate, MemoryStore, requireScopes, type KeygateErrorCode } from 'keygate';
       ${body}`,
    );
    const tsc = join(root, 'node_modules/typescript/bin/tsc');
    expect(() => execFileSync(process.execPath, [tsc, '-p', consumer], { encoding: 'utf8', timeout: 60_000 })).not.toThrow();
  });

  it('packs only the compiled output and the package metadata', () => {
    const packed = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: root, encoding: 'utf8' })) as [
      { files: { path: string }[] },
    ];
    const paths = packed[0].files.map((f) => f.path);
    expect(paths).toEqual(expect.arrayContaining(['package.json', 'README.md', 'dist/cjs/index.js', 'dist/esm/index.js', 'dist/esm/index.d.ts']));
    expect(paths.filter((p) => !p.startsWith('dist/') && !['package.json', 'README.md', 'CHANGELOG.md'].includes(p))).toEqual([]);
  });
});
