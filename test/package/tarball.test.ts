/**
 * The package as a user gets it: `npm pack` of a clean copy of the repository (no dist/, so the
 * `prepare` script must build it inside pack, as it does for `npm install <git url>`), the tarball
 * installed with npm into an empty project next to express, then an ESM, a CommonJS and a
 * TypeScript consumer (test/package/consumers/) run or type-checked against that install.
 *
 * Nothing here touches the repository's own dist/: the copy builds its own. The install needs
 * keygate's dependencies and express from the npm cache or the registry (`--prefer-offline`).
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, relative, resolve, sep } from 'node:path';
import { pathToFileURL } from 'node:url';

// Packing builds the package, and installing may fetch from the registry: minutes on a slow machine.
jest.setTimeout(120_000);

const root = resolve(__dirname, '../..');
const consumers = join(__dirname, 'consumers');

/** What a clean checkout lacks (the repository's .gitignore, and git's own folder). */
const NOT_IN_A_CHECKOUT = new Set(['.git', 'node_modules', 'dist', 'coverage', join('bench', 'results')]);

interface PackedFile {
  path: string;
}
interface PackResult {
  filename: string;
  files: PackedFile[];
}

let work: string;
let app: string;
let tarball: string;
let packedFiles: string[];

/**
 * The environment for child processes: under `npm test`, npm describes the outer run in `npm_*`
 * variables (its project, its script); the nested npm commands must find their own project from
 * their working directory instead. npm's settings (`npm_config_*`: cache, registry, proxy) stay.
 */
function childEnvironment(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' };
  for (const name of Object.keys(env)) {
    if (/^npm_(package_|lifecycle_|config_local_prefix$|command$)/i.test(name)) delete env[name];
  }
  return env;
}

/** Runs a command to completion; throws with its output when it fails. */
function run(command: string, args: string[], cwd: string, timeout = 120_000): string {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8', timeout, shell: process.platform === 'win32', env: childEnvironment() });
  if (result.status !== 0) {
    const why = result.error ? String(result.error) : `exit code ${result.status}${result.signal ? `, ${result.signal}` : ''}`;
    throw new Error(`\`${basename(command)} ${args.join(' ')}\` in ${cwd} failed (${why}):\n${result.stdout}\n${result.stderr}`);
  }
  return result.stdout;
}

/** The version of a package the repository has installed, so the consumer project can reuse the npm cache. */
function installedVersion(name: string): string {
  return (JSON.parse(readFileSync(join(root, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

function node(file: string): unknown {
  return JSON.parse(run(process.execPath, [file], app, 60_000));
}

beforeAll(() => {
  work = realpathSync(mkdtempSync(join(tmpdir(), 'keygate-tarball-')));

  // A clean checkout: the repository's files without dist/ and node_modules/. The toolchain the
  // `prepare` script needs (tsc, a devDependency) comes from the repository's node_modules, as
  // it comes from the devDependencies npm installs into a git dependency's clone before packing.
  const checkout = join(work, 'checkout');
  cpSync(root, checkout, {
    recursive: true,
    filter: (source) => {
      const path = relative(root, source);
      return !NOT_IN_A_CHECKOUT.has(path) && basename(path) !== 'node_modules' && !path.endsWith('.log');
    },
  });
  symlinkSync(join(root, 'node_modules'), join(checkout, 'node_modules'), 'junction');

  const packs = join(work, 'packs');
  mkdirSync(packs);
  const stdout = run('npm', ['pack', '--json', '--pack-destination', packs], checkout, 180_000);
  // Lifecycle output may come before the JSON document on stdout: the document opens with `[` on a line of its own.
  const packed = JSON.parse(stdout.slice(stdout.search(/^\[/m))) as PackResult[];
  expect(packed).toHaveLength(1);
  tarball = join(packs, packed[0]!.filename);
  packedFiles = packed[0]!.files.map((file) => file.path).sort();

  app = join(work, 'app');
  mkdirSync(app);
  writeFileSync(join(app, 'package.json'), `${JSON.stringify({ name: 'keygate-consumer', version: '1.0.0', private: true }, null, 2)}\n`);
  run(
    'npm',
    [
      'install',
      '--prefer-offline',
      '--no-audit',
      '--no-fund',
      '--no-package-lock',
      tarball,
      `express@${installedVersion('express')}`,
      `@types/express@${installedVersion('@types/express')}`,
      `@types/node@${installedVersion('@types/node')}`,
    ],
    app,
    180_000,
  );
  for (const file of readdirSync(consumers)) copyFileSync(join(consumers, file), join(app, file));
}, 360_000);

afterAll(() => {
  if (work) rmSync(work, { recursive: true, force: true });
});

describe('the packed tarball', () => {
  it('carries the built package, its README and CHANGELOG, and nothing of the sources, tests or benchmarks', () => {
    const exportsMap = (JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { exports: Record<string, unknown> }).exports;
    const targets = JSON.stringify(exportsMap).match(/\.\/dist\/[^"]+/g) ?? [];
    expect(targets.length).toBeGreaterThan(8);
    for (const target of targets) expect(packedFiles).toContain(target.slice(2));
    expect(packedFiles).toEqual(
      expect.arrayContaining([
        'package.json',
        'README.md',
        'CHANGELOG.md',
        'dist/esm/package.json',
        'dist/cjs/package.json',
        'dist/esm/index.js',
        'dist/esm/index.d.ts',
        'dist/cjs/index.js',
        'dist/cjs/index.d.ts',
        'dist/esm/express-augment.d.ts',
      ]),
    );
    for (const license of ['LICENSE', 'LICENSE.md', 'LICENSE.txt']) {
      if (existsSync(join(root, license))) expect(packedFiles).toContain(license);
    }

    // Top level: the package's manifest and documents, everything else under dist/.
    const topLevel = packedFiles.filter((path) => !path.startsWith('dist/'));
    expect(topLevel.every((path) => /^(package\.json|README\.md|CHANGELOG\.md|LICENSE(\.md|\.txt)?)$/.test(path))).toBe(true);
    // Under dist/: compiled output only: no TypeScript sources, no tests, no build configuration.
    const strays = packedFiles.filter(
      (path) =>
        (path.endsWith('.ts') && !path.endsWith('.d.ts')) ||
        /(^|\/)(test|tests|__tests__|bench|node_modules)\//.test(path) ||
        /\.(test|spec)\.[cm]?[jt]s$/.test(path) ||
        /tsconfig[^/]*\.json$/.test(path),
    );
    expect(strays).toEqual([]);
    // Both builds carry the same modules.
    const esm = packedFiles.filter((path) => path.startsWith('dist/esm/')).map((path) => path.slice('dist/esm/'.length));
    const cjs = packedFiles.filter((path) => path.startsWith('dist/cjs/')).map((path) => path.slice('dist/cjs/'.length));
    expect(esm).toEqual(cjs);
  });

  it('installs into an empty project as a regular dependency (no link back to this repository)', () => {
    const installed = join(app, 'node_modules', 'keygate');
    expect(existsSync(join(installed, 'dist/esm/index.js'))).toBe(true);
    expect(existsSync(join(installed, 'src'))).toBe(false);
    const manifest = JSON.parse(readFileSync(join(app, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };
    expect(manifest.dependencies.keygate).toMatch(/^file:.*keygate-\d+\.\d+\.\d+.*\.tgz$/);
    for (const dependency of ['bcryptjs', 'ipaddr.js', 'lru-cache', 'express']) {
      expect(existsSync(join(app, 'node_modules', dependency, 'package.json'))).toBe(true);
    }
  });

  it('runs an ES-module consumer: create, verify, and a real HTTP request through authenticate()', () => {
    expect(node('esm.mjs')).toEqual({
      resolved: pathToFileURL(join(app, 'node_modules/keygate/dist/esm/index.js')).href,
      keyPrefix: true,
      verified: true,
      admitted: { status: 200, body: { owner: 'user_esm' } },
      refused: { status: 401, type: expect.stringMatching(/^application\/problem\+json/), code: 'missing_api_key' },
    });
  });

  it('runs a CommonJS consumer: create, verify, and a real HTTP request through authenticate()', () => {
    expect(node('cjs.cjs')).toEqual({
      resolved: join(app, 'node_modules', 'keygate', 'dist', 'cjs', 'index.js'),
      keyPrefix: true,
      verified: true,
      admitted: { status: 200, body: { owner: 'user_cjs' } },
      refused: { status: 401, type: expect.stringMatching(/^application\/problem\+json/), code: 'malformed_api_key' },
    });
  });

  it('type-checks a TypeScript consumer against the installed .d.ts, as ESM and as CommonJS (nodenext)', () => {
    const source = readFileSync(join(consumers, 'consumer.ts'), 'utf8');
    writeFileSync(join(app, 'consumer.mts'), source);
    writeFileSync(join(app, 'consumer.cts'), source);
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'nodenext',
          moduleResolution: 'nodenext',
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: ['node'],
        },
        files: ['consumer.mts', 'consumer.cts'],
      }),
    );
    // The repository's TypeScript; a type error fails `run` with tsc's report.
    const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
    const output = run(process.execPath, [tsc, '-p', 'tsconfig.json', '--listFiles'], app, 90_000);
    // The two files saw the two builds of the package, both from the installed copy.
    const files = output.split(/\r?\n/).filter(Boolean);
    const keygateTypes = files.filter((file) => /node_modules[\\/]keygate[\\/]/.test(file)).map((file) => relative(app, file).split(sep).join('/'));
    expect(keygateTypes).toEqual(
      expect.arrayContaining([
        'node_modules/keygate/dist/esm/index.d.ts',
        'node_modules/keygate/dist/esm/express-augment.d.ts',
        'node_modules/keygate/dist/esm/sql.d.ts',
        'node_modules/keygate/dist/cjs/index.d.ts',
        'node_modules/keygate/dist/cjs/express-augment.d.ts',
        'node_modules/keygate/dist/cjs/sql.d.ts',
      ]),
    );
    expect(files.filter((file) => !resolve(app, file).startsWith(app + sep) && !/[\\/]typescript[\\/]lib[\\/]/.test(file))).toEqual([]);
  });
});
