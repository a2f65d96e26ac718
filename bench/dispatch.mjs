// Dispatch latency on the embedded default (SQLite, in-process worker): from the moment a
// client sends POST /tasks to the moment the engine starts the task, p50/p99, idle (one task
// at a time) and under load (8 clients creating back to back).
// With --remote the engine runs in a worker process of its own (bench/fixtures/noop-worker.mjs,
// 8 slots) that leases over HTTP, and the embedded worker is off.
// Ends with: dispatch_idle_p50_ms=N dispatch_idle_p99_ms=N dispatch_loaded_p50_ms=N dispatch_loaded_p99_ms=N
import { spawn } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import readline from 'node:readline';
import { ROOT, envNumber, freePort, waitForHttp, waitForQuiet, SERVER_NODE_FLAGS } from './lib.mjs';

const SAMPLES = envNumber('BENCH_LATENCY_SAMPLES', 500);
const REMOTE = process.argv.includes('--remote');
const TOKEN = 'bench-dispatch-worker-token-0123456789';
const dir = mkdtempSync(join(tmpdir(), 'tm-bench-dispatch-'));
const port = await freePort();
const node = spawn(process.execPath, [...SERVER_NODE_FLAGS, 'bench/fixtures/timed-node.mjs'], {
  cwd: ROOT,
  env: {
    ...process.env,
    PORT: String(port),
    DATABASE_URL: `sqlite:${join(dir, 'd.db')}`,
    TASK_MANAGER_RATE_LIMIT: 'false',
    TASK_MANAGER_LOG_LEVEL: 'warn',
    TASK_MANAGER_WORKER_CONCURRENCY: '8',
    ...(REMOTE ? { TASK_MANAGER_EMBEDDED_WORKER: 'false', TASK_MANAGER_WORKER_TOKEN: TOKEN } : {}),
  },
  stdio: ['ignore', 'pipe', 'inherit'],
});
node.exited = new Promise((r) => node.once('exit', r));
let worker = null;
const starts = new Map();
const waiters = new Map();
const onLine = (line) => {
  const m = /^start (\S+) ([\d.]+)$/.exec(line);
  if (!m) return;
  starts.set(m[1], Number(m[2]));
  waiters.get(m[1])?.();
};
readline.createInterface({ input: node.stdout }).on('line', onLine);
const url = `http://127.0.0.1:${port}`;
try {
  await waitForHttp(`${url}/health`, node);
  if (REMOTE) {
    worker = spawn(process.execPath, ['bench/fixtures/noop-worker.mjs'], {
      cwd: ROOT,
      env: { ...process.env, SERVER_URL: url, TASK_MANAGER_WORKER_TOKEN: TOKEN, WORKER_ID: 'bench-remote', CONCURRENCY: '8', TIMED: '1' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    worker.exited = new Promise((r) => worker.once('exit', r));
    readline.createInterface({ input: worker.stdout }).on('line', onLine);
  }
  console.log(`dispatch to ${REMOTE ? 'a remote worker process over HTTP (8 slots)' : 'the embedded worker (8 slots)'}`);
  const body = JSON.stringify({ task_type: 'text_generation', model_name: 'noop', input_data: { prompt: 'x' } });
  // node:http with a kept-alive connection: fetch spends about 0.7 ms of its own per request
  // before the request is on the wire, which is the client's latency, not the server's.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 8 });
  const post = () =>
    new Promise((resolve, reject) => {
      const req = http.request(
        { host: '127.0.0.1', port, path: '/tasks', method: 'POST', agent, headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } },
        (res) => {
          const chunks = [];
          res.on('data', (c) => chunks.push(c));
          res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString())));
          res.on('error', reject);
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  const one = async () => {
    const t0 = performance.timeOrigin + performance.now();
    const { task_id } = await post();
    if (!starts.has(task_id)) await new Promise((r) => waiters.set(task_id, r));
    return starts.get(task_id) - t0;
  };
  // To a tenth of a millisecond: both processes stamp with performance.timeOrigin + performance.now().
  const pct = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * p))].toFixed(1);
  for (let i = 0; i < 50; i++) await one();
  const quiet = await waitForQuiet();
  console.log(`machine quiet before run: ${quiet.quiet}`);
  const idle = [];
  for (let i = 0; i < SAMPLES; i++) idle.push(await one());
  const loaded = [];
  await Promise.all(Array.from({ length: 8 }, async () => {
    for (let i = 0; i < SAMPLES / 4; i++) loaded.push(await one());
  }));
  agent.destroy();
  console.log(`POST /tasks → engine start, idle: p50 ${pct(idle, 0.5)} ms, p99 ${pct(idle, 0.99)} ms (${idle.length} tasks one at a time)`);
  console.log(`POST /tasks → engine start, 8 clients: p50 ${pct(loaded, 0.5)} ms, p99 ${pct(loaded, 0.99)} ms (${loaded.length} tasks)`);
  console.log(`dispatch_idle_p50_ms=${pct(idle, 0.5)} dispatch_idle_p99_ms=${pct(idle, 0.99)} dispatch_loaded_p50_ms=${pct(loaded, 0.5)} dispatch_loaded_p99_ms=${pct(loaded, 0.99)}`);
} finally {
  if (worker) {
    worker.kill('SIGTERM');
    await worker.exited;
  }
  node.kill('SIGTERM');
  await node.exited;
  rmSync(dir, { recursive: true, force: true });
}
