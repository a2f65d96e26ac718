// Failure drill: restart the real PostgreSQL server under a create load. While it is down the
// node must answer /health with 503 and creates with 503 SERVICE_UNAVAILABLE; when it is back
// the node must accept again by itself, and every task acknowledged with 201 must be there.
// Needs root and pg_ctlcluster (Debian). Ends with: pg_restart_acked=N missing=N health_503_seen=yes|no recovered=yes|no
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import pg from 'pg';
import { freePort, startNode, stopChild, waitForHttp, SERVER_NODE_FLAGS } from './lib.mjs';

const PG_URL = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const version = readdirSync('/etc/postgresql')[0];
const schema = `drill_${randomBytes(4).toString('hex')}`;
const port = await freePort();
const url = `http://127.0.0.1:${port}`;
const server = startNode('node', [...SERVER_NODE_FLAGS, 'dist/cli/main.js', 'serve'], {
  PORT: String(port),
  DATABASE_URL: PG_URL,
  TASK_MANAGER_PG_SCHEMA: schema,
  TASK_MANAGER_RATE_LIMIT: 'false',
  TASK_MANAGER_EMBEDDED_WORKER: 'false',
  TASK_MANAGER_LOG_LEVEL: 'error',
});
await waitForHttp(`${url}/health`, server);
const body = JSON.stringify({ task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'drill' } });
const acked = new Set();
const statuses = {};
let stop = false;
let health503 = false;
const load = Promise.all(
  Array.from({ length: 8 }, async () => {
    while (!stop) {
      try {
        const res = await fetch(`${url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        statuses[res.status] = (statuses[res.status] ?? 0) + 1;
        const j = await res.json();
        if (res.status === 201) acked.add(j.task_id);
      } catch {
        statuses.network = (statuses.network ?? 0) + 1;
      }
    }
  }),
);
const watcher = (async () => {
  while (!stop) {
    try {
      if ((await fetch(`${url}/health`)).status === 503) health503 = true;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
})();
await new Promise((r) => setTimeout(r, 3000));
const t0 = Date.now();
execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'stop', '-m', 'fast']);
console.log(`PostgreSQL stopped at +${Date.now() - t0} ms`);
await new Promise((r) => setTimeout(r, 3000));
execFileSync('pg_ctlcluster', ['--skip-systemctl-redirect', version, 'main', 'start']);
console.log(`PostgreSQL started again at +${Date.now() - t0} ms`);
let recoveredAt = null;
for (let i = 0; i < 300 && recoveredAt === null; i++) {
  try {
    if ((await fetch(`${url}/health`)).status === 200) recoveredAt = Date.now() - t0;
  } catch {}
  if (recoveredAt === null) await new Promise((r) => setTimeout(r, 100));
}
await new Promise((r) => setTimeout(r, 3000));
stop = true;
await load;
await watcher;
await stopChild(server);
const db = new pg.Client({ connectionString: PG_URL });
await db.connect();
const { rows } = await db.query(`SELECT id FROM "${schema}".tasks`);
const present = new Set(rows.map((r) => r.id));
const missing = [...acked].filter((id) => !present.has(id)).length;
await db.query(`DROP SCHEMA "${schema}" CASCADE`);
await db.end();
console.log(`responses: ${JSON.stringify(statuses)}; health answered 503 during the outage: ${health503}; healthy again at +${recoveredAt} ms`);
console.log(`acknowledged ${acked.size}, rows ${present.size}, missing ${missing}`);
console.log(`pg_restart_acked=${acked.size} missing=${missing} health_503_seen=${health503 ? 'yes' : 'no'} recovered=${recoveredAt !== null ? 'yes' : 'no'}`);
