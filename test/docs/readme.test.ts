/**
 * The README's Quick start, run as written: its TypeScript blocks are taken from README.md,
 * compiled and executed against keygate's sources, and the answers its text promises are checked
 * over HTTP. Editing the Quick start so that it no longer works fails this file.
 */
import { readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import express from 'express';
import request from 'supertest';
import ts from 'typescript';
import * as keygateModule from '../../src/index';
import type { Express } from 'express';

const ROOT = join(__dirname, '..', '..');
const README = readFileSync(join(ROOT, 'README.md'), 'utf8');

/** The fenced blocks of one language in the section under `## <heading>`, in order. */
function blocksOf(heading: string, language: string): string[] {
  const start = README.indexOf(`\n## ${heading}\n`);
  if (start < 0) throw new Error(`README has no section "${heading}"`);
  const end = README.indexOf('\n## ', start + 1);
  const section = README.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(new RegExp('```' + language + '\\n([\\s\\S]*?)```', 'g'))].map((match) => match[1]!);
}

/** Compiles TypeScript to CommonJS and runs it with `keygate` and `express` resolved to ours. */
function run(source: string, scope: Record<string, unknown>): Record<string, unknown> {
  const { outputText } = ts.transpileModule(source, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  const module = { exports: {} as Record<string, unknown> };
  const resolve = (name: string): unknown => {
    if (name === 'keygate') return keygateModule;
    if (name === 'express') return express;
    throw new Error(`the Quick start imports ${name}, which this test does not provide`);
  };
  new Function('require', 'module', 'exports', ...Object.keys(scope), outputText)(resolve, module, module.exports, ...Object.values(scope));
  return module.exports;
}

/** GitHub's anchor for a heading. */
function anchorOf(heading: string): string {
  return heading.toLowerCase().replace(/[^\w\- ]/g, '').replace(/ /g, '-');
}

describe('README Quick start, run as written', () => {
  const [appBlock, createBlock, adminBlock] = blocksOf('Quick start', 'ts');
  let app: Express;
  let keys: keygateModule.Keygate;

  beforeAll(() => {
    expect(appBlock).toContain('app.listen(3000);');
    // Everything but the listen: the test drives the app through supertest instead.
    const exported = run(appBlock!.replace('app.listen(3000);', 'module.exports = { app, keys };'), {});
    app = exported.app as Express;
    keys = exported.keys as keygateModule.Keygate;
  });
  afterAll(() => keys.close());

  async function createdKey(): Promise<{ key: string; apiKey: keygateModule.ApiKey }> {
    const exported = run(`module.exports.created = (async () => {\n${createBlock}\nreturn { key, apiKey };\n})();`, { keys });
    return exported.created as Promise<{ key: string; apiKey: keygateModule.ApiKey }>;
  }

  it('serves /health without a key, and refuses a keyless request below authenticate()', async () => {
    await request(app).get('/health').expect(200, { ok: true });
    const refused = await request(app).get('/leads').expect(401);
    expect(refused.body.code).toBe('missing_api_key');
  });

  it('mints a pk_live key that the routes admit by scope, from either header', async () => {
    const { key, apiKey } = await createdKey();
    expect(key).toMatch(/^pk_live_[0-9A-Za-z]{16}_/);
    expect(apiKey).toMatchObject({ name: 'CRM sync', ownerId: 'user_42', isActive: true, keyPrefix: key.split('_').slice(0, 3).join('_') });
    expect(apiKey).not.toHaveProperty('keyHash');

    await request(app).get('/leads').set('Authorization', `Bearer ${key}`).expect(200, { owner: 'user_42' });
    await request(app).get('/leads').set('X-API-Key', key).expect(200, { owner: 'user_42' });
    await request(app).post('/leads').set('Authorization', `Bearer ${key}`).expect(201);
  });

  it('refuses a route whose scope the key lacks with 403 insufficient_scope, and (a guard) still counts the use', async () => {
    const { key, apiKey } = await createdKey();
    const refused = await request(app).get('/reports').set('Authorization', `Bearer ${key}`).expect(403);
    expect(refused.body.code).toBe('insufficient_scope');
    expect((await keys.get(apiKey.id))?.useCount).toBe(1);
  });

  it('mounts the admin API as shown: an operator key with keys:admin creates keys, another key is refused as problem+json', async () => {
    run(adminBlock!, { app, keys });
    // The operator key as the text above the block describes it.
    expect(README).toContain('the scope `keys:admin` and the scopes it may hand out (say\n`leads:*`');
    const { key: operatorKey } = await keys.create({ name: 'operator', scopes: ['keys:admin', 'leads:*'] });
    const { key: plainKey } = await createdKey();

    // The curl line below the block, as supertest.
    const curl = blocksOf('Quick start', 'sh').find((block) => block.includes('$ADMIN_KEY'))!;
    const body = /-d '([^']*)'/.exec(curl)![1]!;
    const created = await request(app)
      .post('/v1/api-keys')
      .set('Authorization', `Bearer ${operatorKey}`)
      .set('Content-Type', 'application/json')
      .send(body)
      .expect(201);
    expect(created.headers['cache-control']).toBe('no-store');
    expect(created.body.key).toMatch(/^pk_live_/);
    expect(created.body.apiKey).toMatchObject(JSON.parse(body));

    const refused = await request(app).post('/v1/api-keys').set('Authorization', `Bearer ${plainKey}`).send(body).expect(403);
    expect(refused.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(refused.body.code).toBe('insufficient_scope');
  });
});

describe('README links', () => {
  const prose = README.replace(/```[\s\S]*?```/g, '');

  it('every #anchor names a heading of the README', () => {
    const anchors = new Set([...prose.matchAll(/^#+ (.*)$/gm)].map((match) => anchorOf(match[1]!)));
    const links = [...prose.matchAll(/\]\(#([^)]+)\)/g)].map((match) => match[1]!);
    expect(links.length).toBeGreaterThan(10);
    expect(links.filter((link) => !anchors.has(link))).toEqual([]);
  });

  it('every relative link names a file of the repository', () => {
    const files = [...prose.matchAll(/\]\(((?:docs|examples|src|test)\/[^)#]+)/g)].map((match) => match[1]!);
    expect(files.length).toBeGreaterThan(3);
    expect(files.filter((file) => !existsSync(join(ROOT, file)))).toEqual([]);
  });
});
