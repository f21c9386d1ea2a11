import type { RefusalCode } from '../errors.js';

/** The answer of a pure policy check: admit, or refuse with a code. */
export type PolicyResult = { ok: true } | { ok: false; code: RefusalCode };

/** The shared "admit" answer; policies return it to avoid allocating on the hot path. */
export const ADMIT: PolicyResult = Object.freeze({ ok: true });
