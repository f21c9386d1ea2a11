/**
 * A TypeScript consumer of the installed package. test/package/tarball.test.ts copies it into an
 * empty project as `consumer.mts` and `consumer.cts` and type-checks both with `module` and
 * `moduleResolution` `nodenext` and `skipLibCheck: false`, so the `import` and the `require`
 * conditions of the package's `exports` each bring their own `.d.ts` files, and those must
 * compile on their own. The `@ts-expect-error` lines prove the types are real: if `keygate`
 * resolved to `any`, they would be unused and fail the check.
 */
import express, { type NextFunction, type Request, type Response } from 'express';
import {
  KeygateError,
  MemoryStore,
  keygate,
  requireScopes,
  type ApiKey,
  type CreateApiKeyInput,
  type KeygateErrorCode,
  type VerifyResult,
} from 'keygate';
import type { SqlStore } from 'keygate/sql';

const keys = keygate({ store: new MemoryStore(), prefix: 'sk_ts', hashing: 'sha256', pepper: 'consumer-pepper' });

export async function main(): Promise<string> {
  const input: CreateApiKeyInput = { name: 'ts consumer', ownerId: 'user_ts', scopes: ['leads:read'] };
  const { key, apiKey } = await keys.create(input);
  const stored: ApiKey = apiKey;
  const result: VerifyResult = await keys.verify(key, { scopes: ['leads:read'] });
  const code: KeygateErrorCode | null = result.ok ? null : result.error.code;

  const app = express();
  app.use(keys.authenticate());
  app.get('/leads', requireScopes('leads:read'), (req: Request, res: Response) => {
    const owner: string | null | undefined = req.apiKey?.ownerId; // req.apiKey is typed by the package
    res.json({ owner });
  });
  app.use((error: unknown, _req: Request, res: Response, next: NextFunction) => {
    if (error instanceof KeygateError) res.status(error.status).json({ code: error.code });
    else next(error);
  });

  const sqlStore: SqlStore | null = null;
  return JSON.stringify({ id: stored.id, code, sqlStore });
}

/** Never called: each line must fail to type-check. */
export async function wrongUses(): Promise<void> {
  // @ts-expect-error: scopes is a list of strings
  await keys.create({ name: 'wrong', scopes: 'leads:read' });
  // @ts-expect-error: there is no such option
  keygate({ store: new MemoryStore(), prefx: 'sk' });
  // @ts-expect-error: req.apiKey has no such field
  express().get('/typo', (req: Request) => req.apiKey?.ownerID);
}
