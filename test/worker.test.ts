/** Lease lifecycle with the real worker runtime, queue and SQLite store: expiry, fencing, cancel, retries, timeouts. */
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { EngineError, RetryableEngineError, type Engine } from '../src/core/engine.js';
import { LocalEventBus } from '../src/core/events.js';
import { newTaskId } from '../src/core/ids.js';
import { LeaseReaper } from '../src/scheduler/lease-reaper.js';
import { LeaseWakeups } from '../src/scheduler/wakeups.js';
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

  function startWorker(engine: GateEngine, opts: { id?: string; concurrency?: number; heartbeatMs?: number; pushCancels?: boolean; leaseWaitMs?: number } = {}) {
    const transport = new InProcessTransport(queue);
    if (opts.pushCancels === false) transport.onCancel = () => () => {};
    const w = new Worker({
      id: opts.id,
      transport,
      models: [{ ...MODEL, engine, modelOptions: { path: '/models/m.gguf' } }],
      concurrency: opts.concurrency ?? 1,
      heartbeatMs: opts.heartbeatMs ?? 100,
      leaseWaitMs: opts.leaseWaitMs ?? 5_000,
    });
    workers.push(w);
    return w.start().then(() => w);
  }

  const create = (over: Partial<Parameters<TaskQueue['create']>[0]> = {}) =>
    queue.create({ ...MODEL, inputData: { prompt: 'hi' }, parameters: {}, ...over }).then((r) => r.task);

  const statusOf = async (id: string) => (await store.getTask(id))!;
  const completed = (id: string) => waitFor(async () => (await statusOf(id)).status === 'completed', 3000, 'completed');

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

  const statuses = async (ids: string[]) => Promise.all(ids.map(async (id) => (await statusOf(id)).status));

  it('leases no more tasks than its engine has room for: the rest stay pending, for any worker (lease and handoff paths)', async () => {
    const engine = new GateEngine();
    engine.capacity = 1;
    // Queued before the worker starts: taken by leases.
    const queued = [(await create()).id, (await create()).id, (await create()).id];
    await startWorker(engine, { concurrency: 3 });
    await engine.started(1);
    await new Promise((r) => setTimeout(r, 150));
    expect(engine.runs.map((r) => r.task.id)).toEqual([queued[0]]);
    expect(await statuses(queued)).toEqual(['running', 'pending', 'pending']);
    // It registered the model with its engine's capacity: estimates count one slot, not three.
    expect(queue.workers.slots(MODEL)).toBe(1);
    // Another worker with room takes what this one left.
    const other = new GateEngine();
    await startWorker(other, { concurrency: 2 });
    expect(queue.workers.slots(MODEL)).toBe(3);
    await other.started(2);
    expect(other.runs.map((r) => r.task.id).sort()).toEqual(queued.slice(1).sort());
    // The capped worker takes the next task once its engine is free again.
    engine.finish(queued[0], {});
    await completed(queued[0]);
    const later = (await create()).id;
    await engine.started(2);
    expect(engine.runs[1].task.id).toBe(later);
    for (const id of queued.slice(1)) other.finish(id, {});
  });

  it('a worker whose engine is full is handed no new task at create; it leases it once the engine is free', async () => {
    const engine = new GateEngine();
    engine.capacity = 2;
    await startWorker(engine, { concurrency: 4 });
    // Let the first (empty) lease mark the worker drained, so creates hand tasks straight to it.
    await new Promise((r) => setTimeout(r, 100));
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await create()).id);
    await engine.started(2);
    await new Promise((r) => setTimeout(r, 150));
    expect(engine.runs.map((r) => r.task.id)).toEqual(ids.slice(0, 2));
    expect(await statuses(ids)).toEqual(['running', 'running', 'pending', 'pending']);
    engine.finish(ids[1], {});
    await engine.started(3);
    await new Promise((r) => setTimeout(r, 100));
    expect(engine.runs.map((r) => r.task.id)).toEqual(ids.slice(0, 3));
    expect(await statuses(ids)).toEqual(['running', 'completed', 'running', 'pending']);
    engine.finish(ids[0], {});
    engine.finish(ids[2], {});
    await engine.started(4);
    expect(engine.runs[3].task.id).toBe(ids[3]);
    engine.finish(ids[3], {});
    for (const id of ids) await completed(id);
  });

  it('a task the in-process worker has no room for wakes another worker\'s waiting lease, not the in-process one\'s', async () => {
    const engine = new GateEngine();
    engine.capacity = 1;
    await startWorker(engine, { concurrency: 2, leaseWaitMs: 60_000 });
    // The in-process worker's lease found the queue empty and waits; then another worker's does.
    await new Promise((r) => setTimeout(r, 100));
    const elsewhere = queue.leaseWait('elsewhere', [MODEL], 1, 60_000);
    const first = await create();
    await engine.started(1);
    expect(engine.runs[0].task.id).toBe(first.id);
    // Its engine is full: the next task is for the worker that can run it, at once.
    const second = await create();
    const leased = await Promise.race([elsewhere, new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
    expect(leased?.map((l) => l.task.id)).toEqual([second.id]);
    expect((await statusOf(second.id)).workerId).toBe('elsewhere');
    engine.finish(first.id, {});
    await completed(first.id);
  });

  it('with one engine full, it goes on leasing for its other models up to its concurrency', async () => {
    const slow = new GateEngine();
    slow.capacity = 1;
    const fast = new GateEngine();
    const SPEECH = { taskType: 'text_to_speech' as const, modelName: 'voice' };
    const a = [(await create()).id, (await create()).id];
    const b = [];
    for (let i = 0; i < 3; i++) b.push((await queue.create({ ...SPEECH, inputData: { text: 'hi' }, parameters: {} })).task.id);
    const w = new Worker({
      transport: new InProcessTransport(queue),
      models: [
        { ...MODEL, engine: slow, modelOptions: {} },
        { ...SPEECH, engine: fast, modelOptions: {} },
      ],
      concurrency: 3,
      heartbeatMs: 100,
      leaseWaitMs: 5_000,
    });
    workers.push(w);
    await w.start();
    await slow.started(1);
    await fast.started(2);
    await new Promise((r) => setTimeout(r, 150));
    expect(slow.runs.map((r) => r.task.id)).toEqual([a[0]]);
    expect(fast.runs.map((r) => r.task.id)).toEqual(b.slice(0, 2));
    expect(await statuses([...a, ...b])).toEqual(['running', 'pending', 'running', 'running', 'pending']);
    // A slot freed on the fast engine goes to the fast model's next task, not to the full engine.
    fast.finish(b[0], {});
    await fast.started(3);
    await new Promise((r) => setTimeout(r, 100));
    expect(slow.runs).toHaveLength(1);
    expect(await statuses([...a, ...b])).toEqual(['running', 'pending', 'completed', 'running', 'running']);
    slow.finish(a[0], {});
    await slow.started(2);
    expect(slow.runs[1].task.id).toBe(a[1]);
    slow.finish(a[1], {});
    for (const id of b.slice(1)) fast.finish(id, {});
  });

  it('progress reported by the engine is stored with heartbeats', async () => {
    const engine = new GateEngine();
    await startWorker(engine, { heartbeatMs: 50 });
    const t = await create();
    await engine.started(1);
    engine.runs[0].ctx.reportProgress(0.42);
    await waitFor(async () => (await statusOf(t.id)).progress === 0.42, 3000, 'progress');
  });

  it('an engine that reads its signal only after a cancel finds it aborted, with the reason', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    let started = false;
    let seen: { aborted: boolean; reason: unknown } | null = null;
    const late: Engine = {
      name: 'late',
      taskTypes: ['text_generation'],
      run: async (_task, ctx) => {
        started = true;
        await gate;
        seen = { aborted: ctx.signal.aborted, reason: ctx.signal.reason };
        return { result: { ran: true } };
      },
    };
    const w = new Worker({ transport: new InProcessTransport(queue), models: [{ ...MODEL, engine: late, modelOptions: {} }], concurrency: 1, heartbeatMs: 100 });
    workers.push(w);
    await w.start();
    const t = await create();
    await waitFor(() => started, 3000, 'engine start');
    await queue.cancel(t.id);
    release();
    await waitFor(() => seen, 3000, 'engine end');
    expect(seen).toEqual({ aborted: true, reason: 'cancelled' });
    // Its result does not count: the task stays cancelled.
    await new Promise((r) => setTimeout(r, 100));
    expect((await statusOf(t.id)).status).toBe('cancelled');
    expect((await statusOf(t.id)).result).toBeNull();
  });

  it('one timer heartbeats every running task: the beats of a tick leave together', async () => {
    const engine = new GateEngine();
    const w = await startWorker(engine, { concurrency: 3, heartbeatMs: 100 });
    // Observe the real transport: calls made in one synchronous run share a batch number.
    const transport = (w as unknown as { transport: InProcessTransport }).transport;
    const beat = transport.heartbeat.bind(transport);
    const beats: Array<[number, string]> = [];
    let batch = 0;
    let open = false;
    transport.heartbeat = (id, token, progress) => {
      if (!open) (open = true), batch++, queueMicrotask(() => (open = false));
      beats.push([batch, id]);
      return beat(id, token, progress);
    };
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      ids.push((await create()).id);
      await new Promise((r) => setTimeout(r, 15));
    }
    await engine.started(3);
    beats.length = 0;
    await new Promise((r) => setTimeout(r, 600));
    for (const id of ids) engine.finish(id, {});
    for (const id of ids) await completed(id);
    const byBatch = new Map<number, string[]>();
    for (const [b, id] of beats) byBatch.set(b, [...(byBatch.get(b) ?? []), id]);
    expect(byBatch.size).toBeGreaterThanOrEqual(2);
    for (const group of byBatch.values()) expect([...group].sort()).toEqual([...ids].sort());
  });

  describe('handoff to a drained in-process worker', () => {
    /** Events on the bus, in order, as [type, task id, dispatched]. */
    function record() {
      const seen: Array<[string, string, boolean]> = [];
      queue.bus.subscribe((e) => seen.push([e.type, e.task.id, e.dispatched === true]));
      return seen;
    }

    it('a create inserts the task already leased to the waiting worker and answers it as created', async () => {
      const engine = new GateEngine();
      const w = await startWorker(engine, { concurrency: 2 });
      // The worker's lease found the queue empty: from here on it is drained.
      const first = await create();
      await engine.started(1);
      const seen = record();
      const r = await queue.create({ ...MODEL, inputData: { prompt: 'next' }, parameters: {} });
      expect(r.task).toMatchObject({ status: 'pending', attempts: 0, workerId: null });
      expect(r.queuePosition).toBe(0);
      expect(seen).toEqual([
        ['created', r.task.id, true],
        ['leased', r.task.id, false],
      ]);
      await engine.started(2);
      expect(engine.runs[1].task.id).toBe(r.task.id);
      const row = await statusOf(r.task.id);
      expect(row).toMatchObject({ status: 'running', attempts: 1, workerId: w.id, startedAt: row.createdAt });
      expect((await store.listEvents(r.task.id, 0, 10)).map((e) => [e.id, e.status, e.at])).toEqual([
        [1, 'pending', row.createdAt],
        [2, 'running', row.createdAt],
      ]);
      // An ordinary lease from here on: the cancel reaches the engine, the other task completes.
      await queue.cancel(r.task.id);
      await waitFor(async () => engine.aborted.some((a) => a.taskId === r.task.id && a.reason === 'cancelled'), 3000, 'abort');
      engine.finish(first.id, { ok: true });
      await completed(first.id);
    });

    it('hands nothing over while tasks are pending: the queue keeps its order', async () => {
      const engine = new GateEngine();
      await startWorker(engine, { concurrency: 1 });
      const a = await create();
      await engine.started(1);
      const seen = record();
      // The only slot is taken: these wait in the store, and the worker is no longer drained.
      const b = await create({ priority: 0 });
      const c = await create({ priority: 5 });
      engine.finish(a.id, {});
      await engine.started(2);
      // Had the freed slot been offered to the next create, d would run before c and b.
      const d = await create({ priority: 0 });
      expect(engine.runs[1].task.id).toBe(c.id);
      engine.finish(c.id, {});
      await engine.started(3);
      engine.finish(b.id, {});
      await engine.started(4);
      expect(engine.runs.map((r) => r.task.id)).toEqual([a.id, c.id, b.id, d.id]);
      expect(seen.filter(([type]) => type === 'created').every(([, , dispatched]) => !dispatched)).toBe(true);
      // Drained again: the next create goes straight to the worker.
      engine.finish(d.id, {});
      await completed(d.id);
      const e = await create();
      expect(seen.at(-2)).toEqual(['created', e.id, true]);
      await engine.started(5);
    });

    it('never runs more than its concurrency when handoffs and leases mix', async () => {
      const engine = new GateEngine();
      await startWorker(engine, { concurrency: 1 });
      const first = await create();
      await engine.started(1);
      engine.finish(first.id, {});
      await completed(first.id);
      // The first goes by handoff, the rest wait in the store for the one slot.
      for (let i = 0; i < 4; i++) await create();
      await engine.started(2);
      await new Promise((r) => setTimeout(r, 150));
      expect(engine.runs).toHaveLength(2);
      expect((await store.runningTasks()).length).toBe(1);
    });

    it('still asks the store once per long-poll, for tasks that came in without an event', async () => {
      const engine = new GateEngine();
      await startWorker(engine, { concurrency: 2, leaseWaitMs: 200 });
      await create();
      await engine.started(1);
      // Written past the queue (as an import would): nothing announces it.
      const now = Date.now();
      const t = await store.createTask({ id: newTaskId(now), ...MODEL, inputData: { prompt: 'x' }, parameters: {}, priority: 0, maxAttempts: 3, timeoutMs: 60_000, createdAt: now });
      await engine.started(2, 3_000);
      expect(engine.runs[1].task.id).toBe(t.id);
    });

    it('a worker stopping while creates lease to it gives those tasks back unstarted', async () => {
      const engine = new GateEngine();
      const w = await startWorker(engine, { concurrency: 2 });
      const first = await create();
      await engine.started(1);
      engine.finish(first.id, {});
      await completed(first.id);
      const seen = record();
      // The create holds the worker's slot at once; its commit lands after the stop began.
      const creating = create();
      const stopping = w.stop(0);
      const t = await creating;
      await stopping;
      expect(seen[0]).toEqual(['created', t.id, true]);
      expect(engine.runs).toHaveLength(1);
      expect(await statusOf(t.id)).toMatchObject({ status: 'pending', attempts: 0, workerId: null });
    });
  });
});

describe('lease wakeups: when a worker counts as drained', () => {
  /** A delivery that records what it is handed and has `slots` free. */
  function delivery(slots: number) {
    const handed: string[] = [];
    return {
      handed,
      reserve: () => (slots > 0 ? (slots--, true) : false),
      deliver: (l: { task: { id: string } }) => void handed.push(l.task.id),
      unreserve: () => void slots++,
      accepts: () => slots > 0,
    };
  }

  it('a lease that got fewer tasks than it asked for drains its worker; a newly pending task undoes it', () => {
    const w = new LeaseWakeups(true);
    w.attach('w1', [MODEL], delivery(2));
    expect(w.claim(MODEL)).toBeNull();
    w.leaseAsked('w1', [MODEL]);
    w.leaseAnswered('w1', [MODEL], 2, 2);
    expect(w.drained('w1', [MODEL])).toBe(false);
    w.leaseAsked('w1', [MODEL]);
    w.leaseAnswered('w1', [MODEL], 2, 1);
    expect(w.drained('w1', [MODEL])).toBe(true);
    expect(w.claim({ taskType: 'text_to_speech', modelName: 'm' })).toBeNull();
    const one = w.claim(MODEL)!;
    const two = w.claim(MODEL)!;
    expect([one.workerId, two.workerId]).toEqual(['w1', 'w1']);
    // Both slots held: the next create is left to the store.
    expect(w.claim(MODEL)).toBeNull();
    two.abandoned();
    expect(w.claim(MODEL)).not.toBeNull();
    w.notify(MODEL);
    expect(w.drained('w1', [MODEL])).toBe(false);
    expect(w.claim(MODEL)).toBeNull();
  });

  it('a lease for some of a worker\'s models (its other engine full) drains only those', () => {
    const OTHER = { taskType: 'text_to_speech' as const, modelName: 'v' };
    const w = new LeaseWakeups(true);
    w.attach('w1', [MODEL, OTHER], delivery(2));
    w.leaseAsked('w1', [OTHER]);
    w.leaseAnswered('w1', [OTHER], 2, 0);
    expect(w.drained('w1', [OTHER])).toBe(true);
    expect(w.drained('w1', [MODEL, OTHER])).toBe(false);
    // MODEL may still have older pending tasks: its creates go to the store.
    expect(w.claim(MODEL)).toBeNull();
    expect(w.claim(OTHER)).not.toBeNull();
    w.notify(OTHER);
    expect(w.claim(OTHER)).toBeNull();
  });

  it('a task announced while a lease was answered counts as seen only where the store answers in commit order', () => {
    for (const ordered of [true, false]) {
      const w = new LeaseWakeups(ordered);
      w.attach('w1', [MODEL], delivery(1));
      w.leaseAsked('w1', [MODEL]);
      w.notify(MODEL);
      w.leaseAnswered('w1', [MODEL], 1, 0);
      expect(w.drained('w1', [MODEL])).toBe(ordered);
    }
  });
});

describe('retention of finished tasks', () => {
  it('the reaper deletes finished tasks and idempotency keys past their time, at most once a minute; unfinished tasks stay', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db'), synchronous: 'NORMAL' });
    const queue = new TaskQueue(store, new LocalEventBus(), { defaultMaxAttempts: 3, defaultTimeoutMs: 60_000, leaseMs: 5_000, taskRetentionMs: 200, idempotencyTtlMs: 200 });
    const keys = () => {
      const db = new Database(join(dir.path, 'tasks.db'), { readonly: true });
      try {
        return (db.prepare('SELECT key FROM idempotency_keys ORDER BY key').pluck().all() as string[]);
      } finally {
        db.close();
      }
    };
    const engine = new GateEngine();
    engine.autoResult = () => ({ ok: true });
    const worker = new Worker({ transport: new InProcessTransport(queue), models: [{ ...MODEL, engine, modelOptions: {} }], concurrency: 2, heartbeatMs: 1_000 });
    const reaper = new LeaseReaper(queue, { intervalMs: 50, timeoutGraceMs: 1_000 });
    const create = (modelName = MODEL.modelName) => queue.create({ ...MODEL, modelName, inputData: { prompt: 'x' }, parameters: {} }).then((r) => r.task.id);
    const exists = async (id: string) => (await store.getTask(id)) !== null;
    try {
      await worker.start();
      const done = [await create(), await create(), await create()];
      const waiting = await create('nobody-serves-this');
      const keyed = (await queue.create({ ...MODEL, modelName: 'nobody-serves-this', inputData: { prompt: 'k' }, parameters: {} }, { key: 'k-1', fingerprint: 'fp', ttlMs: 200 })).task.id;
      expect(keys()).toEqual(['k-1']);
      for (const id of done) await waitFor(async () => (await store.getTask(id))!.status === 'completed', 3000, 'completed');
      // Kept while retention is off, however old.
      const keeper = new TaskQueue(store, new LocalEventBus(), { defaultMaxAttempts: 3, defaultTimeoutMs: 60_000, leaseMs: 5_000 });
      expect(await keeper.prune(Date.now() + 86_400_000)).toMatchObject({ tasks: 0, keys: 0 });
      keeper.close();
      await new Promise((r) => setTimeout(r, 250));
      reaper.start();
      for (const id of done) await waitFor(async () => !(await exists(id)), 3000, 'deleted');
      expect(await exists(waiting)).toBe(true);
      // The key went; its task, still pending, did not.
      await waitFor(() => keys().length === 0, 3000, 'key deleted');
      expect(await exists(keyed)).toBe(true);
      // The next pass is a minute away: a task finished now outlives its retention until then.
      const later = await create();
      await waitFor(async () => (await store.getTask(later))!.status === 'completed', 3000, 'completed');
      await new Promise((r) => setTimeout(r, 400));
      expect(await exists(later)).toBe(true);
      expect(await queue.prune(Date.now() + 60_000)).toMatchObject({ tasks: 1, keys: 0 });
      expect(await exists(later)).toBe(false);
      const completed = (await store.counts()).find((c) => c.status === 'completed' && c.modelName === MODEL.modelName)!;
      expect([completed.current, completed.total]).toEqual([0, 4]);
      expect((await store.listTasks({ limit: 50, offset: 0, sortBy: 'created_at', sortOrder: 'asc' })).tasks.map((t) => t.id)).toEqual([waiting, keyed]);
    } finally {
      await reaper.stop();
      await worker.stop(0);
      queue.close();
      await store.close();
      dir.cleanup();
    }
  });
});

describe('the worker directory', () => {
  it('forgets workers silent past the retention that hold no task, once a minute at most', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db'), synchronous: 'NORMAL' });
    const queue = new TaskQueue(store, new LocalEventBus(), { defaultMaxAttempts: 3, defaultTimeoutMs: 60_000, leaseMs: 1_000, workerRetentionMs: 10_000 });
    const directory = queue.workers;
    try {
      const t0 = Date.now();
      const m = { taskType: 'text_generation' as const, modelName: 'm' };
      for (const id of ['crashed', 'busy', 'recent']) await store.upsertWorker({ id, models: [m], concurrency: 1, hardware: {} }, t0);
      await store.createTask({ id: newTaskId(t0), ...m, inputData: { prompt: 'x' }, parameters: {}, priority: 0, maxAttempts: 3, timeoutMs: 60_000, createdAt: t0 });
      expect(await store.leaseTasks({ workerId: 'busy', models: [m], limit: 1, leaseMs: 60_000, now: t0 })).toHaveLength(1);
      await store.touchWorker('recent', t0 + 15_000);
      const listed = async () => (await directory.list(t0 + 20_000)).map((w) => [w.id, w.status]);
      expect(await listed()).toEqual([['busy', 'offline'], ['crashed', 'offline'], ['recent', 'offline']]);
      // Past the retention: the silent worker with nothing leased goes; one still holding a task stays.
      expect(await queue.prune(t0 + 20_000)).toMatchObject({ workers: 1 });
      expect(await listed()).toEqual([['busy', 'offline'], ['recent', 'offline']]);
      // Within the minute nothing is looked at again, then the next one goes.
      expect(await queue.prune(t0 + 30_000)).toMatchObject({ workers: 0 });
      expect(await listed()).toEqual([['busy', 'offline'], ['recent', 'offline']]);
      expect(await queue.prune(t0 + 81_000)).toMatchObject({ workers: 1 });
      expect(await listed()).toEqual([['busy', 'offline']]);
    } finally {
      queue.close();
      await store.close();
      dir.cleanup();
    }
  });
});
