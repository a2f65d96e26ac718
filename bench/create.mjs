// POST /tasks throughput against a bare Fastify baseline, then a durability check.
//
//   npm run bench:create          (builds first)
//   BENCH_DURATION=10 BENCH_WARMUP=3 BENCH_CONNECTIONS=50 node bench/create.mjs
//
// Both servers run as child processes, one after the other, so autocannon (in this process)
// never shares their event loop and they never compete with each other for CPU.
// Our server runs with synchronous=FULL (the default): every 201 has been fsync'ed.
// After its run the server is SIGKILLed and the SQLite file must hold exactly one row per
// 2xx response counted (warm-up included): durable=yes.
import { mkdtempSync, rmSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { envNumber, fmt, freePort, fsyncProbe, measure, startNode, stopChild, table, waitForHttp } from './lib.mjs';

const DURATION = envNumber('BENCH_DURATION', 10);
const WARMUP = envNumber('BENCH_WARMUP', 3);
const CONNECTIONS = envNumber('BENCH_CONNECTIONS', 50);
const SYNC = process.env.BENCH_SQLITE_SYNCHRONOUS ?? 'FULL';
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

async function bench(label, url, serverPid) {
  const common = { url, method: 'POST', body: BODY, headers: HEADERS, connections: CONNECTIONS, serverPid };
  const warm = await measure({ ...common, durationS: WARMUP, title: `${label} warm-up` });
  const run = await measure({ ...common, durationS: DURATION, title: label });
  return { warm, run };
}

console.log(`bench:create  connections=${CONNECTIONS} duration=${DURATION}s warmup=${WARMUP}s synchronous=${SYNC}`);
console.log(`body: ${BODY}`);
const probe = fsyncProbe(dir);
console.log(`disk: fdatasync of 4 KiB in ${dir}: p50 ${fmt(probe.p50, 3)} ms, p99 ${fmt(probe.p99, 3)} ms; load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);

// (a) The service: fresh database, no rate limit, no embedded worker, no logs.
const ourPort = await freePort();
const ours = startNode('task-manager', ['dist/cli/main.js', 'serve'], {
  PORT: String(ourPort),
  HOST: '127.0.0.1',
  DATABASE_URL: `sqlite:${dbPath}`,
  TASK_MANAGER_RATE_LIMIT: 'false',
  TASK_MANAGER_EMBEDDED_WORKER: 'false',
  TASK_MANAGER_LOG_LEVEL: 'silent',
  TASK_MANAGER_SQLITE_SYNCHRONOUS: SYNC,
});
children.add(ours);
await waitForHttp(`http://127.0.0.1:${ourPort}/health`, ours);
const our = await bench('task-manager POST /tasks', `http://127.0.0.1:${ourPort}/tasks`, ours.pid);

// Durability: kill -9 with no shutdown, then count what the file holds.
ours.kill('SIGKILL');
const exit = await ours.exited;
children.delete(ours);
const db = new Database(dbPath);
const rows = db.prepare('SELECT count(*) AS n FROM tasks').get().n;
const counted = db.prepare("SELECT coalesce(sum(current), 0) AS n FROM task_counts WHERE status = 'pending'").get().n;
const integrity = db.pragma('quick_check', { simple: true });
db.close();
const acked = our.warm.ok2xx + our.run.ok2xx;
const sent = our.warm.sent + our.run.sent;
const durable = rows === acked && counted === rows && integrity === 'ok';

// (b) The baseline.
const barePort = await freePort();
const bareChild = startNode('bare', ['bench/bare-server.mjs'], { PORT: String(barePort) });
children.add(bareChild);
await waitForHttp(`http://127.0.0.1:${barePort}/`, bareChild);
const bare = await bench('bare fastify POST /tasks', `http://127.0.0.1:${barePort}/tasks`, bareChild.pid);
await stopChild(bareChild);
children.delete(bareChild);

const all = [our.warm, our.run, bare.warm, bare.run];
console.log();
console.log(
  table(all, [
    ['run', (r) => r.title],
    ['secs', (r) => fmt(r.elapsedS, 2)],
    ['sent', (r) => r.sent],
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
    ['machine busy%', (r) => fmt(r.machineBusyPct, 0)],
    ['steal%', (r) => fmt(r.stealPct, 1)],
  ]),
);
for (const r of all) {
  const odd = Object.keys(r.statusCodes).filter((c) => !c.startsWith('2'));
  if (r.stealPct > 2) console.log(`  ${r.title}: ${fmt(r.stealPct, 1)}% of machine CPU was stolen by the hypervisor during this run; figures are suspect`);
  if (odd.length || r.errors || r.timeouts) console.log(`  ${r.title}: status codes ${JSON.stringify(r.statusCodes)} errors=${r.errors} timeouts=${r.timeouts}`);
}
console.log();
console.log(`durability: server killed with ${exit.signal ?? `exit ${exit.code}`}; requests sent=${sent}, 2xx counted=${acked}, rows in tasks=${rows}, pending in task_counts=${counted}, quick_check=${integrity}`);
console.log(`durable=${durable ? 'yes' : 'no'}`);

const ratio = our.run.rps / bare.run.rps;
console.log(`create_rps=${Math.round(our.run.rps)} bare_rps=${Math.round(bare.run.rps)} ratio=${ratio.toFixed(2)} p99_ms=${fmt(our.run.latency.p99, 0)}`);
process.exitCode = durable ? 0 : 1;
