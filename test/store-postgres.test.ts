import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { newTaskId } from '../src/core/ids.js';
import type { NewTask } from '../src/core/task.js';
import { PostgresTaskStore } from '../src/store/postgres/postgres-store.js';
import { runStoreConformance } from './conformance/store-conformance.js';
import { dropSchema, PG_URL, uniqueSchema } from './helpers/pg.js';
import { plainTask } from './helpers/tasks.js';

runStoreConformance('postgres', async () => {
  const schema = uniqueSchema();
  const store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 10 });
  return {
    store,
    cleanup: async () => {
      await store.close();
      await dropSchema(schema);
    },
  };
});

/** How many transactions last wrote these tasks' rows (their distinct xmin). */
async function transactionsOf(store: PostgresTaskStore, ids: string[]): Promise<number> {
  return (await store.pool.query('SELECT count(DISTINCT xmin::text)::int AS n FROM tasks WHERE id = ANY($1)', [ids])).rows[0].n;
}

/** Runs `fn` on a store in a schema of its own, then closes the store and drops the schema. */
async function inFreshSchema(poolSize: number, fn: (store: PostgresTaskStore, schema: string) => Promise<void>): Promise<void> {
  const schema = uniqueSchema();
  try {
    const store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize });
    try {
      await fn(store, schema);
    } finally {
      await store.close();
    }
  } finally {
    await dropSchema(schema);
  }
}

describe('PostgresTaskStore specifics', () => {
  it('nodes starting together migrate once, under the advisory lock', async () => {
    const schema = uniqueSchema();
    try {
      const stores = await Promise.all(Array.from({ length: 5 }, () => PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 2 })));
      const { rows } = await stores[0].pool.query('SELECT version FROM schema_migrations ORDER BY version');
      const files = readdirSync(new URL('../src/store/postgres/migrations/', import.meta.url)).filter((f) => f.endsWith('.sql'));
      expect(rows.map((r) => r.version)).toEqual(files.map((_, i) => i + 1));
      await Promise.all(stores.map((s) => s.close()));
    } finally {
      await dropSchema(schema);
    }
  });

  it('refuses a schema newer than this build, with a clear message', async () => {
    const schema = uniqueSchema();
    try {
      const s = await PostgresTaskStore.open({ url: PG_URL, schema });
      await s.pool.query(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '999_future', 0)`);
      await s.close();
      await expect(PostgresTaskStore.open({ url: PG_URL, schema })).rejects.toThrow(/schema version 999 is newer than this build knows/);
    } finally {
      await dropSchema(schema);
    }
  });

  it('keeps schemas apart', async () => {
    const a = uniqueSchema();
    const b = uniqueSchema();
    try {
      const sa = await PostgresTaskStore.open({ url: PG_URL, schema: a });
      const sb = await PostgresTaskStore.open({ url: PG_URL, schema: b });
      const id = newTaskId();
      await sa.createTask(plainTask(id));
      expect(await sa.getTask(id)).not.toBeNull();
      expect(await sb.getTask(id)).toBeNull();
      await sa.close();
      await sb.close();
    } finally {
      await dropSchema(a);
      await dropSchema(b);
    }
  });

  it('inserts the creates of one turn in one transaction, in call order; a bad one fails alone; close waits for queued ones', async () => {
    const schema = uniqueSchema();
    try {
      let store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 2 });
      const seqOrder = async () => (await store.pool.query('SELECT id FROM tasks ORDER BY seq')).rows.map((r) => r.id);

      const batch = Array.from({ length: 20 }, () => plainTask());
      const created = await Promise.all(batch.map((t) => store.createTask(t)));
      expect(created.map((t) => [t.id, t.status])).toEqual(batch.map((t) => [t.id, 'pending']));
      expect(await transactionsOf(store, batch.map((t) => t.id))).toBe(1);
      expect(await seqOrder()).toEqual(batch.map((t) => t.id));

      // A create reusing an id fails; the others of its turn are still created, in order.
      const next = Array.from({ length: 6 }, () => plainTask());
      next[3] = plainTask(batch[0].id);
      const settled = await Promise.allSettled(next.map((t) => store.createTask(t)));
      expect(settled.map((r) => r.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected', 'fulfilled', 'fulfilled']);
      const good = next.filter((_, i) => i !== 3).map((t) => t.id);
      expect(await seqOrder()).toEqual([...batch.map((t) => t.id), ...good]);
      expect((await store.counts()).find((c) => c.status === 'pending')?.current).toBe(25);

      // Closing right after a create: the create is inserted before the pool ends.
      const late = plainTask();
      const pending = store.createTask(late);
      await store.close();
      await expect(pending).resolves.toMatchObject({ id: late.id, status: 'pending' });
      store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 2 });
      expect(await store.getTask(late.id)).toMatchObject({ id: late.id, status: 'pending' });
      await store.close();
    } finally {
      await dropSchema(schema);
    }
  });

  it('splits a large turn of creates into statements of at most 500 rows or about 8 MiB, in call order', () =>
    inFreshSchema(2, async (store) => {
      const task = (prompt = 'x') => plainTask(undefined, Date.now(), prompt);

      const many = Array.from({ length: 1_200 }, () => task());
      await Promise.all(many.map((t) => store.createTask(t)));
      expect(await transactionsOf(store, many.map((t) => t.id))).toBe(3);

      const big = Array.from({ length: 5 }, () => task('y'.repeat(3 * 1024 * 1024)));
      await Promise.all(big.map((t) => store.createTask(t)));
      expect(await transactionsOf(store, big.map((t) => t.id))).toBe(2);

      const order = (await store.pool.query('SELECT id FROM tasks ORDER BY seq')).rows.map((r) => r.id);
      expect(order).toEqual([...many, ...big].map((t) => t.id));
    }));

  it('extends the leases of the heartbeats of one turn in one transaction, each with its own outcome', () =>
    inFreshSchema(2, async (store) => {
      const models = [{ taskType: 'text_generation' as const, modelName: 'm' }];
      const at = Date.now();
      await Promise.all(Array.from({ length: 8 }, () => store.createTask({ ...plainTask(undefined, at), timeoutMs: 60_000 })));
      const leased = await store.leaseTasks({ workerId: 'w', models, limit: 8, leaseMs: 10_000, now: at + 1 });
      expect(leased).toHaveLength(8);
      const [cancelled, staleOne, twice, ...rest] = leased;
      expect((await store.cancelTask(cancelled.task.id, at + 2)).kind).toBe('cancelled');
      await store.heartbeat(rest[0].task.id, rest[0].leaseToken, 10_000, at + 2, 0.25);

      const outcomes = await Promise.all([
        store.heartbeat(cancelled.task.id, cancelled.leaseToken, 30_000, at + 3),
        store.heartbeat(staleOne.task.id, 'not-the-token', 30_000, at + 3, 0.9),
        store.heartbeat(twice.task.id, twice.leaseToken, 30_000, at + 3, 0.5),
        store.heartbeat(twice.task.id, twice.leaseToken, 30_000, at + 3, 0.5),
        // Without progress, the last one stays.
        ...rest.map((l, i) => store.heartbeat(l.task.id, l.leaseToken, 30_000, at + 3, i === 0 ? undefined : i / 10)),
      ]);
      expect(outcomes.map((o) => o.kind)).toEqual(['cancelled', 'stale', 'ok', 'ok', ...rest.map(() => 'ok')]);
      for (const [i, l] of rest.entries()) {
        expect(outcomes[4 + i]).toMatchObject({ kind: 'ok', task: { id: l.task.id, status: 'running', leaseExpiresAt: at + 30_003, progress: i === 0 ? 0.25 : i / 10 } });
      }
      expect(await transactionsOf(store, rest.map((l) => l.task.id))).toBe(1);
      // The stale heartbeat changed nothing.
      expect(await store.getTask(staleOne.task.id)).toMatchObject({ leaseExpiresAt: at + 10_001, progress: null });
    }));

  it('while closing, writes what arrives before the pool ends: a completion keeps its result, a create is saved', async () => {
    const schema = uniqueSchema();
    try {
      let store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 2 });
      const models = [{ taskType: 'text_generation' as const, modelName: 'm' }];
      const at = Date.now();
      await Promise.all(Array.from({ length: 3 }, () => store.createTask({ ...plainTask(undefined, at), timeoutMs: 60_000 })));
      const [done, beat, failed] = await store.leaseTasks({ workerId: 'w', models, limit: 3, leaseMs: 60_000, now: at + 1 });
      // A create is queued for this turn; close() starts draining it, and the node's last
      // lease writes arrive while it does.
      const queued = store.createTask(plainTask(undefined, at + 2));
      const closing = store.close();
      const late = plainTask(undefined, at + 3);
      const writes = await Promise.all([
        store.completeTask(done.task.id, done.leaseToken, { text: 'finished during shutdown' }, at + 4),
        store.heartbeat(beat.task.id, beat.leaseToken, 60_000, at + 4, 0.5),
        store.failTask(failed.task.id, failed.leaseToken, { retryable: false, error: { code: 'ENGINE_ERROR', message: 'boom' }, now: at + 4 }),
        store.createTask(late),
        queued,
      ]);
      await closing;
      expect(writes.slice(0, 3).map((o) => (o as { kind: string }).kind)).toEqual(['ok', 'ok', 'ok']);
      expect(writes[3]).toMatchObject({ id: late.id, status: 'pending' });
      await expect(store.createTask(plainTask())).rejects.toThrow(/closed/);

      store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 2 });
      expect(await store.getTask(done.task.id)).toMatchObject({ status: 'completed', result: { text: 'finished during shutdown' } });
      expect(await store.getTask(beat.task.id)).toMatchObject({ status: 'running', progress: 0.5 });
      expect(await store.getTask(failed.task.id)).toMatchObject({ status: 'failed' });
      expect(await store.getTask(late.id)).toMatchObject({ status: 'pending' });
      expect(await store.getTask((writes[4] as { id: string }).id)).toMatchObject({ status: 'pending' });
      await store.close();
    } finally {
      await dropSchema(schema);
    }
  });

  it('logs, counts and hooks the creates of one statement once each, by statement triggers, in seq order', () =>
    inFreshSchema(2, async (store, schema) => {
      const at = Date.now();
      const hooked = (i: number) => i % 3 === 0;
      const batch: NewTask[] = Array.from({ length: 30 }, (_, i) => ({
        ...plainTask(undefined, at + i),
        modelName: i % 2 ? 'm' : 'n',
        webhookUrl: hooked(i) ? 'https://hooks.example/x' : null,
        webhookEvents: hooked(i) ? ['pending', 'completed'] : i % 3 === 1 ? ['completed'] : null,
      }));
      await Promise.all(batch.map((t) => store.createTask(t)));
      expect(await transactionsOf(store, batch.map((t) => t.id))).toBe(1);
      // One status event per task, numbered in the order the tasks were inserted.
      const events = (await store.pool.query("SELECT task_id, status, at FROM task_events WHERE type = 'status' ORDER BY id")).rows;
      expect(events).toEqual(batch.map((t) => ({ task_id: t.id, status: 'pending', at: t.createdAt })));
      // A delivery for each task subscribed to `pending`, none for the others.
      const deliveries = (await store.pool.query('SELECT task_id, event, url FROM webhook_deliveries ORDER BY id')).rows;
      expect(deliveries).toEqual(batch.filter((_, i) => hooked(i)).map((t) => ({ task_id: t.id, event: 'pending', url: 'https://hooks.example/x' })));
      const pending = (await store.counts()).filter((c) => c.status === 'pending').map((c) => [c.modelName, c.current, c.total]);
      expect(pending.sort()).toEqual([['m', 15, 15], ['n', 15, 15]]);
      // A leased create still logs pending, then running, and counts the pending move in the total only.
      const leasedTask = { ...plainTask(undefined, at + 100), lease: { workerId: 'w', token: 'tok', expiresAt: at + 60_000 } };
      await store.createTask(leasedTask);
      expect((await store.listEvents(leasedTask.id, 0, 10)).map((e) => e.status)).toEqual(['pending', 'running']);
      const m = Object.fromEntries((await store.counts()).filter((c) => c.modelName === 'm').map((c) => [c.status, [c.current, c.total]]));
      expect(m).toMatchObject({ pending: [15, 16], running: [1, 1] });
      // Inserts fire statement triggers; status changes and deletes keep their row triggers.
      const triggers = (await store.pool.query(
        `SELECT tgname, (tgtype & 1) = 1 AS per_row FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal ORDER BY tgname`,
        [`"${schema}".tasks`],
      )).rows;
      expect(triggers).toEqual([
        { tgname: 'tasks_count', per_row: true },
        { tgname: 'tasks_count_insert', per_row: false },
        { tgname: 'tasks_events', per_row: true },
        { tgname: 'tasks_events_insert', per_row: false },
      ]);
    }));

  it('completes the completions of one turn in one transaction, each with its own outcome', () =>
    inFreshSchema(2, async (store) => {
      const models = [{ taskType: 'text_generation' as const, modelName: 'm' }];
      const at = Date.now();
      await Promise.all(
        Array.from({ length: 12 }, () =>
          store.createTask({ ...plainTask(undefined, at), timeoutMs: 60_000 }),
        ),
      );
      const leased = await store.leaseTasks({ workerId: 'w', models, limit: 12, leaseMs: 60_000, now: at + 1 });
      expect(leased).toHaveLength(12);
      const [cancelled, staleOne, twice, ...rest] = leased;
      expect((await store.cancelTask(cancelled.task.id, at + 2)).kind).toBe('cancelled');

      const outcomes = await Promise.all([
        store.completeTask(cancelled.task.id, cancelled.leaseToken, { n: 0 }, at + 3),
        store.completeTask(staleOne.task.id, 'not-the-token', { n: 1 }, at + 3),
        store.completeTask(twice.task.id, twice.leaseToken, { n: 2 }, at + 3),
        store.completeTask(twice.task.id, twice.leaseToken, { n: 2 }, at + 3),
        ...rest.map((l, i) => store.completeTask(l.task.id, l.leaseToken, { n: 3 + i }, at + 3)),
      ]);
      expect(outcomes.map((o) => o.kind)).toEqual(['cancelled', 'stale', expect.any(String), expect.any(String), ...rest.map(() => 'ok')]);
      // The same completion twice in one turn: exactly one of them completes the task.
      expect([outcomes[2].kind, outcomes[3].kind].sort()).toEqual(['ok', 'stale']);
      for (const [i, l] of rest.entries()) {
        expect(outcomes[4 + i]).toMatchObject({ kind: 'ok', task: { id: l.task.id, status: 'completed', result: { n: 3 + i }, completedAt: at + 3 } });
      }
      expect(await transactionsOf(store, rest.map((l) => l.task.id))).toBe(1);
      expect(Object.fromEntries((await store.counts()).filter((c) => c.current > 0).map((c) => [c.status, c.current]))).toEqual({
        cancelled: 1,
        completed: 10,
        running: 1,
      });
    }));

  it('reports SERVICE_UNAVAILABLE when the database cannot be reached', async () => {
    await expect(PostgresTaskStore.open({ url: 'postgres://postgres@127.0.0.1:1/test', schema: 'x' })).rejects.toMatchObject({
      code: 'SERVICE_UNAVAILABLE',
    });
  });

  it('keeps counter shards consistent under concurrent writers', () =>
    inFreshSchema(8, async (store) => {
      const now = Date.now();
      await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          store.createTask(plainTask(newTaskId(now + i), now + i, 'x')),
        ),
      );
      const leased = (
        await Promise.all(Array.from({ length: 8 }, (_, i) => store.leaseTasks({ workerId: `w${i}`, models: [{ taskType: 'text_generation', modelName: 'm' }], limit: 10, leaseMs: 1000, now })))
      ).flat();
      const rows = await store.counts();
      const cur = (s: string) => rows.find((r) => r.status === s)?.current ?? 0;
      expect(cur('pending') + cur('running')).toBe(200);
      expect(cur('running')).toBe(leased.length);
      const { rows: shards } = await store.pool.query('SELECT count(DISTINCT shard)::int AS n FROM task_counts');
      expect(shards[0].n).toBeGreaterThan(1);
      const direct = await store.pool.query("SELECT count(*)::int AS n FROM tasks WHERE status = 'pending'");
      expect(cur('pending')).toBe(direct.rows[0].n);
    }));
});

