/**
 * The observability example runs as its header says, against the built package (as `npx tsx
 * examples/observability.ts` does): its events, usage report, audit trail, verified webhook and
 * `/metrics` lines all appear.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');

describe('examples/observability.ts', () => {
  it('prints the events, the usage by route, the audit trail, one verified webhook and the metrics', () => {
    const run = spawnSync(process.execPath, ['--import', 'tsx', join(ROOT, 'examples/observability.ts')], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(run.stderr).toBe('');
    expect(run.status).toBe(0);
    const out = run.stdout;
    expect(out).toMatch(/event quota\.threshold .*"window":"lifetime","threshold":0\.5,"used":5,"limit":10/);
    expect(out).toMatch(/event request\.refused missing_api_key on \(no route\) by \(no key\)/);
    expect(out).toMatch(/ {2}\/v1\/leads\/:id: 6 requests, error rate 0,/);
    expect(out).toMatch(/ {2}\/v1\/reports: 1 requests, error rate 1,/);
    expect(out).not.toMatch(/\/v1\/leads\/[0-9]/);
    expect(out).toMatch(/key\.created by ops@example\.com[\s\S]*key\.updated by ops@example\.com[\s\S]*key\.revoked by ops@example\.com/);
    expect(out).toMatch(/webhooks verified by the receiver: 1 \{"type":"quota\.threshold"/);
    expect(out).toMatch(/keygate_requests_total\{outcome="admitted"\} 7/);
    expect(out).not.toMatch(/pk_live_[0-9A-Za-z]{16}_[0-9A-Za-z]{20,}/);
  });
});
