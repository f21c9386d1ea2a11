/**
 * Declaration merging: `req.apiKey` and `res.locals.apiKey` are typed as {@link ApiKey} in every
 * Express app that imports keygate, with no cast.
 */
import type { ApiKey } from './types.js';

declare global {
  // eslint-disable-next-line @typescript-eslint/no-namespace
  namespace Express {
    interface Request {
      /** The key that authenticated this request, set by `keys.authenticate()`. */
      apiKey?: ApiKey;
    }
    interface Locals {
      /** The key that authenticated this request, set by `keys.authenticate()`. */
      apiKey?: ApiKey;
    }
  }
}

export {};
