/** Durability: a task acknowledged with 201 survives SIGKILL of the server; SIGTERM shuts down cleanly. */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteTaskStore } from '../src/store/sqlite/sqlite-store.js';
import { GateEngine } from './helpers/engines.js';
import { spawnServer } from './helpers/process.js';
import { json, post, startServer, tempDir, waitFor } from './helpers/server.js';

const body = { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'durable?' } };

describe('crash safety (separate server process, default synchronous=FULL)', () => {
  let dir: ReturnType<typeof tempDir>;
  beforeAll(() => {
    dir = tempDir();
  });
  afterAll(() => dir.cleanup());

  it('every 201 survives SIGKILL mid-load; nothing is duplicated', async () => {
    const env = { DATABASE_URL: `sqlite:${join(dir.path, 'crash.db')}`, TASK_MANAGER_RATE_LIMIT: 'false', TASK_MANAGER_EMBEDDED_WORKER: 'false' };
    const first = await spawnServer(env);
    const acked: string[] = [];
    let sent = 0;
    const target = 400;
    let killed = false;
    // 16 concurrent clients keep creating; the server is killed the moment `target` were acknowledged.
    const clients = Array.from({ length: 16 }, async () => {
      while (!killed) {
        sent++;
        try {
          const res = await post(`${first.url}/tasks`, body);
          if (res.status === 201) {
            acked.push((await json(res)).task_id);
            if (acked.length >= target && !killed) {
              killed = true;
              first.child.kill('SIGKILL');
            }
          }
        } catch {
          // connection reset by the kill: not acknowledged, so no promise was made
        }
      }
    });
    await Promise.all(clients);
    expect((await first.exited).signal).toBe('SIGKILL');
    expect(acked.length).toBeGreaterThanOrEqual(target);

    const second = await spawnServer(env);
    try {
      const missing: string[] = [];
      for (const id of acked) {
        const res = await fetch(`${second.url}/tasks/${id}`);
        if (res.status !== 200) missing.push(id);
      }
      expect(missing).toEqual([]);
      const list = await json(await fetch(`${second.url}/tasks?limit=1000`));
      const ids = list.tasks.map((t: any) => t.task_id);
      expect(new Set(ids).size).toBe(ids.length);
      expect(list.total).toBeGreaterThanOrEqual(acked.length);
      expect(list.total).toBeLessThanOrEqual(sent);
      const health = await json(await fetch(`${second.url}/health`));
      expect(health.pending_tasks).toBe(list.total);
    } finally {
      second.child.kill('SIGKILL');
      await second.exited;
    }
  });

  it('tasks handed straight to the embedded worker survive SIGKILL mid-run; the restarted server takes them back at once, not a remote worker\'s', async () => {
    const db = join(dir.path, 'handoff.db');
    const TOKEN = 'crash-test-worker-token';
    const env = {
      DATABASE_URL: `sqlite:${db}`,
      TASK_MANAGER_RATE_LIMIT: 'false',
      TASK_MANAGER_WORKER_CONCURRENCY: '4',
      // Far longer than the test: no lease here ends by expiring.
      TASK_MANAGER_LEASE_SECONDS: '600',
      TASK_MANAGER_REAPER_INTERVAL_MS: '100',
      TASK_MANAGER_WORKER_TOKEN: TOKEN,
      RUN_MS: '1500',
    };
    const NODE = ['test/fixtures/node.mjs'];
    const first = await spawnServer(env, 20_000, NODE);
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const res = await post(`${first.url}/tasks`, { task_type: 'text_generation', model_name: 'sleepy', input_data: { prompt: `t${i}` } });
      expect(res.status).toBe(201);
      ids.push((await json(res)).task_id);
    }
    // A remote worker holds a task of a model only it serves, through the crash.
    const auth = { authorization: `Bearer ${TOKEN}` };
    expect((await post(`${first.url}/workers/register`, { worker_id: 'remote-1', models: [{ task_type: 'text_generation', model_name: 'remote-only' }], concurrency: 1 }, auth)).status).toBe(200);
    const remoteTask = (await json(await post(`${first.url}/tasks`, { task_type: 'text_generation', model_name: 'remote-only', input_data: { prompt: 'r' } }))).task_id;
    const leased = await json(await post(`${first.url}/workers/remote-1/lease`, { max_tasks: 1, wait_seconds: 5 }, auth));
    expect(leased.tasks.map((t: any) => t.task_id)).toEqual([remoteTask]);
    // Four run (the worker's four slots, each for 1.5 s), four wait: kill it now.
    await waitFor(async () => (await json(await fetch(`${first.url}/tasks?status=running&model_name=sleepy`))).total === 4, 5000, 'four running');
    const wasRunning = (await json(await fetch(`${first.url}/tasks?status=running&model_name=sleepy`))).tasks.map((t: any) => t.task_id);
    first.child.kill('SIGKILL');
    await first.exited;

    const second = await spawnServer(env, 20_000, NODE);
    try {
      // Before it served a request, the server requeued what its own worker held: nothing still
      // runs under its first lease. The remote worker's lease is untouched.
      for (const id of wasRunning) {
        const t = await json(await fetch(`${second.url}/tasks/${id}`));
        expect([t.status, t.attempts]).not.toEqual(['running', 1]);
      }
      expect(await json(await fetch(`${second.url}/tasks/${remoteTask}`))).toMatchObject({ status: 'running', attempts: 1, worker_id: 'remote-1' });
      // Every task completes, each once.
      await waitFor(async () => (await json(await fetch(`${second.url}/tasks?status=completed`))).total === 8, 15_000, 'all completed');
      const list = await json(await fetch(`${second.url}/tasks?model_name=sleepy&limit=100`));
      expect(list.total).toBe(8);
      expect(list.tasks.map((t: any) => t.task_id).sort()).toEqual([...ids].sort());
      const attempts = await Promise.all(ids.map(async (id) => (await json(await fetch(`${second.url}/tasks/${id}`))).attempts));
      expect(attempts.filter((n) => n === 2)).toHaveLength(4);
    } finally {
      second.child.kill('SIGKILL');
      await second.exited;
    }
    // The running four went by handoff: created and leased in one transaction, at one instant.
    const check = SqliteTaskStore.open({ path: db, synchronous: 'NORMAL' });
    try {
      const handed = [];
      for (const id of ids) {
        const [created, leased] = await check.listEvents(id, 0, 2);
        if (leased.status === 'running' && leased.at === created.at) handed.push(id);
      }
      expect(handed.length).toBeGreaterThanOrEqual(1);
      // Those that were running went back to pending (the attempt spent), then ran again.
      for (const id of wasRunning) {
        const statuses = (await check.listEvents(id, 0, 100)).filter((e) => e.type === 'status').map((e) => e.status);
        expect(statuses).toEqual(['pending', 'running', 'pending', 'running', 'completed']);
      }
    } finally {
      await check.close();
    }
  });

  it('a second server on the same SQLite file refuses to start and touches nothing; once the first is gone, one starts', async () => {
    const db = join(dir.path, 'one-server.db');
    const env = { DATABASE_URL: `sqlite:${db}`, TASK_MANAGER_RATE_LIMIT: 'false', TASK_MANAGER_LEASE_SECONDS: '600', RUN_MS: '60000' };
    const NODE = ['test/fixtures/node.mjs'];
    const first = await spawnServer(env, 20_000, NODE);
    const id = (await json(await post(`${first.url}/tasks`, { task_type: 'text_generation', model_name: 'sleepy', input_data: { prompt: 'long' } }))).task_id;
    await waitFor(async () => (await json(await fetch(`${first.url}/tasks/${id}`))).status === 'running', 5000, 'running');
    // It would share the in-process worker's id, and take the running task back as its own.
    const second = await spawnServer(env, 20_000, NODE).then(
      () => null,
      (err: Error) => err.message,
    );
    expect(second).toMatch(/server exited early \(1\)/);
    expect(second).toMatch(/one-server\.db is in use by another Task Manager server/);
    expect(await json(await fetch(`${first.url}/tasks/${id}`))).toMatchObject({ status: 'running', attempts: 1 });
    first.child.kill('SIGKILL');
    await first.exited;
    // The lock went with the process: no stale lock after a crash.
    const third = await spawnServer({ ...env, RUN_MS: '10' }, 20_000, NODE);
    try {
      const t = await waitFor(async () => {
        const task = await json(await fetch(`${third.url}/tasks/${id}`));
        return task.status === 'completed' ? task : null;
      }, 10_000, 'completed after restart');
      expect(t.attempts).toBe(2);
    } finally {
      third.child.kill('SIGKILL');
      await third.exited;
    }
  });

  it('SIGTERM stops taking requests and exits 0 with everything saved', async () => {
    const env = { DATABASE_URL: `sqlite:${join(dir.path, 'term.db')}`, TASK_MANAGER_RATE_LIMIT: 'false' };
    const srv = await spawnServer(env);
    const ids = await Promise.all(Array.from({ length: 20 }, async () => (await json(await post(`${srv.url}/tasks`, body))).task_id));
    srv.child.kill('SIGTERM');
    const exit = await srv.exited;
    expect(exit).toEqual({ code: 0, signal: null });
    await expect(fetch(`${srv.url}/health`)).rejects.toThrow();
    const again = await spawnServer(env);
    try {
      for (const id of ids) expect((await fetch(`${again.url}/tasks/${id}`)).status).toBe(200);
    } finally {
      again.child.kill('SIGKILL');
      await again.exited;
    }
  });

  it('SIGTERM during a real llama.cpp generation exits 0 and gives the task back to the queue', async () => {
    // node-llama-cpp loads signal-exit, which re-raises a signal when it sees no other
    // listener: a one-shot handler of ours let the second delivery kill the process mid-shutdown.
    const path = join(dir.path, 'llama-term.db');
    const env = { DATABASE_URL: `sqlite:${path}`, TASK_MANAGER_RATE_LIMIT: 'false', TASK_MANAGER_SHUTDOWN_GRACE_SECONDS: '0' };
    const srv = await spawnServer(env);
    const long = { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'Hello' }, parameters: { max_tokens: 30000 } };
    const id = (await json(await post(`${srv.url}/tasks`, long))).task_id;
    for (let i = 0; i < 200; i++) {
      const t = await json(await fetch(`${srv.url}/tasks/${id}`));
      if (t.status === 'running' && t.progress !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    expect((await json(await fetch(`${srv.url}/tasks/${id}`))).status).toBe('running');
    srv.child.kill('SIGTERM');
    expect(await srv.exited).toEqual({ code: 0, signal: null });
    const reopened = SqliteTaskStore.open({ path });
    expect(await reopened.getTask(id)).toMatchObject({ status: 'pending', attempts: 0, workerId: null });
    await reopened.close();
  }, 30_000);

  it('closing the app requeues running work that does not finish within the grace period', async () => {
    const engine = new GateEngine();
    const path = join(dir.path, 'grace.db');
    const srv = await startServer({ engines: { gate: engine }, store: SqliteTaskStore.open({ path }), env: { TASK_MANAGER_SHUTDOWN_GRACE_SECONDS: '0' } });
    const t = await json(await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'x' } }));
    await engine.started(1);
    await srv.close();
    expect(engine.aborted[0]).toMatchObject({ taskId: t.task_id, reason: 'shutdown' });
    const reopened = SqliteTaskStore.open({ path });
    expect(await reopened.getTask(t.task_id)).toMatchObject({ status: 'pending', attempts: 0, workerId: null });
    await reopened.close();
  });
});
