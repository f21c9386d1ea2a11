/**
 * How the `keygate` command ends: its exit codes, and the one error it throws to end with a
 * message. Every failure is reported as one line on stderr, never a stack trace.
 */

/** The exit codes of `keygate`, documented in the README ("Command line"). */
export const EXIT = {
  /** Done. */
  ok: 0,
  /** The store could not be reached or failed, a driver is missing, or anything unexpected. */
  failure: 1,
  /** Wrong input: an unknown command or option, a bad value, a missing store. Nothing was written. */
  usage: 2,
  /** No key has the id given (`get`, `update`, `revoke`, `rotate`, `delete`). */
  notFound: 3,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** Ends the command with `code` and `message` (one line, printed after `keygate: `). */
export class CliError extends Error {
  constructor(
    readonly exitCode: ExitCode,
    message: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

/** A bad-input error (exit code 2). */
export function usageError(message: string): CliError {
  return new CliError(EXIT.usage, message);
}

/** A store or environment failure (exit code 1). */
export function failure(message: string): CliError {
  return new CliError(EXIT.failure, message);
}

/** Any text on one line: a message from a driver or a library may span several. */
export function oneLine(text: string): string {
  return text.replace(/\s*[\r\n]+\s*/g, ' ').trim();
}

/** The message of anything thrown, on one line. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) {
    // Node's AggregateError (a connection refused on every address of a host) has an empty message.
    if (error.message === '' && error instanceof AggregateError && error.errors.length > 0) return messageOf(error.errors[0]);
    return oneLine(error.message || error.name);
  }
  return oneLine(String(error));
}
