// List and health latency with 1,000,000 tasks (default) on PostgreSQL: bulk-loads a fresh
// schema (triggers off during the load, counters rebuilt after, as an import would), starts
// a node on it and measures the same reads as bench/read-at-scale.mjs.
// Ends with: pg_tasks=N list_pending_p99_ms=N list_all_p99_ms=N health_p99_ms=N
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { ROOT, envNumber, freePort, measure, rssMiB, startNode, stopChild, waitForHttp, waitForQuiet, SERVER_NODE_FLAGS } from './lib.mjs';

const { PostgresTaskStore } = await import(`${ROOT}dist/store/postgres/postgres-store.js`);
const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const N = envNumber('BENCH_TASKS', 1_000_000);
const DURATION = envNumber('BENCH_DURATION', 10);
const CONNECTIONS = envNumber('BENCH_CONNECTIONS', 10);
const schema = `bench_read_${randomBytes(4).toString('hex')}`;

const store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 2 });
await store.close();
const db = new pg.Client({ connectionString: PG_URL, options: `-c search_path=${schema}` });
await db.connect();
let server;
try {
  const t0 = performance.now();
  await db.query('ALTER TABLE tasks DISABLE TRIGGER USER');
  // 60% completed, 20% pending, 10% failed, 5% cancelled, 5% running; four models; ids time-ordered.
  await db.query(
    `INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority, attempts, max_attempts, timeout_ms,
                        created_at, started_at, completed_at, updated_at, worker_id, result)
     SELECT 'task_' || lpad(to_hex(1700000000000 + g), 12, '0') || '-7000-7000-8000-' || lpad(to_hex(g), 12, '0'),
            s.status, m.task_type, m.model_name, '{"prompt":"hello"}', '{}', 0, 1, 3, 600000,
            1700000000000 + g, CASE WHEN s.status <> 'pending' THEN 1700000000000 + g + 5 END,
            CASE WHEN s.status IN ('completed', 'failed', 'cancelled') THEN 1700000000000 + g + 900 END,
            1700000000000 + g, CASE WHEN s.status <> 'pending' THEN 'worker_bench' END,
            CASE WHEN s.status = 'completed' THEN '{"generated_text":"ok"}'::jsonb END
       FROM generate_series(1, $1) AS g
       CROSS JOIN LATERAL (SELECT CASE WHEN g % 20 < 12 THEN 'completed' WHEN g % 20 < 16 THEN 'pending' WHEN g % 20 < 18 THEN 'failed'
                                       WHEN g % 20 < 19 THEN 'cancelled' ELSE 'running' END AS status) s
       CROSS JOIN LATERAL (SELECT (ARRAY['text_generation','text_to_speech','image_to_text','image_generation'])[1 + g % 4] AS task_type,
                                  (ARRAY['tiny-llama','espeak-ng','tesseract-eng','stable-diffusion-v1-5'])[1 + g % 4] AS model_name) m`,
    [N],
  );
  await db.query(`INSERT INTO task_counts (task_type, model_name, status, shard, current, total)
                  SELECT task_type, model_name, status, 0, count(*), count(*) FROM tasks GROUP BY 1, 2, 3`);
  await db.query('ALTER TABLE tasks ENABLE TRIGGER USER');
  await db.query('ANALYZE tasks');
  console.log(`loaded ${N} tasks into ${schema} in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  server = startNode('server', [...SERVER_NODE_FLAGS, 'dist/cli/main.js', 'serve'], {
    PORT: String(port),
    DATABASE_URL: PG_URL,
    TASK_MANAGER_PG_SCHEMA: schema,
    TASK_MANAGER_RATE_LIMIT: 'false',
    TASK_MANAGER_EMBEDDED_WORKER: 'false',
    TASK_MANAGER_LOG_LEVEL: 'warn',
  });
  await waitForHttp(`${url}/health`, server, 60_000);
  const health = await (await fetch(`${url}/health`)).json();
  console.log(`health counts: pending ${health.pending_tasks}, completed ${health.completed_tasks}, failed ${health.failed_tasks}`);
  const quiet = await waitForQuiet();
  console.log(`machine quiet before runs: ${quiet.quiet}`);
  const results = {};
  for (const [name, path] of [
    ['list_pending', '/tasks?status=pending&limit=50'],
    ['list_all', '/tasks?limit=50'],
    ['list_model', '/tasks?model_name=espeak-ng&limit=50'],
    ['health', '/health'],
  ]) {
    const r = await measure({ url: `${url}${path}`, connections: CONNECTIONS, durationS: DURATION, title: name, serverPid: server.pid });
    results[name] = r;
    console.log(`${name.padEnd(14)} ${path.padEnd(36)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.latency.p50} ms  p99 ${r.latency.p99} ms  (${r.non2xx} non-2xx)`);
  }
  console.log(`server RSS: ${rssMiB(server.pid).toFixed(0)} MiB`);
  console.log(
    `pg_tasks=${N} list_pending_p99_ms=${results.list_pending.latency.p99} list_all_p99_ms=${results.list_all.latency.p99} health_p99_ms=${results.health.latency.p99}`,
  );
} finally {
  if (server) await stopChild(server);
  await db.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
  await db.end();
}
