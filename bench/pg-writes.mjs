// What the PostgreSQL store's grouped writes cost the database, measured on the store itself
// (no HTTP), with the CPU of every `postgres` process on this machine read from /proc:
//  1. creates, BENCH_GROUP (25) per turn of the event loop, one group after another;
//  2. lease heartbeats of BENCH_HEARTBEATS (512) running tasks: all in one turn (one
//     statement), then the same heartbeats one per turn (one statement each), alternating.
// Needs PostgreSQL on this machine (its processes are what is measured).
//   npm run build && node bench/pg-writes.mjs
// Ends with: pg_cpu_us_per_create=N creates_per_s=N heartbeats_per_s_one_turn=N heartbeats_per_s_one_each=N
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { ROOT, envNumber, fmt, postgresCpuSeconds, waitForQuiet } from './lib.mjs';

const { PostgresTaskStore } = await import(`${ROOT}dist/store/postgres/postgres-store.js`);
const { newTaskId } = await import(`${ROOT}dist/core/ids.js`);

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const GROUP = envNumber('BENCH_GROUP', 25);
const SECONDS = envNumber('BENCH_DURATION', 5);
const HEARTBEATS = envNumber('BENCH_HEARTBEATS', 512);
const ROUNDS = envNumber('BENCH_ROUNDS', 10);

const task = () => ({
  id: newTaskId(),
  taskType: 'text_generation',
  modelName: 'tiny-llama',
  inputData: { prompt: 'Hello world!' },
  parameters: {},
  priority: 0,
  maxAttempts: 3,
  timeoutMs: 600_000,
  createdAt: Date.now(),
});

const schema = `bench_writes_${randomBytes(4).toString('hex')}`;
const store = await PostgresTaskStore.open({ url: PG_URL, schema });
try {
  await waitForQuiet();
  // 1. Creates.
  for (let i = 0; i < 100; i++) await Promise.all(Array.from({ length: GROUP }, () => store.createTask(task())));
  const cpu0 = postgresCpuSeconds();
  const t0 = performance.now();
  let created = 0;
  while (performance.now() - t0 < SECONDS * 1000) {
    await Promise.all(Array.from({ length: GROUP }, () => store.createTask(task())));
    created += GROUP;
  }
  const createS = (performance.now() - t0) / 1000;
  const cpuPerCreate = ((postgresCpuSeconds() - cpu0) * 1e6) / created;
  const createsPerS = created / createS;
  console.log(`creates: ${created} in groups of ${GROUP}, ${fmt(createsPerS, 0)}/s, PostgreSQL CPU ${fmt(cpuPerCreate, 1)} us per create`);

  // 2. Heartbeats of running tasks.
  const models = [{ taskType: 'text_generation', modelName: 'hb' }];
  await Promise.all(Array.from({ length: HEARTBEATS }, () => store.createTask({ ...task(), modelName: 'hb' })));
  const leased = await store.leaseTasks({ workerId: 'w', models, limit: HEARTBEATS, leaseMs: 60_000, now: Date.now() });
  const beat = (l, i) => store.heartbeat(l.task.id, l.leaseToken, 60_000, Date.now(), i / HEARTBEATS);
  const ways = {
    'one turn': () => Promise.all(leased.map(beat)),
    'one each': async () => {
      const outs = [];
      for (const [i, l] of leased.entries()) outs.push(await beat(l, i));
      return outs;
    },
  };
  const figures = { 'one turn': [], 'one each': [] };
  for (let pass = 0; pass < 2; pass++) {
    for (const [name, run] of Object.entries(ways)) {
      await run();
      const c0 = postgresCpuSeconds();
      const s = performance.now();
      for (let r = 0; r < ROUNDS; r++) {
        const outs = await run();
        if (outs.some((o) => o.kind !== 'ok')) throw new Error(`a heartbeat was refused: ${JSON.stringify(outs.find((o) => o.kind !== 'ok'))}`);
      }
      const ms = (performance.now() - s) / ROUNDS;
      const cpuUs = ((postgresCpuSeconds() - c0) * 1e6) / (ROUNDS * HEARTBEATS);
      figures[name].push((HEARTBEATS / ms) * 1000);
      console.log(`heartbeats, ${name}: ${HEARTBEATS} in ${fmt(ms, 1)} ms (${fmt((HEARTBEATS / ms) * 1000, 0)}/s), PostgreSQL CPU ${fmt(cpuUs, 1)} us per heartbeat`);
    }
  }
  const best = (xs) => Math.max(...xs);
  console.log(
    `pg_cpu_us_per_create=${fmt(cpuPerCreate, 1)} creates_per_s=${fmt(createsPerS, 0)} ` +
      `heartbeats_per_s_one_turn=${fmt(best(figures['one turn']), 0)} heartbeats_per_s_one_each=${fmt(best(figures['one each']), 0)}`,
  );
} finally {
  await store.close();
  const c = new pg.Client({ connectionString: PG_URL });
  await c.connect();
  await c.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await c.end();
}
