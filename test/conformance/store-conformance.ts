/**
 * One behaviour contract for every TaskStore. Each store's test file calls
 * `runStoreConformance` with a factory that gives a fresh, empty store.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { newLeaseToken, newTaskId } from '../../src/core/ids.js';
import type { TaskStore } from '../../src/core/store.js';
import type { NewTask, TaskType } from '../../src/core/task.js';

export interface StoreFixture {
  store: TaskStore;
  cleanup: () => Promise<void>;
}

const LLM = { taskType: 'text_generation' as TaskType, modelName: 'llm-a' };
const TTS = { taskType: 'text_to_speech' as TaskType, modelName: 'tts-a' };

let clock = 1_700_000_000_000;
function newTask(over: Partial<NewTask> = {}): NewTask {
  clock += 1;
  return {
    id: newTaskId(clock),
    taskType: LLM.taskType,
    modelName: LLM.modelName,
    inputData: { prompt: 'hello' },
    parameters: { temperature: 0.5 },
    priority: 0,
    maxAttempts: 3,
    timeoutMs: 60_000,
    createdAt: clock,
    ...over,
  };
}

export function runStoreConformance(name: string, factory: () => Promise<StoreFixture>): void {
  describe(`TaskStore conformance: ${name}`, () => {
    let fx: StoreFixture;
    let store: TaskStore;
    const now = () => clock + 1000;

    beforeEach(async () => {
      fx = await factory();
      store = fx.store;
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    async function leaseOne(workerId = 'w1', leaseMs = 30_000, at = now()) {
      const leased = await store.leaseTasks({ workerId, models: [LLM], limit: 1, leaseMs, now: at });
      expect(leased).toHaveLength(1);
      return leased[0];
    }

    it('creates a pending task and reads it back unchanged', async () => {
      const t = newTask({ inputData: { prompt: 'héllo ✓', nested: { a: [1, 2] } }, priority: 7 });
      const created = await store.createTask(t);
      expect(created).toMatchObject({
        id: t.id,
        status: 'pending',
        taskType: 'text_generation',
        modelName: 'llm-a',
        priority: 7,
        attempts: 0,
        maxAttempts: 3,
        timeoutMs: 60_000,
        createdAt: t.createdAt,
        startedAt: null,
        workerId: null,
        result: null,
        error: null,
      });
      expect(await store.getTask(t.id)).toEqual(created);
      expect((await store.getTask(t.id))!.inputData).toEqual({ prompt: 'héllo ✓', nested: { a: [1, 2] } });
      expect(await store.getTask(newTaskId())).toBeNull();
    });

    it('creates a task already leased to a waiting worker, with both moves logged and counted', async () => {
      const t = newTask({ webhookUrl: 'https://hooks.example.com/x', webhookEvents: ['pending', 'running'] });
      const token = newLeaseToken();
      const created = await store.createTask({ ...t, lease: { workerId: 'w1', token, expiresAt: t.createdAt + 1000 } });
      expect(created).toMatchObject({
        id: t.id,
        status: 'running',
        attempts: 1,
        workerId: 'w1',
        leaseToken: token,
        leaseExpiresAt: t.createdAt + 1000,
        startedAt: t.createdAt,
        updatedAt: t.createdAt,
      });
      expect(await store.getTask(t.id)).toEqual(created);
      // Nothing is left pending for another worker.
      expect(await store.leaseTasks({ workerId: 'w2', models: [LLM], limit: 5, leaseMs: 1000, now: t.createdAt + 1 })).toEqual([]);
      expect((await store.listEvents(t.id, 0, 10)).map((e) => [e.id, e.status])).toEqual([
        [1, 'pending'],
        [2, 'running'],
      ]);
      expect((await store.listDeliveries(t.id)).map((d) => d.event)).toEqual(['pending', 'running']);
      const rows = await store.counts();
      const get = (s: string) => rows.find((r) => r.modelName === 'llm-a' && r.status === s) ?? { current: 0, total: 0 };
      expect(get('pending')).toMatchObject({ current: 0, total: 1 });
      expect(get('running')).toMatchObject({ current: 1, total: 1 });
      expect((await store.runningTasks()).map((r) => [r.id, r.workerId])).toEqual([[t.id, 'w1']]);
      // It is an ordinary lease from here: the holder's token counts, an expiry requeues it.
      expect((await store.heartbeat(t.id, token, 1000, t.createdAt + 500)).kind).toBe('ok');
      expect((await store.reapExpiredLeases(t.createdAt + 1400, 10)).requeued).toHaveLength(0);
      const reaped = await store.reapExpiredLeases(t.createdAt + 1600, 10);
      expect(reaped.requeued.map((x) => [x.id, x.status, x.attempts])).toEqual([[t.id, 'pending', 1]]);
      expect((await store.completeTask(t.id, token, {}, t.createdAt + 1700)).kind).toBe('stale');
      const again = await leaseOne('w2', 1000, t.createdAt + 1800);
      expect(again.task.attempts).toBe(2);
    });

    it('leases highest priority first, then oldest, only for the models asked', async () => {
      const low = await store.createTask(newTask({ priority: 0 }));
      const high = await store.createTask(newTask({ priority: 5 }));
      const low2 = await store.createTask(newTask({ priority: 0 }));
      await store.createTask(newTask({ ...TTS, priority: 100 }));
      const leased = await store.leaseTasks({ workerId: 'w1', models: [LLM], limit: 10, leaseMs: 30_000, now: now() });
      expect(leased.map((l) => l.task.id)).toEqual([high.id, low.id, low2.id]);
      for (const l of leased) {
        expect(l.task.status).toBe('running');
        expect(l.task.workerId).toBe('w1');
        expect(l.task.attempts).toBe(1);
        expect(l.task.leaseExpiresAt).toBe(now() + 30_000);
        expect(l.task.startedAt).toBe(now());
        expect(l.leaseToken).toMatch(/^[0-9a-f]{32}$/);
      }
      expect(new Set(leased.map((l) => l.leaseToken)).size).toBe(3);
      expect(await store.leaseTasks({ workerId: 'w1', models: [LLM], limit: 10, leaseMs: 30_000, now: now() })).toEqual([]);
    });

    it('merges several models by priority and respects the limit', async () => {
      const a = await store.createTask(newTask({ priority: 1 }));
      const b = await store.createTask(newTask({ ...TTS, priority: 3 }));
      await store.createTask(newTask({ priority: 0 }));
      const leased = await store.leaseTasks({ workerId: 'w', models: [LLM, TTS], limit: 2, leaseMs: 1000, now: now() });
      expect(leased.map((l) => l.task.id)).toEqual([b.id, a.id]);
    });

    it('never hands the same task to two concurrent leases', async () => {
      for (let i = 0; i < 40; i++) await store.createTask(newTask());
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => store.leaseTasks({ workerId: `w${i}`, models: [LLM], limit: 7, leaseMs: 30_000, now: now() })),
      );
      const ids = results.flat().map((l) => l.task.id);
      expect(ids).toHaveLength(40);
      expect(new Set(ids).size).toBe(40);
    });

    it('heartbeat extends the lease and records progress; a wrong token is stale', async () => {
      await store.createTask(newTask());
      const l = await leaseOne('w1', 1000);
      const hb = await store.heartbeat(l.task.id, l.leaseToken, 5000, now() + 500, 0.4);
      expect(hb.kind).toBe('ok');
      if (hb.kind !== 'ok') return;
      expect(hb.task.leaseExpiresAt).toBe(now() + 5500);
      expect(hb.task.progress).toBeCloseTo(0.4);
      const kept = await store.heartbeat(l.task.id, l.leaseToken, 5000, now() + 600);
      expect(kept.kind === 'ok' && kept.task.progress).toBeCloseTo(0.4);
      expect((await store.heartbeat(l.task.id, 'f'.repeat(32), 5000, now())).kind).toBe('stale');
    });

    it('completes only under the current lease token; a stale token changes nothing', async () => {
      await store.createTask(newTask());
      const l = await leaseOne();
      const stale = await store.completeTask(l.task.id, '0'.repeat(32), { x: 1 }, now());
      expect(stale.kind).toBe('stale');
      expect((await store.getTask(l.task.id))!.status).toBe('running');
      const ok = await store.completeTask(l.task.id, l.leaseToken, { generated_text: 'hi' }, now() + 10);
      expect(ok.kind).toBe('ok');
      const done = await store.getTask(l.task.id);
      expect(done).toMatchObject({ status: 'completed', result: { generated_text: 'hi' }, completedAt: now() + 10, progress: 1 });
      const again = await store.completeTask(l.task.id, l.leaseToken, { generated_text: 'twice' }, now() + 20);
      expect(again.kind).toBe('stale');
      expect((await store.getTask(l.task.id))!.result).toEqual({ generated_text: 'hi' });
      expect((await store.failTask(l.task.id, l.leaseToken, { error: { code: 'X', message: 'x' }, retryable: false, now: now() })).kind).toBe('stale');
    });

    it('completing with the leased copy answers the task exactly as stored; a stale token still changes nothing', async () => {
      const t = await store.createTask(newTask({ webhookUrl: 'https://hooks.example.com/x', webhookEvents: ['completed'] }));
      const l = await leaseOne();
      expect((await store.heartbeat(t.id, l.leaseToken, 30_000, now() + 5, 0.5)).kind).toBe('ok');
      expect((await store.completeTask(t.id, 'f'.repeat(32), { no: true }, now() + 9, l.task)).kind).toBe('stale');
      const done = await store.completeTask(t.id, l.leaseToken, { generated_text: 'ok', n: [1, 2] }, now() + 10, l.task);
      expect(done.kind).toBe('ok');
      expect(done.task).toEqual(await store.getTask(t.id));
      expect(done.task).toMatchObject({ status: 'completed', progress: 1, completedAt: now() + 10, leaseToken: null, result: { generated_text: 'ok', n: [1, 2] } });
      expect((await store.listEvents(t.id, 0, 10)).map((e) => e.status)).toEqual(['pending', 'running', 'completed']);
      expect((await store.listDeliveries(t.id)).map((d) => d.event)).toEqual(['completed']);
      const rows = await store.counts();
      expect(rows.find((r) => r.status === 'completed')).toMatchObject({ current: 1, total: 1 });
      expect(rows.find((r) => r.status === 'running')).toMatchObject({ current: 0, total: 1 });
      expect((await store.completeTask(t.id, l.leaseToken, {}, now() + 20, l.task)).kind).toBe('stale');
    });

    it('a retryable failure requeues while attempts remain, then fails', async () => {
      const t = await store.createTask(newTask({ maxAttempts: 2 }));
      const l1 = await leaseOne();
      const r1 = await store.failTask(t.id, l1.leaseToken, { error: { code: 'GPU_LOST', message: 'device lost' }, retryable: true, now: now() });
      expect(r1.kind === 'ok' && r1.task).toMatchObject({ status: 'pending', attempts: 1, workerId: null, startedAt: null });
      const l2 = await leaseOne('w2');
      expect(l2.task.attempts).toBe(2);
      const r2 = await store.failTask(t.id, l2.leaseToken, { error: { code: 'GPU_LOST', message: 'again' }, retryable: true, now: now() });
      expect(r2.kind === 'ok' && r2.task).toMatchObject({ status: 'failed', error: { code: 'GPU_LOST', message: 'again' } });
    });

    it('a non-retryable failure fails at once', async () => {
      const t = await store.createTask(newTask());
      const l = await leaseOne();
      const r = await store.failTask(t.id, l.leaseToken, { error: { code: 'ENGINE_ERROR', message: 'bad' }, retryable: false, now: now() });
      expect(r.kind === 'ok' && r.task).toMatchObject({ status: 'failed', attempts: 1, completedAt: now(), error: { code: 'ENGINE_ERROR' } });
    });

    it('cancels pending and running tasks, refuses finished ones, and is idempotent', async () => {
      const p = await store.createTask(newTask());
      const c1 = await store.cancelTask(p.id, now());
      expect(c1.kind).toBe('cancelled');
      expect(c1.kind === 'cancelled' && c1.task).toMatchObject({ status: 'cancelled', cancelledAt: now() });
      expect(c1.kind === 'cancelled' && c1.wasRunning).toBe(false);
      expect((await store.cancelTask(p.id, now() + 5)).kind).toBe('already_cancelled');
      expect((await store.getTask(p.id))!.cancelledAt).toBe(now());

      await store.createTask(newTask());
      const l = await leaseOne();
      const c2 = await store.cancelTask(l.task.id, now());
      expect(c2.kind === 'cancelled' && c2.wasRunning).toBe(true);
      // The worker holding the lease learns of the cancel, and cannot complete it.
      expect((await store.heartbeat(l.task.id, l.leaseToken, 1000, now())).kind).toBe('cancelled');
      expect((await store.completeTask(l.task.id, l.leaseToken, { x: 1 }, now())).kind).toBe('cancelled');
      expect((await store.getTask(l.task.id))!.status).toBe('cancelled');

      await store.createTask(newTask());
      const l3 = await leaseOne();
      await store.completeTask(l3.task.id, l3.leaseToken, {}, now());
      const c3 = await store.cancelTask(l3.task.id, now());
      expect(c3.kind === 'not_cancellable' && c3.task.status).toBe('completed');
      expect((await store.cancelTask(newTaskId(), now())).kind).toBe('not_found');
    });

    it('names the tasks cancelled under a worker among those it says it runs, in one call', async () => {
      for (let i = 0; i < 4; i++) await store.createTask(newTask());
      const [a, b] = [await leaseOne('w-a'), await leaseOne('w-a')];
      const other = await leaseOne('w-b');
      const pending = (await store.createTask(newTask())).id;
      await store.cancelTask(a.task.id, now());
      await store.cancelTask(other.task.id, now());
      await store.cancelTask(pending, now());
      const ids = [a.task.id, b.task.id, other.task.id, pending, newTaskId()];
      // Only a's: b still runs, the other worker's and the never-leased task are not w-a's.
      expect(await store.cancelledAmong('w-a', ids)).toEqual([a.task.id]);
      expect(await store.cancelledAmong('w-b', ids)).toEqual([other.task.id]);
      expect(await store.cancelledAmong('w-a', [])).toEqual([]);
      expect(await store.cancelledAmong('w-c', ids)).toEqual([]);
    });

    it('requeues expired leases and fences the old holder out', async () => {
      const t = await store.createTask(newTask({ maxAttempts: 2 }));
      const l1 = await leaseOne('w1', 1000, now());
      expect((await store.reapExpiredLeases(now() + 999, 100)).requeued).toHaveLength(0);
      const r = await store.reapExpiredLeases(now() + 1001, 100);
      expect(r.requeued.map((x) => x.id)).toEqual([t.id]);
      expect(r.requeued[0]).toMatchObject({ status: 'pending', attempts: 1, workerId: null, leaseToken: null });
      const l2 = await leaseOne('w2', 1000, now() + 2000);
      expect(l2.task.attempts).toBe(2);
      // The first worker comes back late: its token no longer counts.
      expect((await store.completeTask(t.id, l1.leaseToken, { late: true }, now() + 2100)).kind).toBe('stale');
      expect((await store.heartbeat(t.id, l1.leaseToken, 1000, now() + 2100)).kind).toBe('stale');
      // Attempts spent: the next expiry fails it.
      const r2 = await store.reapExpiredLeases(now() + 5000, 100);
      expect(r2.failed.map((x) => x.id)).toEqual([t.id]);
      expect(r2.failed[0]).toMatchObject({ status: 'failed', error: { code: 'LEASE_EXPIRED' } });
      expect((await store.completeTask(t.id, l2.leaseToken, {}, now() + 5100)).kind).toBe('stale');
    });

    it("ends every lease one worker holds, and only that worker's, for the reaper to take back", async () => {
      const a1 = await store.createTask(newTask({ maxAttempts: 2 }));
      const a2 = await store.createTask(newTask({ maxAttempts: 1 }));
      const b = await store.createTask(newTask());
      const waiting = await store.createTask(newTask());
      const la1 = await leaseOne('gone', 60_000, now());
      const la2 = await leaseOne('gone', 60_000, now());
      await leaseOne('alive', 60_000, now());
      expect([la1.task.id, la2.task.id]).toEqual([a1.id, a2.id]);
      expect(await store.expireLeasesOf('nobody', now() + 10)).toBe(0);
      expect(await store.expireLeasesOf('gone', now() + 10)).toBe(2);
      // Already ended: a second call finds nothing to end.
      expect(await store.expireLeasesOf('gone', now() + 10)).toBe(0);
      const r = await store.reapExpiredLeases(now() + 10, 100);
      expect(r.requeued.map((x) => x.id)).toEqual([a1.id]);
      expect(r.requeued[0]).toMatchObject({ status: 'pending', attempts: 1, workerId: null, leaseToken: null });
      expect(r.failed.map((x) => x.id)).toEqual([a2.id]);
      expect(r.failed[0]).toMatchObject({ status: 'failed', error: { code: 'LEASE_EXPIRED' } });
      expect(await store.getTask(b.id)).toMatchObject({ status: 'running', workerId: 'alive', attempts: 1 });
      expect(await store.getTask(waiting.id)).toMatchObject({ status: 'pending', attempts: 0 });
      expect((await store.completeTask(a1.id, la1.leaseToken, {}, now() + 20)).kind).toBe('stale');
      expect((await store.counts()).find((c) => c.status === 'running')).toMatchObject({ current: 1 });
      // Those the worker says it still runs keep their lease.
      const kept = await leaseOne('alive', 60_000, now() + 30);
      expect(await store.expireLeasesOf('alive', now() + 40, [b.id, kept.task.id])).toBe(0);
      expect(await store.expireLeasesOf('alive', now() + 40, [kept.task.id])).toBe(1);
      expect((await store.reapExpiredLeases(now() + 40, 100)).requeued.map((x) => x.id)).toEqual([b.id]);
      expect(await store.getTask(kept.task.id)).toMatchObject({ status: 'running', workerId: 'alive', leaseToken: kept.leaseToken });
    });

    it('fails running tasks that outlive their timeout', async () => {
      const t = await store.createTask(newTask({ timeoutMs: 1000 }));
      await leaseOne('w1', 60_000, now());
      expect(await store.reapTimedOut(now() + 1500, 1000, 10)).toHaveLength(0);
      const timedOut = await store.reapTimedOut(now() + 2500, 1000, 10);
      expect(timedOut.map((x) => x.id)).toEqual([t.id]);
      expect(timedOut[0]).toMatchObject({ status: 'failed', error: { code: 'TIMEOUT' } });
    });

    it('release gives a task back without spending an attempt', async () => {
      const t = await store.createTask(newTask());
      const l = await leaseOne();
      const r = await store.releaseTask(t.id, l.leaseToken, now());
      expect(r.kind === 'ok' && r.task).toMatchObject({ status: 'pending', attempts: 0, workerId: null });
      expect((await store.releaseTask(t.id, l.leaseToken, now())).kind).toBe('stale');
    });

    it('lists with filters, sorting, pagination and exact totals', async () => {
      const made = [];
      for (let i = 0; i < 6; i++) made.push(await store.createTask(newTask(i % 2 ? TTS : LLM)));
      const l = await leaseOne();
      await store.completeTask(l.task.id, l.leaseToken, {}, now());
      await store.cancelTask(made[1].id, now());

      const all = await store.listTasks({ limit: 50, offset: 0, sortBy: 'created_at', sortOrder: 'desc' });
      expect(all.total).toBe(6);
      expect(all.tasks.map((t) => t.id)).toEqual(made.map((t) => t.id).reverse());
      const asc = await store.listTasks({ limit: 2, offset: 1, sortBy: 'created_at', sortOrder: 'asc' });
      expect(asc.tasks.map((t) => t.id)).toEqual([made[1].id, made[2].id]);
      expect(asc.total).toBe(6);

      const pending = await store.listTasks({ status: 'pending', limit: 50, offset: 0, sortBy: 'created_at', sortOrder: 'desc' });
      expect(pending.total).toBe(4);
      expect(pending.tasks.every((t) => t.status === 'pending')).toBe(true);
      const tts = await store.listTasks({ taskType: 'text_to_speech', limit: 50, offset: 0, sortBy: 'created_at', sortOrder: 'asc' });
      expect(tts.total).toBe(3);
      expect(tts.tasks.map((t) => t.id)).toEqual([made[1].id, made[3].id, made[5].id]);
      const byModel = await store.listTasks({ modelName: 'llm-a', status: 'completed', limit: 50, offset: 0, sortBy: 'created_at', sortOrder: 'desc' });
      expect(byModel.total).toBe(1);
      expect(byModel.tasks[0]).toMatchObject({ id: made[0].id, status: 'completed' });

      const byStatus = await store.listTasks({ limit: 50, offset: 0, sortBy: 'status', sortOrder: 'asc' });
      expect(byStatus.tasks.map((t) => t.status)).toEqual(['cancelled', 'completed', 'pending', 'pending', 'pending', 'pending']);
      const byType = await store.listTasks({ limit: 50, offset: 0, sortBy: 'task_type', sortOrder: 'desc' });
      expect(byType.tasks.map((t) => t.taskType)).toEqual([...Array(3).fill('text_to_speech'), ...Array(3).fill('text_generation')]);
      const beyond = await store.listTasks({ limit: 10, offset: 100, sortBy: 'created_at', sortOrder: 'desc' });
      expect(beyond).toEqual({ tasks: [], total: 6 });
    });

    it('keeps current and all-time counts per model and status', async () => {
      const a = await store.createTask(newTask());
      await store.createTask(newTask());
      await store.createTask(newTask(TTS));
      const l = await leaseOne();
      await store.failTask(l.task.id, l.leaseToken, { error: { code: 'E', message: 'e' }, retryable: true, now: now() });
      const l2 = await leaseOne();
      await store.completeTask(l2.task.id, l2.leaseToken, {}, now());
      void a;
      const rows = await store.counts();
      const get = (m: string, s: string) => rows.find((r) => r.modelName === m && r.status === s) ?? { current: 0, total: 0 };
      expect(get('llm-a', 'pending')).toMatchObject({ current: 1, total: 3 }); // 2 created + 1 requeue
      expect(get('llm-a', 'running')).toMatchObject({ current: 0, total: 2 });
      expect(get('llm-a', 'completed')).toMatchObject({ current: 1, total: 1 });
      expect(get('tts-a', 'pending')).toMatchObject({ current: 1, total: 1 });
    });

    it('reports queue position in lease order', async () => {
      const a = await store.createTask(newTask());
      const b = await store.createTask(newTask());
      const urgent = await store.createTask(newTask({ priority: 10 }));
      await store.createTask(newTask(TTS));
      expect(await store.queuePosition(urgent)).toBe(0);
      expect(await store.queuePosition(a)).toBe(1);
      expect(await store.queuePosition(b)).toBe(2);
    });

    it('reports mean run times of recent completions', async () => {
      for (const ms of [100, 300]) {
        await store.createTask(newTask());
        const l = await leaseOne('w', 30_000, now());
        await store.completeTask(l.task.id, l.leaseToken, {}, now() + ms);
      }
      const rows = await store.recentRunTimes(10);
      expect(rows).toEqual([{ taskType: 'text_generation', modelName: 'llm-a', meanMs: 200, samples: 2 }]);
    });

    it('registers, refreshes, lists and removes workers', async () => {
      const w = await store.upsertWorker({ id: 'gpu-1', models: [LLM, TTS], concurrency: 4, hardware: { gpu_name: 'H100', gpu_memory_mb: 81_559 } }, 1000);
      expect(w).toEqual({ id: 'gpu-1', models: [LLM, TTS], concurrency: 4, hardware: { gpu_name: 'H100', gpu_memory_mb: 81_559 }, registeredAt: 1000, lastSeenAt: 1000 });
      const again = await store.upsertWorker({ id: 'gpu-1', models: [{ ...LLM, concurrency: 1 }, TTS], concurrency: 2, hardware: {} }, 2000);
      expect(again).toMatchObject({ models: [{ ...LLM, concurrency: 1 }, TTS], concurrency: 2, registeredAt: 1000, lastSeenAt: 2000 });
      expect((await store.listWorkers()).find((x) => x.id === 'gpu-1')!.models).toEqual([{ ...LLM, concurrency: 1 }, TTS]);
      expect(await store.touchWorker('gpu-1', 3000)).toBe(true);
      expect(await store.touchWorker('ghost', 3000)).toBe(false);
      await store.upsertWorker({ id: 'cpu-1', models: [TTS], concurrency: 1, hardware: {} }, 3000);
      expect((await store.listWorkers()).map((x) => [x.id, x.lastSeenAt])).toEqual([
        ['cpu-1', 3000],
        ['gpu-1', 3000],
      ]);
      await store.removeWorker('gpu-1');
      expect((await store.listWorkers()).map((x) => x.id)).toEqual(['cpu-1']);
      // Long silent: forgotten, unless a task is still leased to it.
      await store.upsertWorker({ id: 'holder', models: [LLM], concurrency: 1, hardware: {} }, 3000);
      await store.createTask(newTask());
      await leaseOne('holder', 60_000, 3000);
      await store.upsertWorker({ id: 'fresh', models: [LLM], concurrency: 1, hardware: {} }, 9000);
      expect(await store.forgetWorkers(5000)).toEqual(['cpu-1']);
      expect((await store.listWorkers()).map((x) => x.id)).toEqual(['fresh', 'holder']);
      expect(await store.forgetWorkers(5000)).toEqual([]);
    });

    it('lists running tasks with their workers', async () => {
      await store.createTask(newTask());
      await store.createTask(newTask());
      const l = await leaseOne('w-7');
      expect(await store.runningTasks()).toEqual([{ id: l.task.id, workerId: 'w-7' }]);
    });

    it('stores artifacts byte-exactly and replaces by name', async () => {
      const t = await store.createTask(newTask());
      const bytes = Buffer.from([0, 1, 2, 255, 254, 10, 13, 0]);
      const meta = await store.putArtifact({ taskId: t.id, name: 'speech.wav', contentType: 'audio/wav', data: bytes }, 5000);
      expect(meta).toEqual({ taskId: t.id, name: 'speech.wav', contentType: 'audio/wav', size: 8, createdAt: 5000 });
      const got = await store.getArtifact(t.id, 'speech.wav');
      expect(got?.data.equals(bytes)).toBe(true);
      expect(got?.contentType).toBe('audio/wav');
      await store.putArtifact({ taskId: t.id, name: 'speech.wav', contentType: 'audio/wav', data: Buffer.from('new') }, 6000);
      await store.putArtifact({ taskId: t.id, name: 'a.png', contentType: 'image/png', data: Buffer.alloc(3) }, 6000);
      expect((await store.getArtifact(t.id, 'speech.wav'))?.data.toString()).toBe('new');
      expect((await store.listArtifacts(t.id)).map((a) => [a.name, a.size])).toEqual([
        ['a.png', 3],
        ['speech.wav', 3],
      ]);
      expect(await store.getArtifact(t.id, 'missing.wav')).toBeNull();
    });

    it('logs every status change in order, with output and progress under the lease', async () => {
      const t = await store.createTask(newTask());
      const l = await leaseOne();
      const appended = await store.appendEvents(t.id, l.leaseToken, [{ text: 'Hel' }, { text: 'lo', progress: 0.5 }, { progress: 0.75 }], now());
      expect(appended.kind).toBe('ok');
      expect(appended.events.map((e) => [e.type, e.text, e.progress])).toEqual([
        ['output', 'Hel', null],
        ['output', 'lo', 0.5],
        ['progress', null, 0.75],
      ]);
      expect((await store.getTask(t.id))!.progress).toBeCloseTo(0.75);
      expect((await store.appendEvents(t.id, 'f'.repeat(32), [{ text: 'x' }], now())).kind).toBe('stale');
      await store.completeTask(t.id, l.leaseToken, { generated_text: 'Hello' }, now());
      const log = await store.listEvents(t.id, 0, 100);
      expect(log.map((e) => (e.type === 'status' ? e.status : e.type))).toEqual(['pending', 'running', 'output', 'output', 'progress', 'completed']);
      const ids = log.map((e) => e.id);
      expect([...ids].sort((a, b) => a - b)).toEqual(ids);
      expect((await store.listEvents(t.id, ids[2], 100)).map((e) => e.id)).toEqual(ids.slice(3));
      expect((await store.appendEvents(t.id, l.leaseToken, [{ text: 'late' }], now())).kind).toBe('stale');

      await store.createTask(newTask());
      const l2 = await leaseOne();
      await store.cancelTask(l2.task.id, now());
      expect((await store.appendEvents(l2.task.id, l2.leaseToken, [{ text: 'x' }], now())).kind).toBe('cancelled');
    });

    it('creates once per idempotency key', async () => {
      const first = await store.createTaskOnce(newTask(), 'key-1', 'fp-a', 86_400_000);
      expect(first.kind).toBe('created');
      const again = await store.createTaskOnce(newTask(), 'key-1', 'fp-a', 86_400_000);
      expect(again.kind === 'replayed' && first.kind === 'created' && again.task.id).toBe(first.kind === 'created' ? first.task.id : '');
      const other = await store.createTaskOnce(newTask(), 'key-1', 'fp-b', 86_400_000);
      expect(other.kind).toBe('conflict');
      const racing = await Promise.all(Array.from({ length: 6 }, () => store.createTaskOnce(newTask(), 'key-2', 'fp', 86_400_000)));
      const ids = new Set(racing.map((r) => (r.kind === 'conflict' ? r.taskId : r.task.id)));
      expect(ids.size).toBe(1);
      expect(racing.filter((r) => r.kind === 'created')).toHaveLength(1);
      const all = await store.listTasks({ limit: 50, offset: 0, sortBy: 'created_at', sortOrder: 'desc' });
      expect(all.total).toBe(2);
      // An expired key starts over.
      const later = newTask();
      later.createdAt += 2 * 86_400_000;
      expect((await store.createTaskOnce(later, 'key-1', 'fp-b', 86_400_000)).kind).toBe('created');
    });

    it('deletes finished tasks past the retention with what belongs to them; current counts drop, totals do not', async () => {
      await store.createTask(newTask());
      const a = await leaseOne();
      await store.appendEvents(a.task.id, a.leaseToken, [{ text: 'hi' }], now());
      await store.putArtifact({ taskId: a.task.id, name: 'out.wav', contentType: 'audio/wav', data: Buffer.from('RIFF') }, now());
      await store.completeTask(a.task.id, a.leaseToken, { ok: 1 }, now());
      await store.createTask(newTask());
      const b = await leaseOne();
      await store.failTask(b.task.id, b.leaseToken, { error: { code: 'X', message: 'x' }, retryable: false, now: now() });
      const c = await store.createTask(newTask());
      await store.cancelTask(c.id, now());
      await store.createTask(newTask({ webhookUrl: 'https://hooks.example/x', webhookEvents: ['completed'] }));
      const h = await leaseOne();
      await store.completeTask(h.task.id, h.leaseToken, {}, now());
      await store.createTask(newTask());
      const r = await leaseOne();
      const p = await store.createTask(newTask());
      const cutoff = now() + 1;
      // Finished after the cutoff, though created before it.
      const late = await store.createTask(newTask({ ...TTS }));
      const [l] = await store.leaseTasks({ workerId: 'w1', models: [TTS], limit: 1, leaseMs: 30_000, now: cutoff + 5 });
      await store.completeTask(late.id, l.leaseToken, {}, cutoff + 10);
      const count = async (status: string) => (await store.counts()).filter((x) => x.status === status).reduce((n, x) => [n[0] + x.current, n[1] + x.total], [0, 0]);
      const before = { completed: await count('completed'), failed: await count('failed'), cancelled: await count('cancelled') };

      expect(await store.deleteFinished(cutoff, 100)).toBe(3);
      for (const id of [a.task.id, b.task.id, c.id]) expect(await store.getTask(id)).toBeNull();
      expect(await store.listEvents(a.task.id, 0, 100)).toEqual([]);
      expect(await store.getArtifact(a.task.id, 'out.wav')).toBeNull();
      // Kept: a webhook still to deliver, unfinished tasks, one finished after the cutoff.
      for (const id of [h.task.id, r.task.id, p.id, late.id]) expect(await store.getTask(id)).not.toBeNull();
      expect(await count('completed')).toEqual([before.completed[0] - 1, before.completed[1]]);
      expect(await count('failed')).toEqual([before.failed[0] - 1, before.failed[1]]);
      expect(await count('cancelled')).toEqual([before.cancelled[0] - 1, before.cancelled[1]]);
      expect((await store.listTasks({ limit: 50, offset: 0, sortBy: 'created_at', sortOrder: 'desc' })).total).toBe(4);
      expect(await store.deleteFinished(cutoff, 100)).toBe(0);

      // Once its webhook is delivered it goes too; the limit is kept.
      const [d] = await store.listDeliveries(h.task.id);
      await store.recordDelivery(d.id, { ok: true, statusCode: 200, error: null, retryAt: null }, cutoff + 20);
      expect(await store.deleteFinished(cutoff + 100, 1)).toBe(1);
      expect(await store.deleteFinished(cutoff + 100, 1)).toBe(1);
      expect(await store.deleteFinished(cutoff + 100, 1)).toBe(0);
      expect(await store.getTask(h.task.id)).toBeNull();
      expect(await store.getTask(late.id)).toBeNull();
      expect((await store.getTask(r.task.id))!.status).toBe('running');

      // An idempotency key whose task is gone starts over with a new task.
      const once = newTask({ ...TTS });
      const first = await store.createTaskOnce(once, 'kept-key', 'fp', 86_400_000);
      expect(first.kind).toBe('created');
      await store.cancelTask(once.id, once.createdAt);
      expect(await store.deleteFinished(once.createdAt + 1, 10)).toBe(1);
      const retry = newTask({ ...TTS });
      const again = await store.createTaskOnce(retry, 'kept-key', 'fp', 86_400_000);
      expect(again.kind === 'created' && again.task.id).toBe(retry.id);
      expect((await store.getTask(retry.id))!.status).toBe('pending');
    });

    it('deletes idempotency keys created before a time, in bounded batches; a live key still replays', async () => {
      const t0 = now();
      const old1 = newTask({ createdAt: t0 });
      const old2 = newTask({ createdAt: t0 + 1 });
      const live = newTask({ createdAt: t0 + 1000 });
      await store.createTaskOnce(old1, 'old-1', 'fp', 86_400_000);
      await store.createTaskOnce(old2, 'old-2', 'fp', 86_400_000);
      await store.createTaskOnce(live, 'live', 'fp', 86_400_000);
      expect(await store.deleteExpiredKeys(t0 + 500, 1)).toBe(1);
      expect(await store.deleteExpiredKeys(t0 + 500, 10)).toBe(1);
      expect(await store.deleteExpiredKeys(t0 + 500, 10)).toBe(0);
      // The tasks stay; their keys no longer replay, the live one does.
      expect(await store.getTask(old1.id)).not.toBeNull();
      const again = newTask({ createdAt: t0 + 2000 });
      expect((await store.createTaskOnce(again, 'old-1', 'fp', 86_400_000)).kind).toBe('created');
      const replay = await store.createTaskOnce(newTask({ createdAt: t0 + 2000 }), 'live', 'fp', 86_400_000);
      expect(replay.kind === 'replayed' && replay.task.id).toBe(live.id);
    });

    it('queues webhook deliveries for the statuses asked for, and records attempts', async () => {
      const t = await store.createTask(newTask({ webhookUrl: 'https://hooks.example/x', webhookEvents: ['completed', 'failed'] }));
      expect((await store.getTask(t.id))).toMatchObject({ webhookUrl: 'https://hooks.example/x', webhookEvents: ['completed', 'failed'] });
      await store.createTask(newTask()); // no webhook
      const l = await leaseOne();
      expect(await store.listDeliveries(t.id)).toEqual([]);
      await store.completeTask(t.id, l.leaseToken, {}, now());
      const [d] = await store.listDeliveries(t.id);
      expect(d).toMatchObject({ taskId: t.id, event: 'completed', url: 'https://hooks.example/x', state: 'pending', attempts: 0 });
      const claimed = await store.claimDeliveries(now() + 1, 10, 30_000);
      expect(claimed.map((c) => c.id)).toEqual([d.id]);
      expect(await store.claimDeliveries(now() + 2, 10, 30_000)).toEqual([]);
      await store.recordDelivery(d.id, { ok: false, statusCode: 500, error: 'HTTP 500', retryAt: now() + 5000 }, now() + 3);
      expect((await store.listDeliveries(t.id))[0]).toMatchObject({ state: 'pending', attempts: 1, lastStatusCode: 500, nextAttemptAt: now() + 5000 });
      expect((await store.claimDeliveries(now() + 5000, 10, 30_000)).map((c) => c.id)).toEqual([d.id]);
      await store.recordDelivery(d.id, { ok: true, statusCode: 204, error: null, retryAt: null }, now() + 6000);
      expect((await store.listDeliveries(t.id))[0]).toMatchObject({ state: 'delivered', attempts: 2, lastStatusCode: 204, deliveredAt: now() + 6000 });
      const t2 = await store.createTask(newTask({ webhookUrl: 'https://hooks.example/y', webhookEvents: ['pending'] }));
      const [d2] = await store.listDeliveries(t2.id);
      expect(d2.event).toBe('pending');
      await store.recordDelivery(d2.id, { ok: false, statusCode: null, error: 'refused', retryAt: null }, now());
      expect((await store.listDeliveries(t2.id))[0]).toMatchObject({ state: 'failed', attempts: 1, lastError: 'refused' });
    });

    it('answers ping while open', async () => {
      await expect(store.ping()).resolves.toBeUndefined();
    });
  });
}
