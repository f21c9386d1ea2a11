/**
 * Reading a V8 CPU profile (.cpuprofile, what `node --cpu-prof` writes): self and inclusive time
 * per function, per package, and keygate's own functions mapped back to src/*.ts through the
 * build's source maps.
 */
import { readFileSync } from 'node:fs';
import { SourceMap } from 'node:module';
import { fileURLToPath } from 'node:url';

const maps = new Map();

/** `src/…ts:line` for a generated position in keygate's build (through its `.map` file), or null. */
function originalPosition(file, line, column) {
  if (!maps.has(file)) {
    try {
      maps.set(file, new SourceMap(JSON.parse(readFileSync(`${file}.map`, 'utf8'))));
    } catch {
      maps.set(file, null);
    }
  }
  const entry = maps.get(file)?.findEntry(line, column);
  if (!entry?.originalSource) return null;
  const at = entry.originalSource.lastIndexOf('src/');
  return `${at >= 0 ? entry.originalSource.slice(at) : entry.originalSource}:${entry.originalLine + 1}`;
}

/** keygate's runtime dependencies, node internals and native frames: cost charged to their caller. */
const KEYGATE_DEPENDENCIES = new Set(['lru-cache', 'ipaddr.js', 'bcryptjs']);
const NEUTRAL = (pkg) => pkg === 'node (internal)' || pkg === '(native)' || KEYGATE_DEPENDENCIES.has(pkg);

/** Which package a script URL belongs to. */
function packageOf(url, keygateDir) {
  if (!url) return '(native)';
  if (url.startsWith('node:')) return 'node (internal)';
  const path = url.startsWith('file://') ? fileURLToPath(url) : url;
  if (keygateDir && path.startsWith(keygateDir)) return 'keygate';
  const at = path.lastIndexOf('/node_modules/');
  if (at >= 0) {
    const rest = path.slice(at + '/node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (path.includes('/bench/')) return 'bench (server + handler)';
  return path;
}

/**
 * Summarises a profile. `keygateDir` is the folder of the keygate build that ran, so its frames
 * are told apart from everything else.
 */
export function analyseProfile(profile, keygateDir, top = 25) {
  const nodes = new Map(profile.nodes.map((node) => [node.id, node]));
  const parents = new Map();
  for (const node of profile.nodes) for (const child of node.children ?? []) parents.set(child, node.id);
  // Each sample lasts until the next one.
  const weights = profile.timeDeltas.slice(1).concat([0]);
  const keyOf = (frame) => `${frame.functionName || '(anonymous)'}\u0000${frame.url}\u0000${frame.lineNumber}\u0000${frame.columnNumber}`;
  const functions = new Map();
  const entry = (frame) => {
    const key = keyOf(frame);
    let found = functions.get(key);
    if (!found) {
      const pkg = packageOf(frame.url, keygateDir);
      let where = frame.url ? `${frame.url.replace(/^file:\/\//, '').split('/').slice(-2).join('/')}:${frame.lineNumber + 1}` : '';
      if (pkg === 'keygate') {
        const file = frame.url.startsWith('file://') ? fileURLToPath(frame.url) : frame.url;
        where = originalPosition(file, frame.lineNumber, frame.columnNumber) ?? where;
      }
      found = { name: frame.functionName || '(anonymous)', pkg, where, selfUs: 0, totalUs: 0, key: `${frame.functionName || '(anonymous)'} ${pkg} ${where}` };
      functions.set(key, found);
    }
    return found;
  };
  let totalUs = 0;
  let idleUs = 0;
  let keygateOwnUs = 0;
  let unownedUs = 0;
  const byPackage = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const weight = weights[i] ?? 0;
    const node = nodes.get(profile.samples[i]);
    if (!node) continue;
    if (node.callFrame.functionName === '(idle)') {
      idleUs += weight;
      continue;
    }
    totalUs += weight;
    const self = entry(node.callFrame);
    self.selfUs += weight;
    byPackage.set(self.pkg, (byPackage.get(self.pkg) ?? 0) + weight);
    const seen = new Set();
    let owner;
    for (let id = node.id; id !== undefined; id = parents.get(id)) {
      const frame = nodes.get(id).callFrame;
      const key = keyOf(frame);
      const fn = entry(frame);
      // The innermost frame that belongs to keygate or to the app around it (Express, the handler)
      // owns the sample; node internals and keygate's own dependencies belong to whoever called them.
      if (owner === undefined && !NEUTRAL(fn.pkg)) owner = fn.pkg;
      if (seen.has(key)) continue;
      seen.add(key);
      fn.totalUs += weight;
    }
    if (owner === 'keygate') keygateOwnUs += weight;
    else if (owner === undefined) unownedUs += weight;
  }
  const share = (us) => (totalUs > 0 ? (100 * us) / totalUs : 0);
  const row = (f) => ({ name: f.name, pkg: f.pkg, where: f.where, selfPct: share(f.selfUs), totalPct: share(f.totalUs) });
  const all = [...functions.values()];
  const selfByFunction = {};
  for (const f of all) if (f.selfUs > 0) selfByFunction[f.key] = (selfByFunction[f.key] ?? 0) + f.selfUs;
  return {
    busyUs: totalUs,
    keygateOwnUs: keygateOwnUs,
    unownedUs: unownedUs,
    selfUsByPackage: Object.fromEntries(byPackage),
    selfUsByFunction: selfByFunction,
    busyMs: totalUs / 1000,
    idleMs: idleUs / 1000,
    /**
     * Share of busy time spent in keygate's code and in what it calls (node:crypto, lru-cache,
     * ipaddr.js…), not counting the app it hands the request to (next() → Express → handler).
     */
    keygateOwnPct: share(keygateOwnUs),
    /** Samples with no JavaScript owner: GC, (program), native work outside any JS frame. */
    unownedPct: share(unownedUs),
    packages: [...byPackage.entries()].sort((a, b) => b[1] - a[1]).map(([pkg, us]) => ({ pkg, selfPct: share(us) })),
    topSelf: all.sort((a, b) => b.selfUs - a.selfUs).slice(0, top).map(row),
    keygateSelf: all.filter((f) => f.pkg === 'keygate' && f.selfUs > 0).sort((a, b) => b.selfUs - a.selfUs).slice(0, top).map(row),
    keygateTotal: all.filter((f) => f.pkg === 'keygate').sort((a, b) => b.totalUs - a.totalUs).slice(0, top).map(row),
  };
}

/**
 * Per-request CPU of two profiled servers (`base`: bare Express; `subject`: keygate), by package
 * and by function: where the extra microseconds per request go. `requests` = answered requests
 * during each profile window.
 */
export function compareProfiles(base, baseRequests, subject, subjectRequests, top = 20) {
  const per = (us, requests) => us / requests;
  const packages = new Set([...Object.keys(base.selfUsByPackage), ...Object.keys(subject.selfUsByPackage)]);
  const byPackage = [...packages]
    .map((pkg) => {
      const before = per(base.selfUsByPackage[pkg] ?? 0, baseRequests);
      const after = per(subject.selfUsByPackage[pkg] ?? 0, subjectRequests);
      return { pkg, baseUs: before, subjectUs: after, deltaUs: after - before };
    })
    .sort((a, b) => b.deltaUs - a.deltaUs);
  const names = new Set([...Object.keys(base.selfUsByFunction), ...Object.keys(subject.selfUsByFunction)]);
  const byFunction = [...names]
    .map((key) => {
      const before = per(base.selfUsByFunction[key] ?? 0, baseRequests);
      const after = per(subject.selfUsByFunction[key] ?? 0, subjectRequests);
      return { function: key, baseUs: before, subjectUs: after, deltaUs: after - before };
    })
    .sort((a, b) => b.deltaUs - a.deltaUs)
    .slice(0, top);
  return {
    baseUsPerRequest: per(base.busyUs, baseRequests),
    subjectUsPerRequest: per(subject.busyUs, subjectRequests),
    keygateOwnUsPerRequest: per(subject.keygateOwnUs, subjectRequests),
    byPackage,
    byFunction,
  };
}
