/**
 * The mark an admitted request carries, so a later `authenticate()` does not count the request
 * again and scope guards can answer in the style of the `authenticate()` that admitted it.
 */
import type { Request } from 'express';
import type { RefusalStyle } from '../http/respond.js';
import type { CompiledScopes } from '../policy/scopes.js';

/** What an admitted request remembers about its admission. */
export interface AdmissionMark {
  scopes: CompiledScopes;
  style: RefusalStyle;
}

const ADMISSION = Symbol.for('keygate.admission');

type Marked = Request & { [ADMISSION]?: AdmissionMark };

/** Marks a request as admitted. */
export function markAdmitted(req: Request, mark: AdmissionMark): void {
  (req as Marked)[ADMISSION] = mark;
}

/** The admission of a request, if an `authenticate()` admitted it. */
export function admissionOf(req: Request): AdmissionMark | undefined {
  return (req as Marked)[ADMISSION];
}
