/** Lease lifecycle with the real worker runtime, queue and SQLite store: expiry, fencing, cancel, retries, timeouts. */
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EngineError, RetryableEngineError } from '../src/core/engine.js';
import { LocalEventBus } from '../src/core/events.js';
import { LeaseReaper } from '../src/scheduler/lease-reaper.js';
import { TaskQueue } from '../src/scheduler/task-queue.js';
import { SqliteTaskStore } from '../src/store/sqlite/sqlite-store.js';
import { InProcessTransport } from '../src/worker/in-process-transport.js';
import { Worker } from '../src/worker/worker.js';
import { GateEngine } from './helpers/engines.js';
import { tempDir, waitFor } from './helpers/server.js';

const MODEL = { taskType: 'text_generation' as const, modelName: 'm' };

describe('worker runtime and leases', () => {
  let dir: ReturnType<typeof tempDir>;
  let store: SqliteTaskStore;
  let queue: TaskQueue;
  let workers: Worker[];

  beforeEach(() => {
    dir = tempDir();
    store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db'), synchronous: 'NORMAL' });
    queue = new TaskQueue(store, new LocalEventBus(), { defaultMaxAttempts: 3, defaultTimeoutMs: 60_000, leaseMs: 400 });
    workers = [];
  });
  afterEach(async () => {
    for (const w of workers) await w.stop(0);
    queue.close();
    await store.close();
    dir.cleanup();
  });

  function startWorker(engine: GateEngine, opts: { id?: string; concurrency?: number; heartbeatMs?: number; pushCancels?: boolean } = {}) {
    const transport = new InProcessTransport(queue);
    if (opts.pushCancels === false) transport.onCancel = () => () => {};
    const w = new Worker({
      id: opts.id,
      transport,
      models: [{ ...MODEL, engine, modelOptions: { path: '/models/m.gguf' } }],
      concurrency: opts.concurrency ?? 1,
      heartbeatMs: opts.heartbeatMs ?? 100,
      leaseWaitMs: 5_000,
    });
    workers.push(w);
    return w.start().then(() => w);
  }

  const create = (over: Partial<Parameters<TaskQueue['create']>[0]> = {}) =>
    queue.create({ ...MODEL, inputData: { prompt: 'hi' }, parameters: {}, ...over }).then((r) => r.task);

  const statusOf = async (id: string) => (await store.getTask(id))!;

  it('runs a task on its engine with catalog options and completes it', async () => {
    const engine = new GateEngine();
    engine.autoResult = (t) => ({ generated_text: `echo:${t.inputData.prompt}`, opts: t.modelOptions });
    await startWorker(engine);
    const t = await create();
    const done = await waitFor(async () => ((await statusOf(t.id)).status === 'completed' ? statusOf(t.id) : null));
    expect(done.result).toEqual({ generated_text: 'echo:hi', opts: { path: '/models/m.gguf' } });
    expect(done.workerId).toMatch(/^worker_/);
  });

  it('a waiting lease is woken by a new task instead of polling', async () => {
    const waiting = queue.leaseWait('w', [MODEL], 1, 60_000);
    await new Promise((r) => setTimeout(r, 50));
    const t = await create();
    const leased = await waiting;
    expect(leased.map((l) => l.task.id)).toEqual([t.id]);
  });

  it('runs higher priority first', async () => {
    const low = await create({ priority: 0 });
    const high = await create({ priority: 9 });
    const engine = new GateEngine();
    await startWorker(engine);
    await engine.started(1);
    expect(engine.runs[0].task.id).toBe(high.id);
    engine.finish(high.id, {});
    await engine.started(2);
    expect(engine.runs[1].task.id).toBe(low.id);
  });

  it('engine errors fail the task with their code; plain errors become ENGINE_ERROR', async () => {
    const engine = new GateEngine();
    engine.autoError = new EngineError('MODEL_LOAD_FAILED', 'cannot load /models/m.gguf');
    await startWorker(engine);
    const t = await create();
    const failed = await waitFor(async () => ((await statusOf(t.id)).status === 'failed' ? statusOf(t.id) : null));
    expect(failed.error).toEqual({ code: 'MODEL_LOAD_FAILED', message: 'cannot load /models/m.gguf' });
    expect(failed.attempts).toBe(1);
    engine.autoError = new Error('out of memory');
    const t2 = await create();
    const failed2 = await waitFor(async () => ((await statusOf(t2.id)).status === 'failed' ? statusOf(t2.id) : null));
    expect(failed2.error).toEqual({ code: 'ENGINE_ERROR', message: 'out of memory' });
  });

  it('a retryable engine error is retried and can then succeed', async () => {
    const engine = new GateEngine();
    await startWorker(engine);
    const t = await create();
    await engine.started(1);
    engine.failRun(t.id, new RetryableEngineError('DEVICE_LOST', 'CUDA device lost'));
    await engine.started(2);
    expect(engine.runs[1].task.id).toBe(t.id);
    engine.finish(t.id, { ok: true });
    const done = await waitFor(async () => ((await statusOf(t.id)).status === 'completed' ? statusOf(t.id) : null));
    expect(done.attempts).toBe(2);
  });

  it('stops the engine at the task timeout and fails with TIMEOUT', async () => {
    const engine = new GateEngine();
    await startWorker(engine);
    const t = await create({ timeoutSeconds: 1 });
    await engine.started(1);
    const failed = await waitFor(async () => ((await statusOf(t.id)).status === 'failed' ? statusOf(t.id) : null), 5000);
    expect(failed.error?.code).toBe('TIMEOUT');
    expect(engine.aborted[0]).toMatchObject({ taskId: t.id, reason: 'timeout' });
  });

  it('a cancel reaches a running engine through heartbeats when no push channel exists', async () => {
    const engine = new GateEngine();
    await startWorker(engine, { pushCancels: false, heartbeatMs: 100 });
    const t = await create();
    await engine.started(1);
    const at = Date.now();
    await queue.cancel(t.id);
    await waitFor(() => engine.runs[0].abortedAt, 2000, 'abort via heartbeat');
    expect(engine.runs[0].abortedAt! - at).toBeLessThan(1000);
    expect(engine.aborted[0].reason).toBe('cancelled');
    expect((await statusOf(t.id)).status).toBe('cancelled');
  });

  it('frees the slot after a cancel so the next task runs', async () => {
    const engine = new GateEngine();
    await startWorker(engine);
    const a = await create();
    const b = await create();
    await engine.started(1);
    await queue.cancel(a.id);
    await engine.started(2);
    expect(engine.runs[1].task.id).toBe(b.id);
  });

  it('a dead worker\'s task is requeued after lease expiry, completed elsewhere, and the late result is refused', async () => {
    const t = await create();
    // A worker that leases and then goes silent (crashed): no heartbeats.
    const [dead] = await queue.lease('worker_dead', [MODEL], 1);
    expect(dead.task.id).toBe(t.id);
    const reaper = new LeaseReaper(queue, { intervalMs: 50, timeoutGraceMs: 1000 });
    reaper.start();
    try {
      const engine = new GateEngine();
      engine.autoResult = () => ({ by: 'survivor' });
      await startWorker(engine, { id: 'worker_survivor' });
      const done = await waitFor(async () => ((await statusOf(t.id)).status === 'completed' ? statusOf(t.id) : null), 5000);
      expect(done).toMatchObject({ workerId: 'worker_survivor', attempts: 2, result: { by: 'survivor' } });
      const late = await queue.complete(t.id, dead.leaseToken, { by: 'dead' });
      expect(late.kind).toBe('stale');
      expect((await statusOf(t.id)).result).toEqual({ by: 'survivor' });
    } finally {
      await reaper.stop();
    }
  });

  it('fails a task whose every attempt loses its lease', async () => {
    const t = await create({ maxAttempts: 2 });
    const reaper = new LeaseReaper(queue, { intervalMs: 50, timeoutGraceMs: 1000 });
    reaper.start();
    try {
      for (let i = 0; i < 2; i++) {
        await waitFor(async () => (await queue.lease(`dead_${i}`, [MODEL], 1)).length === 1, 5000, `lease ${i}`);
      }
      const failed = await waitFor(async () => ((await statusOf(t.id)).status === 'failed' ? statusOf(t.id) : null), 5000);
      expect(failed.error?.code).toBe('LEASE_EXPIRED');
      expect(failed.attempts).toBe(2);
    } finally {
      await reaper.stop();
    }
  });

  it('a live worker keeps its lease by heartbeating past the lease length', async () => {
    const reaper = new LeaseReaper(queue, { intervalMs: 50, timeoutGraceMs: 1000 });
    reaper.start();
    try {
      const engine = new GateEngine();
      await startWorker(engine, { heartbeatMs: 100 });
      const t = await create();
      await engine.started(1);
      await new Promise((r) => setTimeout(r, 1200)); // three lease lengths
      expect((await statusOf(t.id)).status).toBe('running');
      expect(engine.runs).toHaveLength(1);
      engine.finish(t.id, {});
      await waitFor(async () => (await statusOf(t.id)).status === 'completed');
    } finally {
      await reaper.stop();
    }
  });

  it('graceful stop lets a task finish within the grace period', async () => {
    const engine = new GateEngine();
    const w = await startWorker(engine);
    const t = await create();
    await engine.started(1);
    setTimeout(() => engine.finish(t.id, { finished: true }), 100);
    await w.stop(5_000);
    expect((await statusOf(t.id)).status).toBe('completed');
  });

  it('graceful stop gives unfinished work back to the queue without spending an attempt', async () => {
    const engine = new GateEngine();
    const w = await startWorker(engine);
    const t = await create();
    await engine.started(1);
    await w.stop(50);
    expect(engine.aborted[0]).toMatchObject({ taskId: t.id, reason: 'shutdown' });
    expect(await statusOf(t.id)).toMatchObject({ status: 'pending', attempts: 0, workerId: null });
  });

  it('runs up to its concurrency at once', async () => {
    const engine = new GateEngine();
    await startWorker(engine, { concurrency: 3 });
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push((await create()).id);
    await engine.started(3);
    await new Promise((r) => setTimeout(r, 100));
    expect(engine.runs).toHaveLength(3);
    engine.finish(engine.runs[0].task.id, {});
    await engine.started(4);
  });

  it('progress reported by the engine is stored with heartbeats', async () => {
    const engine = new GateEngine();
    await startWorker(engine, { heartbeatMs: 50 });
    const t = await create();
    await engine.started(1);
    engine.runs[0].ctx.reportProgress(0.42);
    await waitFor(async () => (await statusOf(t.id)).progress === 0.42, 3000, 'progress');
  });
});
