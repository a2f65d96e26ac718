// Lease→complete overhead per task with a no-op engine: the in-process worker against a
// remote worker speaking the HTTP protocol to a server in another process. Same machine,
// same run, same SQLite settings (synchronous=FULL). Ends with one summary line:
//   inproc_tasks_per_s=N http_tasks_per_s=N ratio=R (concurrency C, N tasks)
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, envNumber, freePort, startNode, stopChild, waitForHttp, waitForQuiet, SERVER_NODE_FLAGS } from './lib.mjs';

const { loadConfig } = await import(`${ROOT}dist/config.js`);
const { ModelCatalog } = await import(`${ROOT}dist/core/catalog.js`);
const { buildApp } = await import(`${ROOT}dist/server/app.js`);
const { Worker } = await import(`${ROOT}dist/worker/worker.js`);
const { HttpTransport } = await import(`${ROOT}dist/worker/http-transport.js`);

const N = envNumber('BENCH_TASKS', 3000);
const CONCURRENCY = envNumber('BENCH_CONCURRENCY', 16);
const TOKEN = 'bench-worker-token-0123456789';

/** Does nothing: what is left is the queue's own cost per task. */
const noop = { name: 'noop', taskTypes: ['text_generation'], run: async () => ({ result: { ok: true } }) };
const catalogDoc = { models: [{ name: 'noop', task_type: 'text_generation', engine: 'noop' }] };
const task = { task_type: 'text_generation', model_name: 'noop', input_data: { prompt: 'x' } };

async function inProcess(dir) {
  const config = loadConfig({
    DATABASE_URL: `sqlite:${join(dir, 'inproc.db')}`,
    TASK_MANAGER_LOG_LEVEL: 'silent',
    TASK_MANAGER_RATE_LIMIT: 'false',
    TASK_MANAGER_WORKER_CONCURRENCY: String(CONCURRENCY),
  });
  const app = await buildApp({ config, catalog: ModelCatalog.parse(catalogDoc), engines: { noop } });
  const { queue } = app.services;
  for (let i = 0; i < N; i++) await queue.create({ taskType: 'text_generation', modelName: 'noop', inputData: { prompt: 'x' }, parameters: {} });
  let done = 0;
  const finished = new Promise((resolve) => queue.onFinished.add(() => ++done === N && resolve()));
  const t0 = performance.now();
  await app.ready(); // starts the embedded worker
  await finished;
  const seconds = (performance.now() - t0) / 1000;
  await app.close();
  return N / seconds;
}

async function overHttp(dir) {
  const catalog = join(dir, 'models.json');
  writeFileSync(catalog, JSON.stringify(catalogDoc));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const server = startNode('server', [...SERVER_NODE_FLAGS, 'dist/cli/main.js', 'serve'], {
    PORT: String(port),
    DATABASE_URL: `sqlite:${join(dir, 'http.db')}`,
    TASK_MANAGER_MODELS: catalog,
    TASK_MANAGER_EMBEDDED_WORKER: 'false',
    TASK_MANAGER_WORKER_TOKEN: TOKEN,
    TASK_MANAGER_RATE_LIMIT: 'false',
    TASK_MANAGER_LOG_LEVEL: 'warn',
  });
  await waitForHttp(`${url}/health`, server);
  const body = JSON.stringify(task);
  for (let i = 0; i < N; i += 50) {
    await Promise.all(Array.from({ length: Math.min(50, N - i) }, () => fetch(`${url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body }).then((r) => r.arrayBuffer())));
  }
  const worker = new Worker({
    id: 'bench-http-worker',
    transport: new HttpTransport({ serverUrl: url, token: TOKEN }),
    models: [{ taskType: 'text_generation', modelName: 'noop', engine: noop, modelOptions: {} }],
    concurrency: CONCURRENCY,
    heartbeatMs: 10_000,
    leaseWaitMs: 5_000,
  });
  const t0 = performance.now();
  await worker.start();
  for (;;) {
    const h = await (await fetch(`${url}/health`)).json();
    if (h.completed_tasks >= N) break;
    await new Promise((r) => setTimeout(r, 10));
  }
  const seconds = (performance.now() - t0) / 1000;
  await worker.stop(0);
  await stopChild(server);
  return N / seconds;
}

const dir = mkdtempSync(join(tmpdir(), 'tm-bench-worker-'));
try {
  const quiet = await waitForQuiet();
  console.log(`machine quiet before run: ${quiet.quiet} (${quiet.busyPct.toFixed(0)}% busy)`);
  const inproc = await inProcess(dir);
  const http = await overHttp(dir);
  console.log(`tasks=${N} concurrency=${CONCURRENCY}`);
  console.log(`in-process worker: ${inproc.toFixed(0)} tasks/s (${(1000 / inproc).toFixed(3)} ms/task)`);
  console.log(`HTTP worker:       ${http.toFixed(0)} tasks/s (${(1000 / http).toFixed(3)} ms/task)`);
  console.log(`inproc_tasks_per_s=${inproc.toFixed(0)} http_tasks_per_s=${http.toFixed(0)} ratio=${(http / inproc).toFixed(2)}`);
} finally {
  rmSync(dir, { recursive: true, force: true });
}
