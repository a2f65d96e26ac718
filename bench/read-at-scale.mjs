// Read latency with a large SQLite database: builds N tasks (default 1,000,000), starts the
// server on the file as a child process, and measures list and health endpoints.
//
//   npm run bench:read            (builds first)
//   BENCH_TASKS=1000000 BENCH_DURATION=10 BENCH_WARMUP=2 BENCH_CONNECTIONS=10 node bench/read-at-scale.mjs
//
// The database is built fast: SqliteTaskStore.open creates the schema (migrations, indexes,
// triggers), then rows go in with better-sqlite3 directly in large transactions (the schema's
// own triggers on `tasks` fire as usual), and `task_counts` is rebuilt from the rows.
// Status mix: 60% completed, 20% pending, 10% failed, 5% cancelled, 5% running, spread over
// 30 days, four catalog models (all four task types).
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import Database from 'better-sqlite3';
import { newTaskId } from '../dist/core/ids.js';
import { SUMMARY_COLUMNS } from '../dist/store/rows.js';
import { SqliteTaskStore, sqliteListOrder } from '../dist/store/sqlite/sqlite-store.js';
import { envNumber, fmt, freePort, measure, waitForQuiet, ROOT, rssMiB, startNode, stopChild, table, waitForHttp, SERVER_NODE_FLAGS } from './lib.mjs';

const TASKS = envNumber('BENCH_TASKS', 1_000_000);
const DURATION = envNumber('BENCH_DURATION', 10);
const WARMUP = envNumber('BENCH_WARMUP', 2);
const CONNECTIONS = envNumber('BENCH_CONNECTIONS', 10);
const RETRIES = Math.floor(envNumber('BENCH_RETRIES', 2, { allowZero: true }));
const MAX_OTHER_PCT = envNumber('BENCH_MAX_OTHER_PCT', 10);
const BATCH = 50_000;
const DAY = 86_400_000;

const catalog = JSON.parse(readFileSync(join(ROOT, 'config/models.json'), 'utf8')).models;
const MODEL_WEIGHTS = { 'tiny-llama': 0.5, 'stable-diffusion-v1-5': 0.2, 'espeak-ng': 0.15, 'tesseract-eng': 0.15 };
const MODELS = catalog.map((m) => ({ name: m.name, taskType: m.task_type, weight: MODEL_WEIGHTS[m.name] ?? 0.1 }));
const FILTER_MODEL = process.env.BENCH_MODEL ?? 'stable-diffusion-v1-5';
const STATUS_WEIGHTS = [
  ['completed', 0.6],
  ['pending', 0.2],
  ['failed', 0.1],
  ['cancelled', 0.05],
  ['running', 0.05],
];
const RUN_MS = { text_generation: 5_000, image_generation: 20_000, text_to_speech: 2_000, image_to_text: 3_000 };

// BENCH_DB=path reuses a database kept by an earlier run (BENCH_KEEP_DB=1), for diagnostics
// only: its running tasks were started at build time, so after ~10 minutes the lease reaper
// starts failing them (timeouts) and the file changes.
const REUSE = process.env.BENCH_DB && existsSync(process.env.BENCH_DB) ? process.env.BENCH_DB : null;
const dir = REUSE ? null : mkdtempSync(join(tmpdir(), 'bench-read-'));
const dbPath = REUSE ?? join(dir, 'tasks.db');
let server = null;
process.on('exit', () => {
  server?.kill('SIGKILL');
  if (dir && !process.env.BENCH_KEEP_DB) rmSync(dir, { recursive: true, force: true });
});
if (process.env.BENCH_KEEP_DB) console.log(`BENCH_KEEP_DB set: the database stays at ${dbPath}`);
for (const sig of ['SIGINT', 'SIGTERM']) process.once(sig, () => process.exit(130));

// Deterministic data: the same seed gives the same mix every run.
function mulberry32(seed) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(20250530);
const pick = (weighted) => {
  let r = rand();
  for (const [v, w] of weighted) if ((r -= w) < 0) return v;
  return weighted.at(-1)[0];
};
const WORDS = 'the a quick brown fox jumps over lazy dog model prompt image speech cat sky river mountain city light night story write describe explain summarize'.split(' ');
const words = (n) => Array.from({ length: n }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(' ');
const b64 = (n) => Buffer.from(Array.from({ length: Math.ceil((n * 3) / 4) }, () => Math.floor(rand() * 256))).toString('base64').slice(0, n);

function inputFor(taskType) {
  switch (taskType) {
    case 'text_generation':
      return [{ prompt: words(10 + Math.floor(rand() * 30)) }, { max_tokens: 128, temperature: 0.7 }];
    case 'image_generation':
      return [{ prompt: words(8 + Math.floor(rand() * 12)), width: 512, height: 512 }, { steps: 20 }];
    case 'text_to_speech':
      return [{ text: words(10 + Math.floor(rand() * 20)) }, { voice: 'en' }];
    default:
      // A real image would be large; a short placeholder keeps the file size sane.
      return [{ image: `data:image/png;base64,${b64(256)}` }, {}];
  }
}

function resultFor(taskType) {
  switch (taskType) {
    case 'text_generation':
      return { text: words(40), tokens: 40 };
    case 'image_generation':
      return { images: [{ format: 'png', data: b64(256) }] };
    case 'text_to_speech':
      return { audio: { format: 'wav', data: b64(256) } };
    default:
      return { text: words(12) };
  }
}

async function buildDatabase() {
  const t0 = performance.now();
  // Schema, indexes and triggers exactly as the service creates them.
  await SqliteTaskStore.open({ path: dbPath }).close();
  const db = new Database(dbPath);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = OFF'); // bulk load only; the server opens it with its own settings
  db.pragma('cache_size = -262144'); // 256 MiB
  const insert = db.prepare(`INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, priority,
      attempts, max_attempts, timeout_ms, created_at, started_at, completed_at, cancelled_at, updated_at,
      worker_id, lease_token, lease_expires_at, progress, result, error_code, error_message)
    VALUES (@id, @status, @task_type, @model_name, @input_data, @parameters, @priority, @attempts, @max_attempts,
      @timeout_ms, @created_at, @started_at, @completed_at, @cancelled_at, @updated_at, @worker_id, @lease_token,
      @lease_expires_at, @progress, @result, @error_code, @error_message)`);
  const models = MODELS.map((m) => [m, m.weight]);
  const now = Date.now();
  const start = now - 30 * DAY;
  const end = now - 5 * 60_000; // the newest task is 5 minutes old
  const step = (end - start) / TASKS;
  const insertBatch = db.transaction((from, to) => {
    for (let i = from; i < to; i++) {
      const model = pick(models);
      const status = pick(STATUS_WEIGHTS);
      const createdAt = Math.floor(start + i * step + rand() * step);
      const [input, params] = inputFor(model.taskType);
      const run = RUN_MS[model.taskType] * (0.5 + rand());
      const row = {
        id: newTaskId(createdAt),
        status,
        task_type: model.taskType,
        model_name: model.name,
        input_data: JSON.stringify(input),
        parameters: JSON.stringify(params),
        priority: rand() < 0.9 ? 0 : Math.floor(rand() * 10),
        attempts: 0,
        max_attempts: 3,
        timeout_ms: 600_000,
        created_at: createdAt,
        started_at: null,
        completed_at: null,
        cancelled_at: null,
        updated_at: createdAt,
        worker_id: null,
        lease_token: null,
        lease_expires_at: null,
        progress: null,
        result: null,
        error_code: null,
        error_message: null,
      };
      const startedAt = createdAt + Math.floor(100 + rand() * 30_000);
      switch (status) {
        case 'completed':
          Object.assign(row, { attempts: 1, started_at: startedAt, completed_at: startedAt + Math.floor(run), worker_id: `worker_${i % 8}`, progress: 1, result: JSON.stringify(resultFor(model.taskType)) });
          row.updated_at = row.completed_at;
          break;
        case 'failed':
          Object.assign(row, { attempts: 3, started_at: startedAt, completed_at: startedAt + Math.floor(run / 2), worker_id: `worker_${i % 8}`, error_code: 'ENGINE_ERROR', error_message: 'Engine failed: out of memory' });
          row.updated_at = row.completed_at;
          break;
        case 'cancelled':
          row.cancelled_at = createdAt + Math.floor(rand() * 60_000);
          row.updated_at = row.cancelled_at;
          break;
        case 'running': {
          // Started within the last minute with a live lease, so the reaper leaves them alone
          // for the length of the benchmark.
          const s = now - Math.floor(rand() * 60_000);
          Object.assign(row, { attempts: 1, started_at: s, updated_at: s, worker_id: `worker_${i % 8}`, lease_token: b64(32), lease_expires_at: now + 3_600_000, progress: rand() });
          break;
        }
      }
      insert.run(row);
    }
  });
  for (let from = 0; from < TASKS; from += BATCH) {
    insertBatch(from, Math.min(TASKS, from + BATCH));
    if (process.stdout.isTTY) process.stdout.write(`  inserted ${Math.min(TASKS, from + BATCH)}\r`);
  }
  if (process.stdout.isTTY) process.stdout.write('\n');
  rebuildCounts(db);
  db.pragma('wal_checkpoint(TRUNCATE)');
  const rows = db.prepare('SELECT count(*) AS n FROM tasks').get().n;
  const counts = db.prepare('SELECT status, sum(current) AS n FROM task_counts GROUP BY status ORDER BY status').all();
  db.close();
  return { rows, counts, seconds: (performance.now() - t0) / 1000, bytes: statSync(dbPath).size };
}

/**
 * The status counters (`task_counts`) that /health, /metrics and list totals read. Schemas up
 * to migration 003 keep them with triggers on `tasks`; from migration 004 on the store adds
 * each group commit's moves itself, so a direct bulk insert leaves them empty. Rebuilding them
 * from the rows is right for both. `total` counts entries into a status: every task entered
 * pending, every started one entered running (cancelled tasks here never started).
 */
function rebuildCounts(db) {
  const rows = db.prepare('SELECT task_type, model_name, status, count(*) AS n FROM tasks GROUP BY 1, 2, 3').all();
  const byModel = new Map();
  for (const r of rows) {
    const k = `${r.task_type}\u0000${r.model_name}`;
    if (!byModel.has(k)) byModel.set(k, { task_type: r.task_type, model_name: r.model_name, n: {} });
    byModel.get(k).n[r.status] = r.n;
  }
  const put = db.prepare('INSERT INTO task_counts (task_type, model_name, status, current, total) VALUES (?, ?, ?, ?, ?)');
  db.transaction(() => {
    db.exec('DELETE FROM task_counts');
    for (const { task_type, model_name, n } of byModel.values()) {
      const c = (s) => n[s] ?? 0;
      const all = Object.values(n).reduce((a, b) => a + b, 0);
      const totals = {
        pending: all,
        running: c('running') + c('completed') + c('failed'),
        completed: c('completed'),
        failed: c('failed'),
        cancelled: c('cancelled'),
      };
      for (const [status, total] of Object.entries(totals)) if (total > 0) put.run(task_type, model_name, status, c(status), total);
    }
  })();
}

function describeDatabase() {
  const db = new Database(dbPath, { readonly: true });
  const rows = db.prepare('SELECT count(*) AS n FROM tasks').get().n;
  const counts = db.prepare('SELECT status, sum(current) AS n FROM task_counts GROUP BY status ORDER BY status').all();
  db.close();
  console.log(`reusing ${dbPath} (BENCH_DB)`);
  return { rows, counts, seconds: 0, bytes: statSync(dbPath).size };
}

// The SQL SqliteTaskStore.listTasks prepares for these filters (same builders from dist/).
const listSql = (where) =>
  `SELECT ${SUMMARY_COLUMNS} FROM tasks ${where ? `WHERE ${where}` : ''} ORDER BY ${sqliteListOrder(Boolean(where), 'created_at', 'desc')} LIMIT :limit OFFSET :offset`;
const QUERIES = [
  ['list status=pending', listSql('status = :status'), { status: 'pending', limit: 50, offset: 0 }],
  ['list (no filter)', listSql(''), { limit: 50, offset: 0 }],
  [`list model_name=${FILTER_MODEL}`, listSql('model_name = :model_name'), { model_name: FILTER_MODEL, limit: 50, offset: 0 }],
  ['list status+model', listSql('status = :status AND model_name = :model_name'), { status: 'pending', model_name: FILTER_MODEL, limit: 50, offset: 0 }],
  ['list (no filter) offset=500000', listSql(''), { limit: 50, offset: 500_000 }],
  ['list total status=pending', 'SELECT coalesce(sum(current), 0) AS n FROM task_counts WHERE status = :status', { status: 'pending' }],
  ['health counts', 'SELECT task_type, model_name, status, current, total FROM task_counts', {}],
  ['reaper expired_leases', readFileSync(join(ROOT, 'src/store/sqlite/commands/expired_leases.sql'), 'utf8'), { now: Date.now(), limit: 500 }],
  [
    'reaper fail_timed_out (select part)',
    // The subquery of the real statement, so the plan shown is the one the reaper gets.
    /\((SELECT seq FROM tasks[\s\S]*?LIMIT :limit)\)/.exec(readFileSync(join(ROOT, 'src/store/sqlite/commands/fail_timed_out.sql'), 'utf8'))[1],
    { now: Date.now(), grace_ms: 5000, limit: 500 },
  ],
  ['lease_candidates', readFileSync(join(ROOT, 'src/store/sqlite/commands/lease_candidates.sql'), 'utf8'), { model_name: 'tiny-llama', task_type: 'text_generation', limit: 1 }],
];

function explainAndTime() {
  const db = new Database(dbPath, { readonly: true });
  const out = [];
  for (const [name, sql, params] of QUERIES) {
    const stmt = db.prepare(sql);
    const plan = db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(params).map((r) => r.detail);
    stmt.all(params); // warm the page cache
    const times = [];
    for (let i = 0; i < 21; i++) {
      const t = performance.now();
      stmt.all(params);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    out.push({ name, plan, medianMs: times[10], maxMs: times.at(-1) });
  }
  db.close();
  return out;
}

console.log(`load average ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log(`bench:read  tasks=${TASKS} connections=${CONNECTIONS} duration=${DURATION}s warmup=${WARMUP}s model filter=${FILTER_MODEL}`);
const built = REUSE ? describeDatabase() : await buildDatabase();
console.log(
  `built ${built.rows} tasks in ${fmt(built.seconds, 1)} s; file ${fmt(built.bytes / 2 ** 20, 0)} MiB; ` +
    `by status: ${built.counts.map((c) => `${c.status}=${c.n}`).join(' ')}`,
);
if (!REUSE && built.rows !== TASKS) throw new Error(`expected ${TASKS} rows, found ${built.rows}`);

const plans = explainAndTime();
console.log('\nquery plans (EXPLAIN QUERY PLAN) and direct SQLite time, median of 21 (page cache warm):');
for (const p of plans) console.log(`  ${p.name.padEnd(36)} ${fmt(p.medianMs, 3).padStart(8)} ms   ${p.plan.join(' | ')}`);

const port = await freePort();
const t0 = performance.now();
server = startNode('task-manager', [...SERVER_NODE_FLAGS, 'dist/cli/main.js', 'serve'], {
  PORT: String(port),
  HOST: '127.0.0.1',
  DATABASE_URL: `sqlite:${dbPath}`,
  TASK_MANAGER_RATE_LIMIT: 'false',
  TASK_MANAGER_EMBEDDED_WORKER: 'false',
  TASK_MANAGER_LOG_LEVEL: 'silent',
});
const base = `http://127.0.0.1:${port}`;
await waitForHttp(`${base}/health`, server, 120_000);
const startupS = (performance.now() - t0) / 1000;
const rssStart = rssMiB(server.pid);

// Sanity: the endpoints answer what we expect before we time them.
const ENDPOINTS = [
  ['list_pending', '/tasks?status=pending&limit=50'],
  ['list_all', '/tasks?limit=50'],
  ['list_model', `/tasks?model_name=${encodeURIComponent(FILTER_MODEL)}&limit=50`],
  ['health', '/health'],
];
for (const [, path] of ENDPOINTS) {
  const res = await fetch(base + path);
  const body = await res.json();
  if (res.status !== 200) throw new Error(`GET ${path} answered ${res.status}: ${JSON.stringify(body)}`);
  const what = 'tasks' in body ? `total=${body.total} returned=${body.tasks.length}` : `pending=${body.pending_tasks} completed=${body.completed_tasks} active=${body.active_tasks}`;
  console.log(`  GET ${path} -> ${res.status} ${what}`);
}

const results = [];
const notes = [];
for (const [key, path] of ENDPOINTS) {
  for (let attempt = 0; ; attempt++) {
    const q = await waitForQuiet();
    if (!q.quiet) notes.push(`machine still busy (${fmt(q.busyPct, 0)}% of all cores) before ${path}; ran anyway`);
    await measure({ url: base + path, connections: CONNECTIONS, durationS: WARMUP, title: `${key} warm-up` });
    const r = await measure({ url: base + path, connections: CONNECTIONS, durationS: DURATION, title: `GET ${path}`, serverPid: server.pid });
    const why = `other processes used ${fmt(r.otherPct, 0)}% and the hypervisor stole ${fmt(r.stealPct, 0)}% of all cores`;
    if (r.disturbedPct <= MAX_OTHER_PCT || attempt >= RETRIES) {
      if (r.disturbedPct > MAX_OTHER_PCT) notes.push(`GET ${path}: ${why}; reported anyway`);
      results.push({ key, ...r, attempts: attempt + 1 });
      break;
    }
    notes.push(`GET ${path} attempt ${attempt + 1}: ${why}; measured again`);
  }
}
const rssEnd = rssMiB(server.pid);
await stopChild(server);
server = null;

console.log();
console.log(
  table(results, [
    ['endpoint', (r) => r.title],
    ['requests', (r) => r.responses],
    ['non2xx', (r) => r.non2xx + r.errors],
    ['req/s', (r) => fmt(r.rps, 0)],
    ['p50 ms', (r) => fmt(r.latency.p50, 0)],
    ['p90 ms', (r) => fmt(r.latency.p90, 0)],
    ['p99 ms', (r) => fmt(r.latency.p99, 0)],
    ['max ms', (r) => fmt(r.latency.max, 0)],
    ['mean ms', (r) => fmt(r.latency.mean, 2)],
    ['srv CPU%', (r) => fmt(r.serverCpuPct, 0)],
    ['bench CPU%', (r) => fmt(r.benchCpuPct, 0)],
    ['other%', (r) => fmt(r.otherPct, 0)],
    ['steal%', (r) => fmt(r.stealPct, 1)],
  ]),
);
console.log('  (srv CPU% and bench CPU% are of one core; other% is CPU used by anything else and steal% CPU taken by the hypervisor, of all cores)');
for (const n of notes) console.log(`  note: ${n}`);
console.log(`\nserver: ready in ${fmt(startupS, 2)} s; VmRSS ${fmt(rssStart, 0)} MiB after start, ${fmt(rssEnd, 0)} MiB after the runs`);
const p99 = (k) => fmt(results.find((r) => r.key === k).latency.p99, 0);
const bad = results.filter((r) => r.non2xx || r.errors);
if (bad.length) {
  console.log(`anomaly: non-2xx or errors in ${bad.map((r) => r.title).join(', ')}`);
  process.exitCode = 1;
}
console.log(`tasks=${built.rows} list_pending_p99_ms=${p99('list_pending')} list_all_p99_ms=${p99('list_all')} list_model_p99_ms=${p99('list_model')} health_p99_ms=${p99('health')}`);
