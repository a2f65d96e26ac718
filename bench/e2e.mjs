// End-to-end no-op throughput, side by side in one run: create → lease → complete for N
// tasks (default 20,000) through
//   1. our server with its in-process worker (SQLite, synchronous=FULL: every 201 is fsynced),
//   2. our server with a remote worker over HTTP,
//   3. BullMQ on the local Redis, one Worker at concurrency 50,
//   4. the same on a private redis-server with appendonly yes, appendfsync always: every job
//      on disk before Redis answers, as every task of ours is (skipped without redis-server).
// A producer in this process keeps 50 creates in flight (HTTP POST /tasks for us, Queue.add
// for BullMQ) while the workers drain the queue; the clock stops when the last task is done.
// Each system runs twice on the same processes: "cold", the first N tasks of freshly started
// processes (their code not yet optimised by V8: on a 2-core VM our server's first second
// ran at under half its later rate), then, once those are all done, "warm", the next N:
// the rate of a service that has been up for a while. Both are printed; the summary line
// is the warm one.
// Our producer is autocannon over kept-alive connections: the load generator shares the
// machine's cores with the server, and node:http costs about twice its CPU per request
// (76-90 against 36-45 µs here), fetch several times more.
// The four systems repeat BENCH_ROUNDS times (default 3): a VM's speed drifts by tens of
// percent within a minute, so figures are medians over the rounds, and each ratio is the
// median of the ratios taken within a round.
// Ends with a line for the cold runs, then the warm runs' HTTP worker (http_worker_per_s=N
// http_ratio=R) and durable Redis lines, and last:
//   tasks_per_s=N bullmq_per_s=N ratio=R durable=yes|no
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:net';
import readline from 'node:readline';
import autocannon from 'autocannon';
import Database from 'better-sqlite3';
import { Queue } from 'bullmq';
import { ROOT, envNumber, freePort, median, startNode, stopChild, waitForHttp, waitForQuiet, writerFigures, SERVER_NODE_FLAGS } from './lib.mjs';

const N = envNumber('BENCH_TASKS', 20_000);
const INFLIGHT = envNumber('BENCH_INFLIGHT', 50);
const CONCURRENCY = envNumber('BENCH_CONCURRENCY', 50);
const ROUNDS = Math.max(1, Math.floor(envNumber('BENCH_ROUNDS', 3)));
const TOKEN = 'bench-worker-token-0123456789';
const body = JSON.stringify({ task_type: 'text_generation', model_name: 'noop', input_data: { prompt: 'x' } });

async function produce(create) {
  let next = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: INFLIGHT }, async () => {
      while (next < N) {
        next++;
        if (!(await create())) failed++;
      }
    }),
  );
  return failed;
}

/** Sends N creates, INFLIGHT at a time over kept-alive connections; resolves with the number of 201s. */
function postTasks(port) {
  return new Promise((resolve, reject) => {
    autocannon(
      { url: `http://127.0.0.1:${port}/tasks`, method: 'POST', body, headers: { 'content-type': 'application/json' }, connections: INFLIGHT, amount: N, timeout: 30 },
      (err, r) => (err ? reject(err) : resolve(r.statusCodeStats['201']?.count ?? 0)),
    );
  });
}

/** Each `done <epoch ms>` line a child prints, in turn: `next()` resolves with the next one. */
function doneLines(lines) {
  const seen = [];
  const waiting = [];
  lines.on('line', (l) => {
    const m = /^done (\d+)$/.exec(l);
    if (!m) return;
    const w = waiting.shift();
    if (w) w(Number(m[1]));
    else seen.push(Number(m[1]));
  });
  return () => (seen.length ? Promise.resolve(seen.shift()) : new Promise((r) => waiting.push(r)));
}

async function ours(dir, mode, round) {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const db = join(dir, `${mode}-${round}.db`);
  const server = startNode(`server-${mode}`, [...SERVER_NODE_FLAGS, 'bench/fixtures/noop-node.mjs'], {
    PORT: String(port),
    DATABASE_URL: `sqlite:${db}`,
    TASK_MANAGER_RATE_LIMIT: 'false',
    TASK_MANAGER_LOG_LEVEL: 'warn',
    TASK_MANAGER_EMBEDDED_WORKER: mode === 'inproc' ? 'true' : 'false',
    TASK_MANAGER_WORKER_CONCURRENCY: String(CONCURRENCY),
    TASK_MANAGER_WORKER_TOKEN: TOKEN,
    DONE_EVERY: String(N),
  }, { stdout: true });
  // The server says each time another N tasks have completed, as BullMQ's worker does.
  const nextDone = doneLines(readline.createInterface({ input: server.stdout }));
  await waitForHttp(`${url}/health`, server);
  let worker = null;
  if (mode === 'http') {
    worker = startNode('worker', ['bench/fixtures/noop-worker.mjs'], { SERVER_URL: url, TASK_MANAGER_WORKER_TOKEN: TOKEN, CONCURRENCY: String(CONCURRENCY), WORKER_ID: 'bench-remote' });
  }
  let acknowledged = 0;
  // The server's done lines mark every Nth completion only while every create was acknowledged.
  let counting = true;
  const phase = async () => {
    const t0 = Date.now();
    const producing = postTasks(port);
    const line = counting ? nextDone() : null;
    let doneAt = line ? await Promise.race([line, producing.then((acked) => (acked === N ? line : null))]) : null;
    const acked = await producing;
    acknowledged += acked;
    if (acked !== N) counting = false;
    // Some creates were refused: the clock stops when every acknowledged task has completed.
    while (doneAt === null) {
      if ((await (await fetch(`${url}/health`)).json()).completed_tasks >= acknowledged) doneAt = Date.now();
      else await new Promise((r) => setTimeout(r, 10));
    }
    const seconds = (doneAt - t0) / 1000;
    return { rate: acked / seconds, seconds, failed: N - acked };
  };
  const cold = await phase();
  const warm = await phase();
  if (worker) await stopChild(worker);
  // The clock has stopped: read how the writer's group commits went (it reports once a second).
  await new Promise((r) => setTimeout(r, 1100));
  const writer = await writerFigures(url).catch((err) => `writer: /metrics unreadable (${err.message})`);
  // Durability: kill -9 the server, then every acknowledged task must be on disk, completed.
  await stopChild(server, 'SIGKILL');
  const check = new Database(db, { readonly: true });
  const rows = check.prepare("SELECT count(*) AS n FROM tasks WHERE status = 'completed'").get().n;
  check.close();
  const failed = cold.failed + warm.failed;
  return { cold, warm, failed, durable: rows === acknowledged && failed === 0, writer };
}

/** A private redis-server that fsyncs its append-only file before answering each write. */
async function startDurableRedis(dir) {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--appendonly', 'yes', '--appendfsync', 'always', '--save', '', '--dir', dir], {
    stdio: 'ignore',
  });
  const failed = new Promise((_, reject) => child.once('error', reject));
  for (let i = 0; i < 100; i++) {
    const pong = await Promise.race([failed, ping(port)]).catch((err) => (err.code === 'ENOENT' ? 'missing' : false));
    if (pong === 'missing') return null;
    if (pong) return { port, stop: () => child.kill('SIGTERM') };
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error('redis-server did not answer');
}

function ping(port) {
  return new Promise((resolve) => {
    const s = connect(port, '127.0.0.1');
    s.once('error', () => resolve(false));
    s.once('data', (d) => {
      s.destroy();
      resolve(d.toString().startsWith('+PONG'));
    });
    s.write('PING\r\n');
  });
}

async function bullmq(redisPort = 6379) {
  const name = `bench-${Date.now()}`;
  const worker = spawn(process.execPath, ['bench/fixtures/bullmq-worker.mjs'], {
    cwd: ROOT,
    env: { ...process.env, QUEUE: name, N: String(N), CONCURRENCY: String(CONCURRENCY), REDIS_PORT: String(redisPort) },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = readline.createInterface({ input: worker.stdout });
  const nextDone = doneLines(lines);
  await new Promise((r) => lines.on('line', (l) => l === 'ready' && r()));
  const queue = new Queue(name, { connection: { host: '127.0.0.1', port: redisPort } });
  const phase = async () => {
    const t0 = Date.now();
    const failed = await produce(async () => {
      await queue.add('noop', { prompt: 'x' });
      return true;
    });
    const seconds = ((await nextDone()) - t0) / 1000;
    return { rate: N / seconds, seconds, failed };
  };
  const cold = await phase();
  const warm = await phase();
  worker.kill('SIGTERM');
  await queue.obliterate({ force: true });
  await queue.close();
  return { cold, warm };
}

const list = (xs, f = (x) => x.toFixed(0)) => xs.map(f).join(' ');

const dir = mkdtempSync(join(tmpdir(), 'tm-bench-e2e-'));
try {
  const quiet = await waitForQuiet();
  console.log(
    `machine quiet before run: ${quiet.quiet} (${quiet.busyPct.toFixed(0)}% busy); N=${N}, ${INFLIGHT} creates in flight, worker concurrency ${CONCURRENCY}, ${ROUNDS} round(s)`,
  );
  const aofDir = join(dir, 'redis-aof');
  mkdirSync(aofDir);
  const redis = await startDurableRedis(aofDir);
  const rounds = [];
  try {
    for (let i = 1; i <= ROUNDS; i++) {
      console.log(`round ${i}:`);
      const both = (r, unit) => `${r.cold.rate.toFixed(0)} then ${r.warm.rate.toFixed(0)} ${unit} (${r.cold.seconds.toFixed(2)} s, ${r.warm.seconds.toFixed(2)} s)`;
      const inproc = await ours(dir, 'inproc', i);
      console.log(`  task-manager, in-process worker: ${both(inproc, 'tasks/s')}, ${inproc.failed} refused, durable after kill -9: ${inproc.durable}`);
      console.log(`    ${inproc.writer}`);
      const http = await ours(dir, 'http', i);
      console.log(`  task-manager, remote HTTP worker: ${both(http, 'tasks/s')}, ${http.failed} refused, durable after kill -9: ${http.durable}`);
      const bull = await bullmq();
      console.log(`  BullMQ (Redis, concurrency ${CONCURRENCY}): ${both(bull, 'jobs/s')}`);
      const aof = redis ? await bullmq(redis.port) : null;
      if (aof) console.log(`  BullMQ (Redis with appendfsync always, concurrency ${CONCURRENCY}): ${both(aof, 'jobs/s')}`);
      rounds.push({ inproc, http, bull, aof });
    }
  } finally {
    redis?.stop();
  }
  writeFileSync(join(dir, 'done'), '');
  // Medians over the rounds; each ratio is taken within its round, then the median of those.
  const m = (f) => median(rounds.map(f));
  const durable = rounds.every((r) => r.inproc.durable && r.http.durable);
  const summary = (phase) => {
    const ratios = rounds.map((r) => r.inproc[phase].rate / r.bull[phase].rate);
    if (ROUNDS > 1) {
      console.log(
        `${phase}, per round: in-process ${list(rounds.map((r) => r.inproc[phase].rate))}; HTTP worker ${list(rounds.map((r) => r.http[phase].rate))}; ` +
          `BullMQ ${list(rounds.map((r) => r.bull[phase].rate))}${redis ? `; BullMQ appendfsync always ${list(rounds.map((r) => r.aof[phase].rate))}` : ''}; ` +
          `ratio ${list(ratios, (x) => x.toFixed(2))}`,
      );
    }
    return {
      http: `http_worker_per_s=${m((r) => r.http[phase].rate).toFixed(0)} http_ratio=${m((r) => r.http[phase].rate / r.bull[phase].rate).toFixed(2)}`,
      aof: redis
        ? `bullmq_aof_always_per_s=${m((r) => r.aof[phase].rate).toFixed(0)} ratio_vs_aof_always=${m((r) => r.inproc[phase].rate / r.aof[phase].rate).toFixed(2)}`
        : 'bullmq_aof_always_per_s=skipped (no redis-server)',
      main: `tasks_per_s=${m((r) => r.inproc[phase].rate).toFixed(0)} bullmq_per_s=${m((r) => r.bull[phase].rate).toFixed(0)} ratio=${median(ratios).toFixed(2)}`,
    };
  };
  const cold = summary('cold');
  const warm = summary('warm');
  console.log(
    `cold (each process's first ${N}): ${cold.main} ${cold.http} ${cold.aof}\n` +
      `warm (the next ${N}):\n${warm.http}\n${warm.aof}\n${warm.main} durable=${durable ? 'yes' : 'no'}`,
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
