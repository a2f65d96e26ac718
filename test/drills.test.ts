/**
 * Failure drills that fit in CI's time: repeated SIGKILL under a create load, a full disk,
 * and a soak with mixed task types, cancels and worker restarts whose counts must reconcile.
 * (PostgreSQL outages are drilled in multinode.test.ts; bench/drills.mjs runs the longer ones.)
 */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { EngineError, RetryableEngineError, type Engine } from '../src/core/engine.js';
import { SqliteTaskStore } from '../src/store/sqlite/sqlite-store.js';
import { HttpTransport } from '../src/worker/http-transport.js';
import { Worker } from '../src/worker/worker.js';
import { spawnServer } from './helpers/process.js';
import { json, post, startServer, tempDir, waitFor } from './helpers/server.js';

const dir = tempDir();
afterAll(() => dir.cleanup());

describe('SIGKILL under a create load, five times', () => {
  it('every acknowledged task is present after each restart; none duplicated', async () => {
    const db = join(dir.path, 'kill5.db');
    const env = { DATABASE_URL: `sqlite:${db}`, TASK_MANAGER_RATE_LIMIT: 'false', TASK_MANAGER_EMBEDDED_WORKER: 'false' };
    const acked = new Set<string>();
    let sent = 0;
    for (let round = 0; round < 5; round++) {
      const srv = await spawnServer(env);
      let killed = false;
      const target = acked.size + 150;
      await Promise.all(
        Array.from({ length: 12 }, async () => {
          while (!killed) {
            sent++;
            try {
              const res = await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: `round ${round}` } });
              if (res.status === 201) acked.add((await json(res)).task_id);
              if (acked.size >= target && !killed) {
                killed = true;
                srv.child.kill('SIGKILL');
              }
            } catch {
              // reset by the kill: never acknowledged
            }
          }
        }),
      );
      await srv.exited;
    }
    const check = new Database(db, { readonly: true });
    const ids = (check.prepare('SELECT id FROM tasks').all() as Array<{ id: string }>).map((r) => r.id);
    const counted = (check.prepare("SELECT sum(current) AS n FROM task_counts WHERE status = 'pending'").get() as { n: number }).n;
    expect(check.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
    check.close();
    expect(new Set(ids).size).toBe(ids.length);
    const missing = [...acked].filter((id) => !ids.includes(id));
    expect(missing).toEqual([]);
    expect(ids.length).toBeLessThanOrEqual(sent);
    expect(counted).toBe(ids.length); // the counters survived the kills too
  }, 120_000);
});

describe('disk full', () => {
  const body = { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'x'.repeat(2000) } };

  async function serverOn(name: string) {
    const path = join(dir.path, name);
    const store = SqliteTaskStore.open({ path });
    return { path, store, srv: await startServer({ store }) };
  }

  /** Caps the file at its size now, then creates until one is refused; `kept` gets what was acknowledged meanwhile. */
  async function fillUp(store: SqliteTaskStore, url: string, kept: string[] = []): Promise<Response | null> {
    store.setMaxBytes(1); // no room beyond what the file holds now
    for (let i = 0; i < 200; i++) {
      const res = await post(`${url}/tasks`, body);
      if (res.status !== 201) return res;
      kept.push((await json(res)).task_id);
    }
    return null;
  }

  /** Space returns: health recovers and a create is acknowledged again. */
  async function recover(store: SqliteTaskStore, url: string): Promise<void> {
    store.setMaxBytes(0);
    await waitFor(async () => (await fetch(`${url}/health`)).status === 200, 5000, 'health to recover');
    expect((await post(`${url}/tasks`, body)).status).toBe(201);
  }

  it('creates fail with 503 SERVICE_UNAVAILABLE, nothing is corrupted, and the service recovers when space returns', async () => {
    const { path, store, srv } = await serverOn('full.db');
    try {
      const kept: string[] = [];
      for (let i = 0; i < 5; i++) kept.push((await json(await post(`${srv.url}/tasks`, body))).task_id);
      const refused = await fillUp(store, srv.url, kept);
      expect(refused?.status).toBe(503);
      expect((await json(refused!)).error.code).toBe('SERVICE_UNAVAILABLE');
      expect((await fetch(`${srv.url}/health`)).status).toBe(503);
      // reads still work, and every acknowledged task is intact
      for (const id of kept) expect((await fetch(`${srv.url}/tasks/${id}`)).status).toBe(200);
      await recover(store, srv.url);
      const list = await json(await fetch(`${srv.url}/tasks?limit=1000`));
      expect(list.total).toBe(kept.length + 1);
    } finally {
      await srv.close();
    }
    const check = new Database(path, { readonly: true });
    expect(check.prepare('PRAGMA integrity_check').get()).toEqual({ integrity_check: 'ok' });
    check.close();
  }, 60_000);

  it('health stays 503 until a create would fit again, however many in-place writes succeed meanwhile', async () => {
    const { store, srv } = await serverOn('full-partial.db');
    try {
      for (let i = 0; i < 3; i++) expect((await post(`${srv.url}/tasks`, body)).status).toBe(201);
      const [held] = await store.leaseTasks({ workerId: 'w', models: [{ taskType: 'text_generation', modelName: 'unserved-llm' }], limit: 1, leaseMs: 60_000, now: Date.now() });
      expect((await fillUp(store, srv.url))?.status).toBe(503);
      // A heartbeat rewrites its row in place and commits on a full file.
      for (let i = 0; i < 3; i++) expect((await store.heartbeat(held.task.id, held.leaseToken, 60_000, Date.now(), i / 10)).kind).toBe('ok');
      expect((await fetch(`${srv.url}/health`)).status).toBe(503);
      expect((await post(`${srv.url}/tasks`, body)).status).toBe(503);
      await recover(store, srv.url);
    } finally {
      await srv.close();
    }
  }, 60_000);
});

describe('soak: mixed task types, cancels, failures and worker restarts', () => {
  const SECONDS = Number(process.env.SOAK_SECONDS ?? 8);
  // The drain after the run is bounded too: the workers here finish about 150 tasks a second.
  const MAX_TASKS = Number(process.env.SOAK_MAX_TASKS ?? SECONDS * 150);
  const TOKEN = 'soak-worker-token-0123456789';

  /** Sleeps a little, sometimes fails for good, sometimes fails in a way worth retrying. */
  const flaky: Engine = {
    name: 'gate',
    taskTypes: ['text_generation', 'text_to_speech', 'image_to_text', 'image_generation'],
    run: (task, ctx) =>
      new Promise((resolve, reject) => {
        const roll = Math.random();
        const t = setTimeout(() => {
          if (roll < 0.05) reject(new EngineError('BAD_INPUT', 'rejected by the model'));
          else if (roll < 0.1) reject(new RetryableEngineError('DEVICE_LOST', 'device lost'));
          else resolve({ result: { echo: task.id } });
        }, 5 + Math.random() * 40);
        ctx.signal.addEventListener('abort', () => {
          clearTimeout(t);
          reject(new Error('aborted'));
        });
      }),
  };

  it(`every submitted task ends exactly once, and all counts reconcile (${SECONDS} s)`, async () => {
    const srv = await startServer({
      env: { TASK_MANAGER_EMBEDDED_WORKER: 'false', TASK_MANAGER_WORKER_TOKEN: TOKEN, TASK_MANAGER_LEASE_SECONDS: '2', TASK_MANAGER_REAPER_INTERVAL_MS: '100' },
    });
    const models = [
      { taskType: 'text_generation' as const, modelName: 'test-llm', input: { prompt: 'p' } },
      { taskType: 'text_to_speech' as const, modelName: 'test-tts', input: { text: 't' } },
      { taskType: 'image_to_text' as const, modelName: 'test-ocr', input: { image: 'iVBORw0KGgo=' } },
      { taskType: 'image_generation' as const, modelName: 'test-sd', input: { prompt: 'p' } },
    ];
    const workers: Worker[] = [];
    let n = 0;
    const startWorker = async () => {
      const w = new Worker({
        id: `soak-${++n}`,
        transport: new HttpTransport({ serverUrl: srv.url, token: TOKEN }),
        models: models.map((m) => ({ taskType: m.taskType, modelName: m.modelName, engine: flaky, modelOptions: {} })),
        concurrency: 4,
        heartbeatMs: 300,
        leaseWaitMs: 1000,
      });
      await w.start();
      workers.push(w);
    };
    try {
      await startWorker();
      await startWorker();
      const submitted: string[] = [];
      const cancelled = new Set<string>();
      const deadline = Date.now() + SECONDS * 1000;
      let restarts = 0;
      const restarter = (async () => {
        while (Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 700));
          const victim = workers.shift();
          // alternate: a graceful stop (work goes back) and a crash (leases must expire)
          if (victim) await (restarts++ % 2 ? victim.stop(0) : crash(victim));
          await startWorker();
        }
      })();
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (Date.now() < deadline && submitted.length < MAX_TASKS) {
            const m = models[Math.floor(Math.random() * models.length)];
            const t = await json(await post(`${srv.url}/tasks`, { task_type: m.taskType, model_name: m.modelName, input_data: m.input, max_attempts: 5 }));
            submitted.push(t.task_id);
            if (Math.random() < 0.1) {
              const res = await fetch(`${srv.url}/tasks/${t.task_id}`, { method: 'DELETE' });
              if (res.status === 200) cancelled.add(t.task_id);
              else expect(res.status).toBe(409); // already finished
            }
          }
        }),
      );
      await restarter;
      const final = await waitFor(async () => {
        const h = await json(await fetch(`${srv.url}/health`));
        return h.pending_tasks === 0 && h.active_tasks === 0 ? h : null;
      }, 30_000, 'queue to drain');
      expect(restarts).toBeGreaterThan(2);
      expect(submitted.length).toBeGreaterThan(50);
      // exactly once: every task in one final state; the counters agree with the rows
      expect(final.completed_tasks + final.failed_tasks + final.cancelled_tasks).toBe(submitted.length);
      expect(final.cancelled_tasks).toBe(cancelled.size);
      const byStatus: Record<string, number> = {};
      for (const s of ['completed', 'failed', 'cancelled']) byStatus[s] = (await json(await fetch(`${srv.url}/tasks?status=${s}&limit=1`))).total;
      const all = [];
      for (let offset = 0; ; offset += 1000) {
        const page = await json(await fetch(`${srv.url}/tasks?limit=1000&offset=${offset}`));
        all.push(...page.tasks);
        if (page.tasks.length < 1000) break;
      }
      expect(new Set(all.map((t: any) => t.task_id))).toEqual(new Set(submitted));
      const direct: Record<string, number> = {};
      for (const t of all) direct[t.status] = (direct[t.status] ?? 0) + 1;
      expect({ completed: direct.completed ?? 0, failed: direct.failed ?? 0, cancelled: direct.cancelled ?? 0 }).toEqual(byStatus);
      for (const id of cancelled) expect(all.find((t: any) => t.task_id === id).status).toBe('cancelled');
      const metrics = await (await fetch(`${srv.url}/metrics`)).text();
      expect(metrics).toContain(`task_manager_tasks_total{status="completed"} ${byStatus.completed}`);
    } finally {
      for (const w of workers) await w.stop(0);
      await srv.close();
    }
  }, 120_000);
});

/** A worker that dies without a word: its loop stops, its leases are never released. */
async function crash(w: Worker): Promise<void> {
  const transport = (w as unknown as { transport: HttpTransport }).transport;
  const dead = async () => {
    throw new Error('worker crashed');
  };
  for (const m of ['heartbeat', 'complete', 'fail', 'release', 'appendEvents', 'putArtifact', 'unregister'] as const) {
    (transport as unknown as Record<string, unknown>)[m] = dead;
  }
  await w.stop(0).catch(() => {});
}
