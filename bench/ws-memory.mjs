// Server memory with many WebSocket subscribers: RSS of the server process before and after
// 10,000 connections (default) each subscribed to a task, then one update fanned out to all.
// Ends with: ws_subscribers=N rss_idle_mib=N rss_subscribed_mib=N per_subscriber_kib=N fanout_ms=N
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { envNumber, freePort, rssMiB, startNode, stopChild, waitForHttp, SERVER_NODE_FLAGS } from './lib.mjs';

const N = envNumber('BENCH_SUBSCRIBERS', 10_000);
const dir = mkdtempSync(join(tmpdir(), 'tm-bench-ws-'));
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = startNode('server', [...SERVER_NODE_FLAGS, 'dist/cli/main.js', 'serve'], {
  PORT: String(port),
  DATABASE_URL: `sqlite:${join(dir, 'ws.db')}`,
  TASK_MANAGER_RATE_LIMIT: 'false',
  TASK_MANAGER_EMBEDDED_WORKER: 'false',
  TASK_MANAGER_LOG_LEVEL: 'warn',
});
try {
  await waitForHttp(`${url}/health`, server);
  const { task_id } = await (
    await fetch(`${url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'x' } }) })
  ).json();
  await new Promise((r) => setTimeout(r, 500));
  const idle = rssMiB(server.pid);
  const sockets = [];
  let snapshots = 0;
  let updates = 0;
  let resolveAll;
  const allUpdated = new Promise((r) => (resolveAll = r));
  for (let i = 0; i < N; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, N - i) }, () =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(`ws://127.0.0.1:${port}/ws/tasks`);
          ws.on('open', () => ws.send(JSON.stringify({ action: 'subscribe', task_id })));
          ws.on('message', (d) => {
            const m = JSON.parse(d.toString());
            if (m.type === 'snapshot') {
              snapshots++;
              resolve();
            } else if (m.type === 'task.update' && ++updates === N) resolveAll();
          });
          ws.on('error', reject);
          sockets.push(ws);
        }),
      ),
    );
  }
  await new Promise((r) => setTimeout(r, 1000));
  const subscribed = rssMiB(server.pid);
  const t0 = performance.now();
  await fetch(`${url}/tasks/${task_id}`, { method: 'DELETE' });
  await allUpdated;
  const fanoutMs = performance.now() - t0;
  console.log(`server RSS idle: ${idle.toFixed(0)} MiB; with ${snapshots} WebSocket subscribers: ${subscribed.toFixed(0)} MiB`);
  console.log(`one update reached all ${N} subscribers in ${fanoutMs.toFixed(0)} ms`);
  console.log(
    `ws_subscribers=${N} rss_idle_mib=${idle.toFixed(0)} rss_subscribed_mib=${subscribed.toFixed(0)} per_subscriber_kib=${(((subscribed - idle) * 1024) / N).toFixed(1)} fanout_ms=${fanoutMs.toFixed(0)}`,
  );
  for (const ws of sockets) ws.terminate();
} finally {
  await stopChild(server);
  rmSync(dir, { recursive: true, force: true });
}
