/**
 * A one-time warning for a risky but legal setup: `app.set('trust proxy', true)` makes `req.ip`
 * the left-most `X-Forwarded-For` entry, which any client can write, so allowed-IP checks could be
 * bypassed. Trust exactly your proxies instead (`'loopback'`, a subnet, or a hop count).
 */
import type { Request } from 'express';

/** The warning code, for `process.on('warning')` filters and `--disable-warning`. */
export const TRUST_PROXY_WARNING_CODE = 'KEYGATE_TRUST_PROXY_TRUE';

let warned = false;

/** Emits the warning once per process when the app trusts every proxy. */
export function warnIfTrustingEveryProxy(req: Request): void {
  if (warned) return;
  const setting: unknown = req.app?.get?.('trust proxy');
  if (setting !== true) return;
  warned = true;
  process.emitWarning(
    "Express 'trust proxy' is true: req.ip comes from X-Forwarded-For, which clients can forge, so keys' allowedIps can be bypassed. Set it to your proxies' addresses or hop count.",
    { code: TRUST_PROXY_WARNING_CODE },
  );
}
