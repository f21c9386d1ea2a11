/** Statistics and the printed / Markdown tables of a benchmark run. */

export function median(values) {
  const sorted = values.filter((value) => Number.isFinite(value)).sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

const int = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

export function fmtInt(value) {
  return Number.isFinite(value) ? int.format(value) : '–';
}

export function fmt(value, digits = 2) {
  return Number.isFinite(value) ? value.toFixed(digits) : '–';
}

export function fmtRatio(value) {
  if (!Number.isFinite(value)) return '–';
  return value >= 0.01 ? value.toFixed(3) : value.toPrecision(2);
}

export function fmtMs(value) {
  if (!Number.isFinite(value)) return '–';
  return value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2);
}

/** autocannon's status code statistics as `{"200":n,…}`. */
export function statusCounts(codes) {
  return JSON.stringify(Object.fromEntries(Object.entries(codes ?? {}).map(([code, { count }]) => [code, count])));
}

function pad(text, width, right) {
  const value = String(text);
  return right ? value.padStart(width) : value.padEnd(width);
}

/** A plain-text table: `columns` = [{ title, right }], rows = arrays of strings. */
export function textTable(columns, rows) {
  const widths = columns.map((column, i) => Math.max(column.title.length, ...rows.map((row) => String(row[i]).length)));
  const line = (cells) => cells.map((cell, i) => pad(cell, widths[i], columns[i].right)).join('  ');
  return [line(columns.map((c) => c.title)), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function markdownTable(columns, rows) {
  const head = `| ${columns.map((c) => c.title).join(' | ')} |`;
  const rule = `| ${columns.map((c) => (c.right ? '---:' : '---')).join(' | ')} |`;
  return [head, rule, ...rows.map((row) => `| ${row.join(' | ')} |`)].join('\n');
}

export const MAIN_COLUMNS = [
  { title: 'server' },
  { title: 'req/s', right: true },
  { title: 'range (rounds)', right: true },
  { title: '× bare', right: true },
  { title: 'p50 ms', right: true },
  { title: 'p99 ms', right: true },
  { title: 'server core busy', right: true },
  { title: 'store calls/req', right: true },
  { title: 'rounds', right: true },
  { title: 'notes' },
];

/** Rows of the main table from aggregated variants. */
export function mainRows(variants) {
  return variants.map((v) => {
    if (v.skip) return [v.name, '–', '–', '–', '–', '–', '–', '–', '0', `skipped: ${v.skip}`];
    return [
      v.name,
      fmtInt(v.rps),
      v.validRounds > 1 ? `${fmtInt(v.rpsMin)}–${fmtInt(v.rpsMax)}` : '',
      fmtRatio(v.ratio),
      fmtMs(v.p50),
      fmtMs(v.p99),
      Number.isFinite(v.serverCoreBusyPct) ? `${v.serverCoreBusyPct.toFixed(0)}%` : '–',
      Number.isFinite(v.storeCallsPerRequest) ? v.storeCallsPerRequest.toFixed(2) : '',
      String(v.validRounds ?? v.rounds.length),
      v.notes.join('; '),
    ];
  });
}
