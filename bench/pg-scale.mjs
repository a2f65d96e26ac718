// PostgreSQL scale-out figures:
//  1. lease→complete throughput with 1, 2 and 4 workers (each its own connection pool, as
//     separate machines would have), no-op engine, every transition committed;
//  2. create→start latency across two nodes: a task created on node A reaches the engine of
//     a worker on node B through LISTEN/NOTIFY; p50/p99 idle and under a create load.
// Ends with: pg_tasks_per_s_w1=N pg_tasks_per_s_w2=N pg_tasks_per_s_w4=N cross_node_p50_ms=N cross_node_p99_ms=N
import { randomBytes } from 'node:crypto';
import readline from 'node:readline';
import pg from 'pg';
import { ROOT, envNumber, freePort, startNode, stopChild, waitForHttp, waitForQuiet, SERVER_NODE_FLAGS } from './lib.mjs';

const { LocalEventBus } = await import(`${ROOT}dist/core/events.js`);
const { PostgresTaskStore } = await import(`${ROOT}dist/store/postgres/postgres-store.js`);
const { TaskQueue } = await import(`${ROOT}dist/scheduler/task-queue.js`);
const { InProcessTransport } = await import(`${ROOT}dist/worker/in-process-transport.js`);
const { Worker } = await import(`${ROOT}dist/worker/worker.js`);

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const N = envNumber('BENCH_TASKS', 4000);
const CONCURRENCY = envNumber('BENCH_CONCURRENCY', 8);
const LATENCY_SAMPLES = envNumber('BENCH_LATENCY_SAMPLES', 300);
const MODEL = { taskType: 'text_generation', modelName: 'noop' };
const noop = { name: 'noop', taskTypes: ['text_generation'], run: async () => ({ result: { ok: true } }) };

async function dropSchema(schema) {
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await c.end();
}

async function throughput(workers) {
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  const opts = { defaultMaxAttempts: 3, defaultTimeoutMs: 60_000, leaseMs: 30_000 };
  const seed = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 8 });
  const seedQueue = new TaskQueue(seed, new LocalEventBus(), opts);
  for (let i = 0; i < N; i += 100) {
    await Promise.all(Array.from({ length: Math.min(100, N - i) }, () => seedQueue.create({ ...MODEL, inputData: { prompt: 'x' }, parameters: {} })));
  }
  const stores = [];
  const running = [];
  for (let w = 0; w < workers; w++) {
    const store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 4 });
    stores.push(store);
    const queue = new TaskQueue(store, new LocalEventBus(), opts);
    running.push(
      new Worker({ id: `w${w}`, transport: new InProcessTransport(queue), models: [{ ...MODEL, engine: noop, modelOptions: {} }], concurrency: CONCURRENCY, heartbeatMs: 10_000, leaseWaitMs: 1000 }),
    );
  }
  const t0 = performance.now();
  await Promise.all(running.map((w) => w.start()));
  for (;;) {
    const rows = await seed.counts();
    const completed = rows.filter((r) => r.status === 'completed').reduce((n, r) => n + r.current, 0);
    if (completed >= N) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  const rate = N / ((performance.now() - t0) / 1000);
  await Promise.all(running.map((w) => w.stop(0)));
  for (const s of [...stores, seed]) await s.close();
  await dropSchema(schema);
  return rate;
}

async function crossNodeLatency() {
  const schema = `bench_${randomBytes(4).toString('hex')}`;
  const env = { DATABASE_URL: PG_URL, TASK_MANAGER_PG_SCHEMA: schema, TASK_MANAGER_RATE_LIMIT: 'false', TASK_MANAGER_LOG_LEVEL: 'warn' };
  const [pa, pb] = [await freePort(), await freePort()];
  const a = startNode('node-a', [...SERVER_NODE_FLAGS, 'bench/fixtures/timed-node.mjs'], { ...env, PORT: String(pa), TASK_MANAGER_EMBEDDED_WORKER: 'false' });
  await waitForHttp(`http://127.0.0.1:${pa}/health`, a);
  const { spawn } = await import('node:child_process');
  const b = spawn(process.execPath, [...SERVER_NODE_FLAGS, 'bench/fixtures/timed-node.mjs'], { cwd: ROOT, env: { ...process.env, ...env, PORT: String(pb), TASK_MANAGER_WORKER_CONCURRENCY: '4' }, stdio: ['ignore', 'pipe', 'inherit'] });
  b.exited = new Promise((r) => b.once('exit', r));
  const starts = new Map();
  const waiters = new Map();
  readline.createInterface({ input: b.stdout }).on('line', (line) => {
    const m = /^start (\S+) ([\d.]+)$/.exec(line);
    if (!m) return;
    starts.set(m[1], Number(m[2]));
    waiters.get(m[1])?.();
  });
  await waitForHttp(`http://127.0.0.1:${pb}/health`, b);
  const body = JSON.stringify({ task_type: 'text_generation', model_name: 'noop', input_data: { prompt: 'x' } });
  const createOnA = async () => {
    const t0 = performance.timeOrigin + performance.now();
    const res = await fetch(`http://127.0.0.1:${pa}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const { task_id } = await res.json();
    if (!starts.has(task_id)) await new Promise((r) => waiters.set(task_id, r));
    return starts.get(task_id) - t0;
  };
  const pct = (xs, p) => Math.round([...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(xs.length * p))]);
  for (let i = 0; i < 20; i++) await createOnA(); // warm-up
  const idle = [];
  for (let i = 0; i < LATENCY_SAMPLES; i++) idle.push(await createOnA());
  // Under load: 8 clients creating back to back, each measuring its own tasks.
  const loaded = [];
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let i = 0; i < LATENCY_SAMPLES / 4; i++) loaded.push(await createOnA());
  }));
  await stopChild(a);
  b.kill('SIGTERM');
  await b.exited;
  await dropSchema(schema);
  return { idle: { p50: pct(idle, 0.5), p99: pct(idle, 0.99) }, loaded: { p50: pct(loaded, 0.5), p99: pct(loaded, 0.99) } };
}

const quiet = await waitForQuiet();
console.log(`machine quiet before run: ${quiet.quiet} (${quiet.busyPct.toFixed(0)}% busy)`);
const rates = {};
for (const w of [1, 2, 4]) {
  rates[w] = await throughput(w);
  console.log(`lease→complete, ${w} worker(s) × concurrency ${CONCURRENCY}: ${rates[w].toFixed(0)} tasks/s`);
}
const lat = await crossNodeLatency();
console.log(`create on A → engine start on B, idle:  p50 ${lat.idle.p50} ms, p99 ${lat.idle.p99} ms (${LATENCY_SAMPLES} tasks, one at a time)`);
console.log(`create on A → engine start on B, loaded: p50 ${lat.loaded.p50} ms, p99 ${lat.loaded.p99} ms (8 concurrent creators)`);
console.log(
  `pg_tasks_per_s_w1=${rates[1].toFixed(0)} pg_tasks_per_s_w2=${rates[2].toFixed(0)} pg_tasks_per_s_w4=${rates[4].toFixed(0)} cross_node_p50_ms=${lat.idle.p50} cross_node_p99_ms=${lat.idle.p99}`,
);
