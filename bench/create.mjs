// POST /tasks throughput against a bare Fastify baseline, then a durability check.
//
//   npm run bench:create          (builds first)
//   npm run bench:create:pg       (the same on PostgreSQL: BENCH_DATABASE_URL, default the local test database)
//   BENCH_DURATION=10 BENCH_SLICES=5 BENCH_WARMUP=3 BENCH_CONNECTIONS=25,50,100,200 BENCH_RETRIES=2 node bench/create.mjs
//   (and BENCH_EQUAL_RATE, BENCH_EQUAL_CONNECTIONS=50, BENCH_EQUAL_DURATION=4, BENCH_EQUAL_ROUNDS=2 for the equal-load runs)
//
// Two child-process servers, so autocannon (in this process) never shares their event loop:
//   (a) the service (`node dist/cli/main.js serve`) on a fresh SQLite file, rate limit off,
//       no embedded worker, silent logs, synchronous=FULL (the default: every 201 is fsync'ed);
//   (b) bench/bare-server.mjs: bare Fastify, one POST route answering {"ok":true}.
// They are never loaded at once. After a warm-up of each, each server gets BENCH_DURATION
// seconds of load at each connection count of BENCH_CONNECTIONS, split into BENCH_SLICES
// rounds; in each round every count runs (a) then (b), same body: a VM's speed drifts by tens
// of percent within a minute, and alternating short slices compares the two at the same
// moments. Throughput is each server's peak: the bare route is CPU-bound from a few dozen connections,
// while a durable create waits for its group's fdatasync, so the service needs more requests
// in flight to keep its event loop busy. The headline compares the two peaks (each at its own
// best connection count); the line per connection count compares them at equal counts. The
// reported ratio is the median of the rounds' ratios; rates and CPU figures are totals.
// Before the slices the script waits for the machine to be quiet; if another process still
// took CPU during a slice (shared machine), the whole series is measured again, up to
// BENCH_RETRIES times, and the last series is reported.
// Then both get the same fixed offered load (BENCH_EQUAL_RATE req/s, default 0.6 of (a)'s peak
// rate; BENCH_EQUAL_ROUNDS alternations of BENCH_EQUAL_DURATION seconds) and the CPU each server
// spends per request is reported, its main thread (the event loop) and all its threads: at a
// fixed connection count throughput also depends on how long a durable answer takes, and this
// line tells the two apart.
// Finally (a) is SIGKILLed and the SQLite file must hold exactly one row per 2xx response
// counted over all of its runs, warm-ups included: durable=yes. With --pg, (a) runs on
// PostgreSQL (a fresh schema, dropped at the end) and the rows are counted there.
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import pg from 'pg';
import { envNumber, fmt, freePort, fsyncProbe, measure, median, postgresCpuSeconds, startNode, stopChild, table, waitForHttp, waitForQuiet, writerFigures, SERVER_NODE_FLAGS } from './lib.mjs';

const DURATION = envNumber('BENCH_DURATION', 10);
const SLICES = Math.max(1, Math.floor(envNumber('BENCH_SLICES', 5)));
const WARMUP = envNumber('BENCH_WARMUP', 3);
const CONNECTIONS = (process.env.BENCH_CONNECTIONS || '25,50,100,200').split(',').map((c) => {
  const n = Number(c);
  if (!Number.isInteger(n) || n < 1) throw new Error(`BENCH_CONNECTIONS must be a comma-separated list of positive integers, got "${process.env.BENCH_CONNECTIONS}"`);
  return n;
});
const EQUAL_CONNECTIONS = envNumber('BENCH_EQUAL_CONNECTIONS', 50);
const RETRIES = Math.floor(envNumber('BENCH_RETRIES', 2, { allowZero: true }));
/** Requests/s offered to each server in the equal-load runs; 0: 0.6 of the service's measured rate. */
const EQUAL_RATE = envNumber('BENCH_EQUAL_RATE', 0, { allowZero: true });
const EQUAL_DURATION = envNumber('BENCH_EQUAL_DURATION', 4);
const EQUAL_ROUNDS = Math.max(1, Math.floor(envNumber('BENCH_EQUAL_ROUNDS', 2)));
/** A measurement during which other processes used (or the hypervisor stole) more than this, in % of all cores, is redone. */
// On PostgreSQL the database server's CPU is part of what is measured, not a disturbance.
const MAX_OTHER_PCT = process.argv.includes('--pg') ? Infinity : envNumber('BENCH_MAX_OTHER_PCT', 10);
const SYNC = process.env.BENCH_SQLITE_SYNCHRONOUS ?? 'FULL';
const PG_URL = process.argv.includes('--pg') ? (process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test') : null;
const PG_SCHEMA = `bench_create_${randomBytes(4).toString('hex')}`;
const BODY = JSON.stringify({ task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'Hello world!' } });
const HEADERS = { 'content-type': 'application/json' };

const dir = mkdtempSync(join(tmpdir(), 'bench-create-'));
const dbPath = join(dir, 'tasks.db');
const children = new Set();
process.on('exit', () => {
  for (const c of children) c.kill('SIGKILL');
  if (!process.env.BENCH_KEEP_DB) rmSync(dir, { recursive: true, force: true });
});
if (process.env.BENCH_KEEP_DB) console.log(`BENCH_KEEP_DB set: the database stays at ${dbPath}`);
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(130));

const notes = [];
/** Warm-ups, then SLICES rounds: each connection count, the service then the bare route. */
async function series(ourUrl, ourPid, bareUrl, barePid) {
  const q = await waitForQuiet();
  if (!q.quiet) notes.push(`machine still busy (${fmt(q.busyPct, 0)}% of all cores) after waiting ${fmt(q.waitedS, 0)} s; ran anyway`);
  const common = { method: 'POST', body: BODY, headers: HEADERS };
  const ourRun = (title, connections, durationS) => measure({ ...common, connections, url: ourUrl, serverPid: ourPid, durationS, title });
  const bareRun = (title, connections, durationS) => measure({ ...common, connections, url: bareUrl, serverPid: barePid, durationS, title });
  const top = Math.max(...CONNECTIONS);
  const warm = { our: await ourRun('task-manager warm-up', top, WARMUP), bare: await bareRun('bare fastify warm-up', top, WARMUP) };
  /** runs.get(c)[i]: round i at c connections. */
  const runs = new Map(CONNECTIONS.map((c) => [c, []]));
  for (let i = 1; i <= SLICES; i++) {
    for (const c of CONNECTIONS) {
      const our = await ourRun(`task-manager c=${c} slice ${i}`, c, DURATION / SLICES);
      const bare = await bareRun(`bare fastify c=${c} slice ${i}`, c, DURATION / SLICES);
      runs.get(c).push({ our, bare });
    }
  }
  return { warm, runs };
}

/** The slices of one server as one run: totals, and the worst slice's latency percentiles. */
function combine(title, runs) {
  const sum = (f) => runs.reduce((n, r) => n + f(r), 0);
  const elapsedS = sum((r) => r.elapsedS);
  const answered = sum((r) => r.responses);
  const worst = (f) => Math.max(...runs.map(f));
  return {
    title,
    elapsedS,
    ok2xx: sum((r) => r.ok2xx),
    non2xx: sum((r) => r.non2xx),
    errors: sum((r) => r.errors),
    rps: sum((r) => r.ok2xx) / elapsedS,
    latency: { p50: worst((r) => r.latency.p50), p90: worst((r) => r.latency.p90), p99: worst((r) => r.latency.p99), max: worst((r) => r.latency.max) },
    serverCpuPct: sum((r) => (r.serverCpuPct * r.elapsedS) / 100) / elapsedS * 100,
    serverCpuUsPerReq: sum((r) => r.serverCpuUsPerReq * r.responses) / Math.max(1, answered),
    serverMainCpuPct: sum((r) => (r.serverMainCpuPct * r.elapsedS) / 100) / elapsedS * 100,
    serverMainCpuUsPerReq: sum((r) => r.serverMainCpuUsPerReq * r.responses) / Math.max(1, answered),
    benchCpuPct: sum((r) => (r.benchCpuPct * r.elapsedS) / 100) / elapsedS * 100,
    otherPct: sum((r) => r.otherPct * r.elapsedS) / elapsedS,
    stealPct: sum((r) => r.stealPct * r.elapsedS) / elapsedS,
    statusCodes: {},
  };
}

const storeName = PG_URL ? `postgresql (${PG_URL.replace(/\/\/[^@/]*@/, '//')}, schema ${PG_SCHEMA})` : `sqlite synchronous=${SYNC}`;
console.log(`bench:create  connections=${CONNECTIONS} duration=${DURATION}s in ${SLICES} alternating slices, warmup=${WARMUP}s store=${storeName}`);
console.log(`body: ${BODY}`);
const probe = fsyncProbe(dir);
console.log(`disk: fdatasync of 4 KiB in ${dir}: p50 ${fmt(probe.p50, 3)} ms, p99 ${fmt(probe.p99, 3)} ms; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);

// (a) The service: fresh database, no rate limit, no embedded worker, no logs.
const ourPort = await freePort();
const ours = startNode('task-manager', [...SERVER_NODE_FLAGS, 'dist/cli/main.js', 'serve'], {
  PORT: String(ourPort),
  HOST: '127.0.0.1',
  DATABASE_URL: PG_URL ?? `sqlite:${dbPath}`,
  TASK_MANAGER_RATE_LIMIT: 'false',
  TASK_MANAGER_EMBEDDED_WORKER: 'false',
  TASK_MANAGER_LOG_LEVEL: 'silent',
  ...(PG_URL ? { TASK_MANAGER_PG_SCHEMA: PG_SCHEMA } : { TASK_MANAGER_SQLITE_SYNCHRONOUS: SYNC }),
});
children.add(ours);
// (b) The baseline. It idles (no timers) while (a) is measured, and the other way round.
const barePort = await freePort();
const bareChild = startNode('bare', ['bench/bare-server.mjs'], { PORT: String(barePort) });
children.add(bareChild);
await waitForHttp(`http://127.0.0.1:${ourPort}/health`, ours);
await waitForHttp(`http://127.0.0.1:${barePort}/`, bareChild);

const attempts = [];
for (let attempt = 0; ; attempt++) {
  const run = await series(`http://127.0.0.1:${ourPort}/tasks`, ours.pid, `http://127.0.0.1:${barePort}/tasks`, bareChild.pid);
  attempts.push(run);
  const busy = [...run.runs.values()].flat().flatMap((p) => [p.our, p.bare]).filter((r) => r.disturbedPct > MAX_OTHER_PCT);
  if (!busy.length) break;
  const why = busy
    .map((r) => `${r.title}: other processes used ${fmt(r.otherPct, 0)}% and the hypervisor stole ${fmt(r.stealPct, 0)}% of all cores`)
    .join('; ');
  if (attempt >= RETRIES) {
    notes.push(`last series still contaminated (${why}); reported anyway`);
    break;
  }
  notes.push(`series ${attempt + 1} contaminated (${why}); measuring again`);
}
const last = attempts.at(-1);
// Per connection count: each server's totals over its slices.
const perCount = CONNECTIONS.map((c) => {
  const rs = last.runs.get(c);
  return {
    c,
    rs,
    our: combine(`task-manager POST /tasks, ${c} connections`, rs.map((p) => p.our)),
    bare: combine(`bare fastify POST /tasks, ${c} connections`, rs.map((p) => p.bare)),
    ratios: rs.map((p) => p.our.rps / p.bare.rps),
  };
});
const best = (side) => perCount.reduce((a, b) => (b[side].rps > a[side].rps ? b : a));
const ourPeak = best('our');
const barePeak = best('bare');
const our = ourPeak.our;
const bare = barePeak.bare;
// Round by round, the service at its peak count against the bare route at its own.
const ratios = ourPeak.rs.map((p, i) => p.our.rps / barePeak.rs[i].bare.rps);

// CPU per request at the same offered load: throughput at a fixed connection count mixes CPU
// cost with the durable answer's latency (commit, fdatasync, two thread hops); this separates them.
const equalRate = EQUAL_RATE || Math.max(1000, Math.round((0.6 * our.rps) / 1000) * 1000);
const equal = { our: [], bare: [] };
// On PostgreSQL the database's CPU is part of a create's cost too (every postgres process here).
let equalPgCpuS = 0;
for (let i = 1; i <= EQUAL_ROUNDS; i++) {
  const common = { method: 'POST', body: BODY, headers: HEADERS, connections: EQUAL_CONNECTIONS, durationS: EQUAL_DURATION, overallRate: equalRate };
  const pg0 = PG_URL ? postgresCpuSeconds() : 0;
  equal.our.push(await measure({ ...common, url: `http://127.0.0.1:${ourPort}/tasks`, serverPid: ours.pid, title: `task-manager at ${equalRate} req/s, ${i}` }));
  if (PG_URL) equalPgCpuS += postgresCpuSeconds() - pg0;
  equal.bare.push(await measure({ ...common, url: `http://127.0.0.1:${barePort}/tasks`, serverPid: bareChild.pid, title: `bare fastify at ${equalRate} req/s, ${i}` }));
}
const perReq = (runs, f) => runs.reduce((n, r) => n + f(r) * r.responses, 0) / Math.max(1, runs.reduce((n, r) => n + r.responses, 0));
const equalFig = {
  ourMain: perReq(equal.our, (r) => r.serverMainCpuUsPerReq),
  ourAll: perReq(equal.our, (r) => r.serverCpuUsPerReq),
  bareMain: perReq(equal.bare, (r) => r.serverMainCpuUsPerReq),
  bareAll: perReq(equal.bare, (r) => r.serverCpuUsPerReq),
  rps: (runs) => runs.reduce((n, r) => n + r.ok2xx, 0) / runs.reduce((n, r) => n + r.elapsedS, 0),
};

// Where a create's time went on this disk, as the service itself reports it (all runs).
await new Promise((r) => setTimeout(r, 1100)); // the writer reports once a second
const writer = await writerFigures(`http://127.0.0.1:${ourPort}`).catch((err) => `writer: /metrics unreadable (${err.message})`);

// Durability: kill -9 with no shutdown, then count what the file holds.
const diedEarly = ours.exitCode !== null || ours.signalCode !== null;
ours.expectedExit = true;
ours.kill('SIGKILL');
const exit = await ours.exited;
if (diedEarly || exit.signal !== 'SIGKILL') {
  notes.push(
    `the service had already exited (${exit.signal ?? `code ${exit.code}`}) before the SIGKILL: something else on this machine ` +
      'signalled it; the row count below then shows a clean shutdown, not a crash',
  );
}
children.delete(ours);
await stopChild(bareChild);
children.delete(bareChild);
let rows;
let counted;
let integrity;
if (PG_URL) {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  try {
    rows = Number((await c.query(`SELECT count(*) AS n FROM "${PG_SCHEMA}".tasks`)).rows[0].n);
    counted = Number((await c.query(`SELECT coalesce(sum(current), 0) AS n FROM "${PG_SCHEMA}".task_counts WHERE status = 'pending'`)).rows[0].n);
    integrity = null; // no file of ours to check: PostgreSQL checks its own pages
  } finally {
    await c.query(`DROP SCHEMA IF EXISTS "${PG_SCHEMA}" CASCADE`);
    await c.end();
  }
} else {
  const db = new Database(dbPath);
  rows = db.prepare('SELECT count(*) AS n FROM tasks').get().n;
  counted = db.prepare("SELECT coalesce(sum(current), 0) AS n FROM task_counts WHERE status = 'pending'").get().n;
  integrity = db.pragma('quick_check', { simple: true });
  db.close();
}
const ourRuns = [...attempts.flatMap((a) => [a.warm.our, ...[...a.runs.values()].flat().map((p) => p.our)]), ...equal.our];
const acked = ourRuns.reduce((n, r) => n + r.ok2xx, 0);
const sent = ourRuns.reduce((n, r) => n + r.sent, 0);
const durable = rows === acked && counted === rows && (PG_URL ? true : integrity === 'ok') && exit.signal === 'SIGKILL';

// Slices of repeated (contaminated) series are listed; of the last one, the totals per count.
const all = attempts.slice(0, -1).flatMap((a, i) =>
  [a.warm.our, a.warm.bare, ...[...a.runs.values()].flat().flatMap((p) => [p.our, p.bare])].map((r) => ({ ...r, title: `#${i + 1} ${r.title}` })),
);
all.push(last.warm.our, last.warm.bare, ...perCount.flatMap((p) => [p.our, p.bare]), ...equal.our.flatMap((r, i) => [r, equal.bare[i]]));
console.log();
console.log(
  table(all, [
    ['run', (r) => r.title],
    ['secs', (r) => fmt(r.elapsedS, 2)],
    ['2xx', (r) => r.ok2xx],
    ['non2xx', (r) => r.non2xx],
    ['errors', (r) => r.errors],
    ['req/s', (r) => fmt(r.rps, 0)],
    ['p50 ms', (r) => fmt(r.latency.p50, 0)],
    ['p90 ms', (r) => fmt(r.latency.p90, 0)],
    ['p99 ms', (r) => fmt(r.latency.p99, 0)],
    ['max ms', (r) => fmt(r.latency.max, 0)],
    ['srv CPU%', (r) => fmt(r.serverCpuPct, 0)],
    ['srv CPU us/req', (r) => fmt(r.serverCpuUsPerReq, 0)],
    ['loop CPU%', (r) => fmt(r.serverMainCpuPct, 0)],
    ['bench CPU%', (r) => fmt(r.benchCpuPct, 0)],
    ['other%', (r) => fmt(r.otherPct, 0)],
    ['steal%', (r) => fmt(r.stealPct, 1)],
  ]),
);
console.log(
  '  (srv CPU%, loop CPU% (the server\'s main thread: its event loop) and bench CPU% are of one core; other% is CPU used by anything else and steal% CPU taken by the hypervisor, of all cores;\n' +
    `   the rows per connection count are totals over ${SLICES} slices, their latency columns the worst slice's)`,
);
for (const r of [...all, ...[...last.runs.values()].flat().flatMap((p) => [p.our, p.bare])]) {
  const odd = Object.keys(r.statusCodes).filter((c) => !c.startsWith('2'));
  if (odd.length || r.errors || r.timeouts) console.log(`  ${r.title}: status codes ${JSON.stringify(r.statusCodes)} errors=${r.errors} timeouts=${r.timeouts}`);
}
for (const n of notes) console.log(`  note: ${n}`);
console.log();
console.log(
  `durability: server killed with ${exit.signal ?? `exit ${exit.code}`}; requests sent=${sent}, 2xx counted=${acked}, ` +
    `rows in tasks=${rows}, pending in task_counts=${counted}${PG_URL ? '' : `, quick_check=${integrity}`}`,
);
console.log(writer);
console.log(`durable=${durable ? 'yes' : 'no'}`);

console.log(
  `equal load, ${equalRate} req/s offered (${fmt(equalFig.rps(equal.our), 0)} and ${fmt(equalFig.rps(equal.bare), 0)} answered): server CPU per request, ` +
    `main thread (event loop) ${fmt(equalFig.ourMain, 1)} us vs bare ${fmt(equalFig.bareMain, 1)} us (bare/ours ${fmt(equalFig.bareMain / equalFig.ourMain, 2)}); ` +
    `all threads ${fmt(equalFig.ourAll, 1)} us vs ${fmt(equalFig.bareAll, 1)} us (${fmt(equalFig.bareAll / equalFig.ourAll, 2)})` +
    (PG_URL ? `; PostgreSQL ${fmt((equalPgCpuS * 1e6) / Math.max(1, equal.our.reduce((n, r) => n + r.responses, 0)), 1)} us per create on top` : ''),
);
// At full load the bare route's event loop is busy all the time; ours also waits while every
// outstanding create is in the writer (commit, fdatasync), which throughput alone does not show.
console.log(
  `full load (each at its peak): event loop busy ${fmt(our.serverMainCpuPct, 0)}% of a core at ${fmt(our.serverMainCpuUsPerReq, 1)} us per create, ` +
    `bare ${fmt(bare.serverMainCpuPct, 0)}% at ${fmt(bare.serverMainCpuUsPerReq, 1)} us per request`,
);
for (const p of perCount) {
  console.log(
    `${String(p.c).padStart(4)} connections: creates ${fmt(p.our.rps, 0)}/s (p99 ${fmt(p.our.latency.p99, 0)} ms, event loop ${fmt(p.our.serverMainCpuPct, 0)}% busy), ` +
      `bare ${fmt(p.bare.rps, 0)}/s (p99 ${fmt(p.bare.latency.p99, 0)} ms, ${fmt(p.bare.serverMainCpuPct, 0)}%): ratio ${median(p.ratios).toFixed(2)} ` +
      `(rounds ${p.ratios.map((r) => r.toFixed(2)).join(' ')})`,
  );
}
console.log(
  `peaks: task-manager at ${ourPeak.c} connections, bare at ${barePeak.c}; round ratios ${ratios.map((r) => r.toFixed(2)).join(' ')}; of the totals: ${(our.rps / bare.rps).toFixed(2)}`,
);
console.log(
  `create_rps=${Math.round(our.rps)} bare_rps=${Math.round(bare.rps)} ratio=${median(ratios).toFixed(2)} p99_ms=${fmt(our.latency.p99, 0)}`,
);
process.exitCode = durable ? 0 : 1;
