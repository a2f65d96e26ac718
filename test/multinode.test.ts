/** Scale-out on PostgreSQL: several nodes, one queue, nothing lost. */
import { createServer, Socket, type Server } from 'node:net';
import { hostname } from 'node:os';
import pg from 'pg';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { newTaskId } from '../src/core/ids.js';
import { newTaskRecord } from '../src/core/task.js';
import { MAX_PAYLOAD, PgEventBus, wirePayload } from '../src/store/postgres/pg-event-bus.js';
import { poolConfig, PostgresTaskStore } from '../src/store/postgres/postgres-store.js';
import { GateEngine } from './helpers/engines.js';
import { dropSchema, PG_URL, uniqueSchema } from './helpers/pg.js';
import { spawnServer, spawnServerOnPort, freePort, type ServerProcess } from './helpers/process.js';
import { json, post, startServer, waitFor, type TestServer } from './helpers/server.js';

const NODE = ['test/fixtures/node.mjs'];
const sleepy = (i: number) => ({ task_type: 'text_generation', model_name: 'sleepy', input_data: { prompt: `task ${i}` } });

function nodeEnv(schema: string, extra: Record<string, string> = {}) {
  return {
    DATABASE_URL: PG_URL,
    TASK_MANAGER_PG_SCHEMA: schema,
    TASK_MANAGER_RATE_LIMIT: 'false',
    TASK_MANAGER_LEASE_SECONDS: '2',
    TASK_MANAGER_REAPER_INTERVAL_MS: '200',
    TASK_MANAGER_SHUTDOWN_GRACE_SECONDS: '0',
    ...extra,
  };
}

describe('two server processes on one PostgreSQL database', () => {
  const schema = uniqueSchema('tmnodes');
  let a: ServerProcess;
  let b: ServerProcess;
  let db: pg.Pool;

  beforeAll(async () => {
    a = await spawnServer(nodeEnv(schema, { RUN_MS: '150', TASK_MANAGER_WORKER_CONCURRENCY: '4' }), 30_000, NODE);
    b = await spawnServer(nodeEnv(schema, { RUN_MS: '150', TASK_MANAGER_WORKER_CONCURRENCY: '4' }), 30_000, NODE);
    db = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${schema}` });
  });
  afterAll(async () => {
    for (const n of [a, b]) if (n && n.child.exitCode === null && n.child.signalCode === null) n.child.kill('SIGKILL');
    await db?.end();
    await dropSchema(schema);
  });

  it('tasks created on both nodes all complete exactly once, even when one node is killed mid-run', async () => {
    const ids: string[] = [];
    const N = 60;
    for (let i = 0; i < N; i++) {
      const node = i % 2 ? a : b;
      const res = await post(`${node.url}/tasks`, sleepy(i));
      expect(res.status).toBe(201);
      ids.push((await json(res)).task_id);
    }
    // Both nodes' workers take part.
    await waitFor(async () => {
      const { rows } = await db.query('SELECT count(DISTINCT pid)::int AS n FROM test_executions');
      return rows[0].n >= 2;
    }, 15_000, 'both nodes executing');
    // Kill node A while it holds running tasks; its leases expire and B retries them.
    await waitFor(async () => {
      const { rows } = await db.query("SELECT count(*)::int AS n FROM tasks WHERE status = 'running' AND worker_id IS NOT NULL");
      return rows[0].n > 0;
    });
    a.child.kill('SIGKILL');
    await a.exited;

    const final = await waitFor(async () => {
      const res = await fetch(`${b.url}/tasks?limit=1000`);
      const body = await json(res);
      return body.tasks.every((t: any) => t.status === 'completed') && body.total === N ? body : null;
    }, 40_000, 'every task completed');
    expect(new Set(final.tasks.map((t: any) => t.task_id))).toEqual(new Set(ids));

    // Exactly once: one transition into completed per task, whatever ran twice.
    const metrics = await (await fetch(`${b.url}/metrics`)).text();
    expect(metrics).toContain(`task_manager_tasks_total{status="completed"} ${N}`);
    const { rows } = await db.query("SELECT count(*)::int AS n FROM tasks WHERE status = 'completed' AND result IS NOT NULL");
    expect(rows[0].n).toBe(N);
    const health = await json(await fetch(`${b.url}/health`));
    expect(health).toMatchObject({ completed_tasks: N, pending_tasks: 0, active_tasks: 0 });
  });
});

describe("a worker's wake across nodes", () => {
  const schema = uniqueSchema('tmwake');
  const TOKEN = 'multinode-worker-token-0123456789';
  const auth = { authorization: `Bearer ${TOKEN}` };
  let a: TestServer;
  let b: TestServer;

  beforeAll(async () => {
    const env = { DATABASE_URL: PG_URL, TASK_MANAGER_PG_SCHEMA: schema, TASK_MANAGER_EMBEDDED_WORKER: 'false', TASK_MANAGER_WORKER_TOKEN: TOKEN, TASK_MANAGER_LEASE_SECONDS: '120' };
    a = await startServer({ env });
    b = await startServer({ env });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await dropSchema(schema);
  });

  it('a wake sent to node A answers the poll waiting on node B; with none waiting, the next poll on B answers at once', async () => {
    const models = [{ task_type: 'text_generation', model_name: 'test-llm' }];
    expect((await post(`${b.url}/workers/register`, { worker_id: 'lb-worker', models, concurrency: 2 }, auth)).status).toBe(200);
    const lease = (url: string, body: object) => post(`${url}/workers/lb-worker/lease`, body, auth).then(json);

    const waiting = lease(b.url, { max_tasks: 1, wait_seconds: 60 });
    await new Promise((r) => setTimeout(r, 300));
    const t0 = Date.now();
    expect(await lease(a.url, { max_tasks: 0, wait_seconds: 0, wake: true })).toEqual({ tasks: [], cancelled: [] });
    expect(await waiting).toEqual({ tasks: [], cancelled: [] });
    expect(Date.now() - t0).toBeLessThan(10_000);

    // The wake arrives before the poll does: the poll still answers at once.
    await lease(a.url, { max_tasks: 0, wait_seconds: 0, wake: true });
    await new Promise((r) => setTimeout(r, 300)); // the NOTIFY reaches B
    const t1 = Date.now();
    expect(await lease(b.url, { max_tasks: 1, wait_seconds: 60 })).toEqual({ tasks: [], cancelled: [] });
    expect(Date.now() - t1).toBeLessThan(10_000);

    // Used up: B's next poll waits for work again, and gets it from a create on A.
    const next = lease(b.url, { max_tasks: 1, wait_seconds: 60 });
    await new Promise((r) => setTimeout(r, 300));
    const created = await json(await post(`${a.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'x' } }));
    expect((await next).tasks.map((t: any) => t.task_id)).toEqual([created.task_id]);
  });
});

describe('cross-node events', () => {
  const schema = uniqueSchema('tmevents');
  let a: TestServer;
  let b: TestServer;
  let engine: GateEngine;

  beforeAll(async () => {
    engine = new GateEngine();
    const env = { DATABASE_URL: PG_URL, TASK_MANAGER_PG_SCHEMA: schema };
    a = await startServer({ env: { ...env, TASK_MANAGER_EMBEDDED_WORKER: 'false' } });
    b = await startServer({ env: { ...env, TASK_MANAGER_WORKER_CONCURRENCY: '4' }, engines: { gate: engine } });
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await dropSchema(schema);
  });

  it('a task created on node A wakes the worker waiting on node B (no polling)', async () => {
    // B's worker is parked in a 30 s long-poll; only a NOTIFY from A can wake it in time.
    await new Promise((r) => setTimeout(r, 200));
    const t = await json(await post(`${a.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'x' } }));
    await engine.started(1, 5_000);
    expect(engine.runs[0].task.id).toBe(t.task_id);
  });

  it('a cancel on node A stops the engine running on node B', async () => {
    const t = await json(await post(`${a.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'cancel me' } }));
    const run = await waitFor(() => engine.runs.find((r) => r.task.id === t.task_id), 5_000, 'run on B');
    const res = await fetch(`${a.url}/tasks/${t.task_id}`, { method: 'DELETE' });
    expect(res.status).toBe(200);
    await waitFor(() => run.abortedAt, 2_000, 'abort on B');
    expect(engine.aborted.find((x) => x.taskId === t.task_id)?.reason).toBe('cancelled');
  });

  it("streamed output too big for one NOTIFY reaches another node's subscribers whole and in order, before the final status", async () => {
    const t = await json(await post(`${a.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'stream' } }));
    const run = await waitFor(() => engine.runs.find((r) => r.task.id === t.task_id), 5_000, 'run on B');
    const ws = new WebSocket(`${a.url.replace('http', 'ws')}/ws/tasks`);
    const messages: any[] = [];
    ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.send(JSON.stringify({ action: 'subscribe', task_id: t.task_id }));
    await waitFor(() => messages.find((m) => m.type === 'snapshot'), 5_000, 'snapshot on A');
    // About 60 KB in one reporting interval: one output event on B, far over NOTIFY's 8,000 bytes.
    const chunks = Array.from({ length: 600 }, (_, i) => `${String(i).padStart(4, '0')}:${'x'.repeat(95)}|`);
    for (const c of chunks) run.ctx.reportOutput!(c);
    // A small event in the same turn, which used to share the failing NOTIFY statement.
    run.ctx.reportProgress(0.5);
    await new Promise((r) => setTimeout(r, 300));
    // More output, then the end: the completion must not overtake the output.
    for (const c of chunks.slice(0, 100)) run.ctx.reportOutput!(`again ${c}`);
    engine.finish(t.task_id, { generated_text: 'done' });
    await waitFor(() => messages.find((m) => m.type === 'task.update' && m.event === 'completed'), 10_000, 'completed on A');
    ws.close();
    const texts = messages.filter((m) => m.type === 'task.output').flatMap((m) => m.events.map((e: any) => e.text ?? ''));
    const done = messages.findIndex((m) => m.type === 'task.update' && m.event === 'completed');
    const lastOutput = messages.map((m) => m.type).lastIndexOf('task.output');
    expect(texts.join('')).toBe(chunks.join('') + chunks.slice(0, 100).map((c) => `again ${c}`).join(''));
    expect(lastOutput).toBeLessThan(done);
  });

  it('rate limits are shared: requests to either node count against one quota', async () => {
    const rlSchema = uniqueSchema('tmrl');
    const env = {
      DATABASE_URL: PG_URL,
      TASK_MANAGER_PG_SCHEMA: rlSchema,
      TASK_MANAGER_RATE_LIMIT: 'true',
      TASK_MANAGER_RATE_LIMIT_BURST: '6',
      TASK_MANAGER_EMBEDDED_WORKER: 'false',
    };
    const x = await startServer({ env });
    const y = await startServer({ env });
    try {
      const statuses = [];
      for (let i = 0; i < 8; i++) statuses.push((await fetch(`${(i % 2 ? x : y).url}/tasks?limit=1`)).status);
      expect(statuses).toEqual([200, 200, 200, 200, 200, 200, 429, 429]);
    } finally {
      await x.close();
      await y.close();
      await dropSchema(rlSchema);
    }
  });
});

/** A TCP relay in front of PostgreSQL that the test can cut and restore. */
async function startRelay(targetPort: number): Promise<{ port: number; cut: () => Promise<void>; restore: () => Promise<void> }> {
  const port = await freePort();
  let server: Server | null = null;
  const sockets = new Set<Socket>();
  const listen = () =>
    new Promise<void>((resolve) => {
      server = createServer((client) => {
        const upstream = new Socket();
        upstream.connect(targetPort, '127.0.0.1');
        sockets.add(client).add(upstream);
        const drop = () => {
          client.destroy();
          upstream.destroy();
          sockets.delete(client);
          sockets.delete(upstream);
        };
        client.on('error', drop).on('close', drop);
        upstream.on('error', drop).on('close', drop);
        client.pipe(upstream).pipe(client);
      });
      server.listen(port, '127.0.0.1', () => resolve());
    });
  await listen();
  return {
    port,
    cut: async () => {
      for (const s of sockets) s.destroy();
      sockets.clear();
      await new Promise<void>((r) => (server ? server.close(() => r()) : r()));
      server = null;
    },
    restore: listen,
  };
}

describe('database outage', () => {
  it('/health is 503 while PostgreSQL is unreachable and recovers by itself; creates answer 503 meanwhile', async () => {
    const schema = uniqueSchema('tmoutage');
    const relay = await startRelay(5432);
    const url = new URL(PG_URL);
    url.port = String(relay.port);
    const srv = await startServer({ env: { DATABASE_URL: url.toString(), TASK_MANAGER_PG_SCHEMA: schema, TASK_MANAGER_EMBEDDED_WORKER: 'false' } });
    try {
      const before = await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'x' } });
      expect(before.status).toBe(201);
      const kept = (await json(before)).task_id;
      await relay.cut();
      const down = await fetch(`${srv.url}/health`);
      expect(down.status).toBe(503);
      expect((await json(down)).status).toBe('unhealthy');
      const refused = await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'x' } });
      expect(refused.status).toBe(503);
      expect((await json(refused)).error.code).toBe('SERVICE_UNAVAILABLE');
      await relay.restore();
      await waitFor(async () => (await fetch(`${srv.url}/health`)).status === 200, 15_000, 'health to recover');
      expect((await fetch(`${srv.url}/tasks/${kept}`)).status).toBe(200);
      expect((await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'y' } })).status).toBe(201);
    } finally {
      await srv.close();
      await relay.cut();
      await dropSchema(schema);
    }
  });
});

describe("each node's in-process worker on PostgreSQL", () => {
  const schema = uniqueSchema('tmembedded');
  const nodes: ServerProcess[] = [];
  let db: pg.Pool;

  beforeAll(() => {
    db = new pg.Pool({ connectionString: PG_URL, options: `-c search_path=${schema}` });
  });
  afterAll(async () => {
    for (const n of nodes) if (n.child.exitCode === null && n.child.signalCode === null) n.child.kill('SIGKILL');
    await db?.end();
    await dropSchema(schema);
  });

  it('is a worker of its own: listed apart, left in place when another node stops, and its tasks taken back at once when its node restarts', async () => {
    // Leases far longer than the test: none of them ends by expiring.
    const env = nodeEnv(schema, { RUN_MS: '1500', TASK_MANAGER_WORKER_CONCURRENCY: '2', TASK_MANAGER_LEASE_SECONDS: '600', TASK_MANAGER_REJECT_WITHOUT_WORKER: 'true' });
    const portA = await freePort();
    const a = await spawnServerOnPort(portA, env, 30_000, NODE);
    const b = await spawnServer(env, 30_000, NODE);
    nodes.push(a, b);
    const idOf = (n: ServerProcess) => `worker_embedded:${hostname().replace(/[^A-Za-z0-9.-]/g, '-')}:${new URL(n.url).port}`;
    const listed = async (n: ServerProcess) =>
      Object.fromEntries((await json(await fetch(`${n.url}/workers`))).workers.map((w: any) => [w.worker_id, w.concurrency]));
    await waitFor(async () => Object.keys(await listed(b)).length === 2, 10_000, 'both workers listed');
    expect(await listed(b)).toEqual({ [idOf(a)]: 2, [idOf(b)]: 2 });

    // Two tasks on each node, each taken by that node's worker.
    const ids: string[] = [];
    for (const n of [a, a, b, b]) ids.push((await json(await post(`${n.url}/tasks`, sleepy(ids.length)))).task_id);
    const running = async () => (await db.query("SELECT id, worker_id FROM tasks WHERE status = 'running' AND attempts = 1")).rows;
    await waitFor(async () => (await running()).length === 4, 10_000, 'four running');
    const heldByA = (await running()).filter((r) => r.worker_id === idOf(a)).map((r) => r.id);
    expect(heldByA).toHaveLength(2);

    // A dies and comes back on its port: before it answers, what its worker held is requeued
    // (the attempt spent) and taken again; B's leases are untouched.
    a.child.kill('SIGKILL');
    await a.exited;
    const again = await spawnServerOnPort(portA, env, 30_000, NODE);
    nodes.push(again);
    const { rows } = await db.query('SELECT id, status, attempts, worker_id FROM tasks ORDER BY id');
    for (const r of rows) {
      if (heldByA.includes(r.id)) expect([r.status, r.attempts]).not.toEqual(['running', 1]);
      // B's run on under their first lease (or have finished by now).
      else expect([r.status === 'running' || r.status === 'completed', r.attempts, r.worker_id]).toEqual([true, 1, idOf(b)]);
    }

    // The restarted A stops cleanly; B's worker stays listed and B still takes tasks.
    again.child.kill('SIGTERM');
    await again.exited;
    await waitFor(async () => !(idOf(a) in (await listed(b))), 10_000, "A's worker gone from B's list");
    expect(await listed(b)).toEqual({ [idOf(b)]: 2 });
    const res = await post(`${b.url}/tasks`, sleepy(4));
    expect(res.status).toBe(201);
    ids.push((await json(res)).task_id);
    await waitFor(async () => {
      const { rows: done } = await db.query("SELECT count(*)::int AS n FROM tasks WHERE status = 'completed'");
      return done[0].n === ids.length;
    }, 20_000, 'every task completed');
    // A run cut short by the kill records nothing: each task ran to its end once.
    const { rows: execs } = await db.query('SELECT task_id, count(*)::int AS n FROM test_executions GROUP BY task_id ORDER BY task_id');
    expect(execs).toEqual([...ids].sort().map((id) => ({ task_id: id, n: 1 })));
  });
});

describe('the PostgreSQL event bus', () => {
  it("carries a worker's wake to the other nodes only, on a channel apart from task events", async () => {
    const schema = uniqueSchema('tmbuswake');
    const store = await PostgresTaskStore.open({ url: PG_URL, schema });
    const channel = `tm_bus_${schema}`.toLowerCase();
    const opts = { pool: store.pool, clientConfig: poolConfig({ url: PG_URL, schema }), channel, hydrate: (id: string) => store.getTask(id), loadLog: () => Promise.resolve([]) };
    const a = new PgEventBus(opts);
    const b = new PgEventBus(opts);
    // A node that listens to the task events' channel alone, as a build from before wakes did.
    const old = new pg.Client(poolConfig({ url: PG_URL, schema }));
    try {
      await a.whenListening();
      await b.whenListening();
      await old.connect();
      const onTaskChannel: string[] = [];
      old.on('notification', (m) => onTaskChannel.push(m.payload ?? ''));
      await old.query(`LISTEN ${channel}`);
      const woken = { a: [] as string[], b: [] as string[] };
      a.onWorkerWake((id) => woken.a.push(id));
      b.onWorkerWake((id) => woken.b.push(id));
      const events: string[] = [];
      b.subscribe((e) => events.push(e.type));
      a.wakeWorker('gpu-7');
      await waitFor(() => woken.b.length > 0, 5_000, 'the wake on the other node');
      await new Promise((r) => setTimeout(r, 200));
      expect(woken).toEqual({ a: [], b: ['gpu-7'] });
      expect(events).toEqual([]);
      expect(onTaskChannel).toEqual([]);
    } finally {
      await old.end();
      await a.close();
      await b.close();
      await store.close();
      await dropSchema(schema);
    }
  });

  it('hands on events it must read back from the store in the order they were sent, drops its own, and keeps every NOTIFY under the size limit', async () => {
    const schema = uniqueSchema('tmbus');
    const store = await PostgresTaskStore.open({ url: PG_URL, schema });
    const channel = `tm_bus_${schema}`.toLowerCase();
    const opts = { pool: store.pool, clientConfig: poolConfig({ url: PG_URL, schema }), channel, hydrate: (id: string) => store.getTask(id) };
    const sender = new PgEventBus({ ...opts, loadLog: (id, after, limit) => store.listEvents(id, after, limit) });
    // The receiving node reads slowly, as a busy database would.
    const receiver = new PgEventBus({
      ...opts,
      loadLog: async (id, after, limit) => {
        await new Promise((r) => setTimeout(r, 300));
        return store.listEvents(id, after, limit);
      },
    });
    try {
      await sender.whenListening();
      await receiver.whenListening();
      const got: string[] = [];
      receiver.subscribe((e) => got.push(e.type));
      const own: string[] = [];
      sender.subscribe((e) => own.push(e.type));
      const task = newTaskRecord({
        id: newTaskId(),
        taskType: 'text_generation',
        modelName: 'm',
        inputData: { prompt: 'p'.repeat(20_000) },
        parameters: {},
        priority: 0,
        maxAttempts: 1,
        timeoutMs: 60_000,
        createdAt: Date.now(),
      });
      const log = Array.from({ length: 50 }, (_, i) => ({ id: i + 1, taskId: task.id, type: 'output' as const, status: null, progress: null, text: 'y'.repeat(400), at: Date.now() }));
      const events = [
        { type: 'output' as const, task, at: Date.now(), log },
        { type: 'completed' as const, task: { ...task, inputData: {} }, at: Date.now() },
      ];
      for (const e of events) expect(Buffer.byteLength(wirePayload(sender.nodeId, e))).toBeLessThanOrEqual(MAX_PAYLOAD);
      for (const e of events) sender.publish(e);
      await waitFor(() => got.length >= 2, 5_000, 'both events on the other bus');
      expect(got).toEqual(['output', 'completed']);
      // The sender's own notifications came back to it too, and were dropped: each event once.
      await new Promise((r) => setTimeout(r, 100));
      expect(own).toEqual(['output', 'completed']);
      // Every form of the payload (whole, without inputs, id alone) starts with its origin,
      // which is how a node tells its own before parsing them.
      const huge = { type: 'failed' as const, task: { ...task, error: { code: 'X', message: 'e'.repeat(9_000) } }, at: Date.now() };
      const forms = [{ type: 'created' as const, task: { ...task, inputData: {} }, at: Date.now() }, events[0], huge].map((e) => wirePayload(sender.nodeId, e));
      expect(forms.map((f) => (JSON.parse(f) as { e: { partial?: boolean; task: object } }).e)).toMatchObject([
        { task: { inputData: {} } },
        { partial: true, task: { inputData: {} } },
        { partial: true, task: { id: task.id } },
      ]);
      expect(Object.keys((JSON.parse(forms[2]) as { e: { task: object } }).e.task)).toEqual(['id']);
      for (const f of forms) expect(f.startsWith(`{"o":"${sender.nodeId}",`)).toBe(true);
    } finally {
      await sender.close();
      await receiver.close();
      await store.close();
      await dropSchema(schema);
    }
  });
});
