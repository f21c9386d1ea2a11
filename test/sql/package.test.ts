/**
 * The built `keygate/sql` entry point as users load it (`npm test` builds dist/ first): it loads
 * neither database driver nor the manager (and what the manager pulls in: ipaddr.js, the bcrypt
 * worker pool's worker_threads), and the main entry point never loads it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';

const root = resolve(__dirname, '../..');

function node(args: string[]): string {
  return execFileSync(process.execPath, args, { cwd: root, encoding: 'utf8', timeout: 30_000 });
}

beforeAll(() => {
  if (!existsSync(resolve(root, 'dist/cjs/sql.js'))) throw new Error('dist/ is missing: run `npm run build` (npm test does it first)');
});

describe('the built keygate/sql', () => {
  it('exports SqlStore through require() without loading pg or better-sqlite3', () => {
    const output = node([
      '-e',
      `const sql = require('./dist/cjs/sql.js');
       const drivers = Object.keys(require.cache).filter((f) => /node_modules[\\\\/](pg|pg-[a-z]+|better-sqlite3)[\\\\/]/.test(f));
       console.log(JSON.stringify({ exports: Object.keys(sql).sort(), drivers }));`,
    ]);
    expect(JSON.parse(output)).toEqual({ exports: ['DEFAULT_TABLE', 'SqlStore', 'sqlSchema'], drivers: [] });
  });

  it('works through import (ESM) with a real better-sqlite3 database', () => {
    const output = node([
      '--input-type=module',
      '-e',
      `import { SqlStore } from './dist/esm/sql.js';
       import Database from 'better-sqlite3';
       const db = new Database(':memory:');
       const store = new SqlStore({ dialect: 'sqlite', client: db });
       await store.migrate();
       console.log(JSON.stringify(await store.list({ limit: 1 })));`,
    ]);
    expect(output.trim()).toBe('[]');
  });

  it('loads nothing of the manager through require(): no dist/cjs/manager, ipaddr.js or worker_threads', () => {
    const output = node([
      '-e',
      `const Module = require('node:module');
       const requested = [];
       const load = Module.prototype.require;
       Module.prototype.require = function (id) { requested.push(id); return load.apply(this, arguments); };
       require('./dist/cjs/sql.js');
       const files = Object.keys(require.cache);
       console.log(JSON.stringify({
         manager: files.filter((f) => /[\\/]dist[\\/]cjs[\\/]manager[\\/]/.test(f)),
         ipaddr: files.filter((f) => /node_modules[\\/]ipaddr\\.js[\\/]/.test(f)),
         builtins: requested.filter((id) => /^(node:)?worker_threads$/.test(id)),
         loaded: files.length,
       }));`,
    ]);
    const result = JSON.parse(output) as { manager: string[]; ipaddr: string[]; builtins: string[]; loaded: number };
    expect(result.loaded).toBeGreaterThan(5); // the probe saw the store's own modules load
    expect({ ...result, loaded: undefined }).toEqual({ manager: [], ipaddr: [], builtins: [], loaded: undefined });
  });

  it('imports nothing of the manager (ESM import graph): no dist/esm/manager, ipaddr.js or worker_threads', () => {
    const files = new Set<string>();
    const packages = new Set<string>();
    const pending = [resolve(root, 'dist/esm/sql.js')];
    for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
      if (files.has(file)) continue;
      files.add(file);
      const source = readFileSync(file, 'utf8');
      for (const match of source.matchAll(/\b(?:from|import)\s*\(?\s*['"]([^'"]+)['"]/g)) {
        const specifier = match[1] as string;
        if (specifier.startsWith('.')) pending.push(resolve(dirname(file), specifier));
        else packages.add(specifier);
      }
    }
    const modules = [...files].map((file) => relative(resolve(root, 'dist/esm'), file).split('\\').join('/'));
    expect(modules).toContain('stores/sql/sql-store.js');
    expect(modules.filter((module) => module.startsWith('manager/'))).toEqual([]);
    expect([...packages].filter((name) => /^(node:)?worker_threads$|^ipaddr\.js$/.test(name))).toEqual([]);
  });

  it('is never loaded by the main entry point', () => {
    const output = node([
      '-e',
      `require('./dist/cjs/index.js');
       console.log(JSON.stringify(Object.keys(require.cache).filter((f) => /[\\\\/]dist[\\\\/]cjs[\\\\/](sql\\.js|stores[\\\\/]sql[\\\\/])/.test(f))));`,
    ]);
    expect(JSON.parse(output)).toEqual([]);
  });
});
