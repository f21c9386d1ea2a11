#!/usr/bin/env node
/**
 * The `keygate` executable (package.json `bin`): runs the command line with this process's
 * arguments, environment and streams, and leaves with its exit code once the output is written.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { run } from './main.js';

/** The package's version: dist/<format>/cli/bin.js is three folders below package.json. */
function version(): string | undefined {
  try {
    const script = process.argv[1];
    if (script === undefined) return undefined;
    const manifest = JSON.parse(readFileSync(join(dirname(realpathSync(script)), '..', '..', '..', 'package.json'), 'utf8')) as { name?: unknown; version?: unknown };
    return manifest.name === 'keygate' && typeof manifest.version === 'string' ? manifest.version : undefined;
  } catch {
    return undefined;
  }
}

// `keygate list | head` closes the pipe early: that is not an error worth a stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code !== 'EPIPE') throw error;
  });
}

void run(process.argv.slice(2), process.env, {
  stdout: (text) => void process.stdout.write(text),
  stderr: (text) => void process.stderr.write(text),
}, { version: version() }).then((code) => {
  process.exitCode = code;
});
