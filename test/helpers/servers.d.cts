/** Types of servers.cjs: throw-away redis-server and PostgreSQL instances for the tests and the benchmark. */
import type { ChildProcess } from 'node:child_process';

/** How a server is launched: the benchmark pins it to a core. Default: as is. */
export type Wrap = (command: string, args: string[]) => { command: string; args: string[] };

/** The initialised data directory of one PostgreSQL server. */
export interface PostgresCluster {
  readonly bin: string;
  readonly dir: string;
  readonly data: string;
  readonly log: string;
  readonly identity: { uid: number; gid: number } | undefined;
}

/** `127.0.0.1`: every server listens there only. */
export const HOST: string;
export function freePort(): Promise<number>;
export function stopProcess(child: ChildProcess, signal: NodeJS.Signals, options?: { fallbackSignal?: NodeJS.Signals; timeoutMs?: number }): Promise<void>;
export function redisServerBinary(): string | null;
export function spawnRedis(options: { port: number; directory: string; args?: string[]; wrap?: Wrap }): Promise<ChildProcess>;
export function findPostgresBinaries(): string | null;
export function initPostgres(): PostgresCluster;
export function spawnPostgres(cluster: PostgresCluster, options: { port: number; wrap?: Wrap }): Promise<ChildProcess>;
