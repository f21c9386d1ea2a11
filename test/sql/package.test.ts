/**
 * The built `keygate/sql` entry point as users load it (`npm test` builds dist/ first): it loads
 * neither database driver, and the main entry point never loads it.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';

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

  it('is never loaded by the main entry point', () => {
    const output = node([
      '-e',
      `require('./dist/cjs/index.js');
       console.log(JSON.stringify(Object.keys(require.cache).filter((f) => /[\\\\/]dist[\\\\/]cjs[\\\\/](sql\\.js|stores[\\\\/]sql[\\\\/])/.test(f))));`,
    ]);
    expect(JSON.parse(output)).toEqual([]);
  });
});
