import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { newTaskId } from '../src/core/ids.js';
import { SqliteTaskStore } from '../src/store/sqlite/sqlite-store.js';
import { loadMigrations } from '../src/store/sql-files.js';
import { runStoreConformance } from './conformance/store-conformance.js';
import { tempDir } from './helpers/server.js';
import { plainTask } from './helpers/tasks.js';

runStoreConformance('sqlite', async () => {
  const dir = tempDir();
  const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db'), synchronous: 'NORMAL' });
  return {
    store,
    cleanup: async () => {
      await store.close();
      dir.cleanup();
    },
  };
});


describe('SqliteTaskStore specifics', () => {
  it('keeps tasks across close and reopen', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'tasks.db');
    const s1 = SqliteTaskStore.open({ path });
    const id = newTaskId();
    await s1.createTask(plainTask(id));
    await s1.close();
    const s2 = SqliteTaskStore.open({ path });
    expect((await s2.getTask(id))?.status).toBe('pending');
    await s2.close();
    dir.cleanup();
  });

  it('commits writes that arrive together in one group, each resolving after commit', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db') });
    const now = Date.now();
    const created = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        store.createTask(plainTask(newTaskId(now + i), now + i, String(i))),
      ),
    );
    expect(new Set(created.map((t) => t.id)).size).toBe(200);
    expect((await store.listTasks({ limit: 1, offset: 0, sortBy: 'created_at', sortOrder: 'desc' })).total).toBe(200);
    await store.close();
    dir.cleanup();
  });

  it('refuses a database whose schema is newer than this build', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'tasks.db');
    const s = SqliteTaskStore.open({ path });
    await s.close();
    const Database = (await import('better-sqlite3')).default;
    const db = new Database(path);
    db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, ?, ?)').run('999_future', Date.now());
    db.close();
    expect(() => SqliteTaskStore.open({ path })).toThrow(/schema version 999 is newer/);
    dir.cleanup();
  });

  it('upgrades a schema-6 database: rows and event ids kept, same checks, no temporary index on the write path, two b-trees fewer', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'tasks.db');
    const Database = (await import('better-sqlite3')).default;
    const old = new Database(path);
    old.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)');
    for (const m of loadMigrations(new URL('../src/store/sqlite/migrations/', import.meta.url)).filter((m) => m.version <= 6)) {
      old.exec(m.sql);
      old.prepare('INSERT INTO schema_migrations VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
    }
    const id = newTaskId();
    old.prepare(
      `INSERT INTO tasks (id, status, task_type, model_name, input_data, parameters, max_attempts, timeout_ms, created_at, updated_at, webhook_url, webhook_events)
       VALUES (?, 'running', 'text_generation', 'm', '{"prompt":"p"}', '{}', 1, 1000, 1, 2, 'https://example.test/hook', '["completed"]')`,
    ).run(id);
    old.prepare("INSERT INTO task_events (task_id, type, status, at) VALUES (?, 'status', 'running', 2)").run(id);
    old.prepare("INSERT INTO webhook_deliveries (task_id, event, url, next_attempt_at, created_at) VALUES (?, 'running', 'https://example.test/hook', 3, 3)").run(id);
    const oldEventId = old.prepare('SELECT id FROM task_events WHERE task_id = ?').pluck().get(id) as number;
    old.close();

    const store = SqliteTaskStore.open({ path });
    const task = await store.getTask(id);
    expect(task).toMatchObject({ status: 'running', inputData: { prompt: 'p' }, webhookUrl: 'https://example.test/hook', webhookEvents: ['completed'] });
    // Events keep their ids; the next one in the task's log counts on from them.
    expect((await store.listEvents(id, 0, 10)).map((e) => [e.id, e.status])).toEqual([[oldEventId, 'running']]);
    expect((await store.cancelTask(id, 5)).kind).toBe('cancelled');
    expect((await store.listEvents(id, 0, 10)).map((e) => [e.id, e.status])).toEqual([
      [oldEventId, 'running'],
      [oldEventId + 1, 'cancelled'],
    ]);
    await store.close();

    const db = new Database(path);
    expect(db.prepare('SELECT count(*) AS n FROM webhook_deliveries').get()).toEqual({ n: 1 });
    expect(db.prepare('SELECT max(version) AS v FROM schema_migrations').get()).toEqual({ v: 9 });
    // Migration 009: the task from before it keeps its log as stored, with no derived first event.
    expect(db.prepare('SELECT implicit_first_event FROM tasks WHERE id = ?').pluck().get(id)).toBe(0);
    // The checks still hold...
    expect(() => db.prepare("UPDATE tasks SET status = 'lost' WHERE id = ?").run(id)).toThrow(/CHECK constraint/);
    expect(() => db.prepare("INSERT INTO task_events (task_id, id, type, at) VALUES (?, 9, 'other', 1)").run(id)).toThrow(/CHECK constraint/);
    expect(() => db.prepare("UPDATE webhook_deliveries SET state = 'lost'").run()).toThrow(/CHECK constraint/);
    // ...as plain comparisons: an IN list would open a temporary index on every write.
    const plan = (sql: string, ...args: unknown[]) => (db.prepare(`EXPLAIN ${sql}`).all(...args) as Array<{ opcode: string }>).map((o) => o.opcode);
    expect(plan("UPDATE tasks SET status = 'completed' WHERE id = ?", id)).not.toContain('OpenEphemeral');
    expect(plan("INSERT INTO task_events (task_id, id, type, status, at) VALUES (?, 9, 'status', 'completed', 1)", id)).not.toContain('OpenEphemeral');
    expect(plan("UPDATE webhook_deliveries SET state = 'delivered' WHERE id = 1")).not.toContain('OpenEphemeral');
    // Indexes and the delete trigger came back with the tables.
    const names = (db.prepare("SELECT name FROM sqlite_master WHERE type IN ('index', 'trigger') AND name NOT LIKE 'sqlite_%'").all() as Array<{ name: string }>).map((r) => r.name);
    for (const n of ['tasks_lease', 'tasks_lease_expiry', 'tasks_status_created', 'tasks_type_created', 'tasks_model_created', 'tasks_running_deadline', 'tasks_count_delete', 'webhook_deliveries_due', 'webhook_deliveries_task']) {
      expect(names).toContain(n);
    }
    // Migration 008: events live in their key's b-tree alone, and no index orders all tasks by time.
    expect(names).not.toContain('task_events_task');
    expect(names).not.toContain('tasks_created');
    expect(db.prepare("SELECT sql FROM sqlite_master WHERE name = 'task_events'").pluck().get()).toMatch(/WITHOUT ROWID/);
    db.close();
    dir.cleanup();
  });

  it("derives a new task's first event from its row, numbers the next ones from 2, and stores no row for it", async () => {
    const dir = tempDir();
    const path = join(dir.path, 'tasks.db');
    const store = SqliteTaskStore.open({ path });
    const now = Date.now();
    const plain = plainTask(newTaskId(now), now);
    const leased = { ...plainTask(newTaskId(now + 1), now + 1), lease: { workerId: 'w', token: 'tok', expiresAt: now + 60_000 } };
    await Promise.all([store.createTask(plain), store.createTask(leased)]);
    const log = async (id: string, after = 0) => (await store.listEvents(id, after, 10)).map((e) => [e.id, e.type, e.status ?? e.text, e.at]);
    expect(await log(plain.id)).toEqual([[1, 'status', 'pending', now]]);
    expect(await log(leased.id)).toEqual([
      [1, 'status', 'pending', now + 1],
      [2, 'status', 'running', now + 1],
    ]);
    // Output and status changes count on from the derived event; a resume after it skips it.
    await store.appendEvents(leased.id, 'tok', [{ text: 'hello' }], now + 5);
    expect((await store.completeTask(leased.id, 'tok', { ok: true }, now + 6)).kind).toBe('ok');
    expect((await store.cancelTask(plain.id, now + 7)).kind).toBe('cancelled');
    expect(await log(leased.id, 1)).toEqual([
      [2, 'status', 'running', now + 1],
      [3, 'output', 'hello', now + 5],
      [4, 'status', 'completed', now + 6],
    ]);
    expect(await log(plain.id)).toEqual([
      [1, 'status', 'pending', now],
      [2, 'status', 'cancelled', now + 7],
    ]);
    expect((await store.listEvents(plain.id, 0, 1)).map((e) => e.id)).toEqual([1]);
    await store.close();
    const Database = (await import('better-sqlite3')).default;
    const db = new Database(path, { readonly: true });
    // One b-tree fewer per create: the first events are not rows.
    const stored = db.prepare('SELECT task_id, id FROM task_events').all() as Array<{ task_id: string; id: number }>;
    expect(stored.map((r) => [r.task_id === plain.id ? 'plain' : 'leased', r.id]).sort()).toEqual([
      ['leased', 2],
      ['leased', 3],
      ['leased', 4],
      ['plain', 2],
    ]);
    db.close();
    dir.cleanup();
  });

  it('rejects writes after close with SERVICE_UNAVAILABLE', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db') });
    await store.close();
    await expect(store.getTask(newTaskId())).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
    dir.cleanup();
  });

  it('numbers the events of each task from 1, status changes and streamed output alike, whatever other tasks log', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db') });
    const now = Date.now();
    const a = newTaskId(now);
    const b = newTaskId(now + 1);
    await store.createTask(plainTask(a, now));
    await store.createTask(plainTask(b, now + 1));
    const leased = await store.leaseTasks({ workerId: 'w1', models: [{ taskType: 'text_generation', modelName: 'm' }], limit: 2, leaseMs: 30_000, now: now + 2 });
    const token = (id: string) => leased.find((l) => l.task.id === id)!.leaseToken;
    const appended = await store.appendEvents(a, token(a), [{ text: 'Hel' }, { text: 'lo', progress: 0.5 }], now + 3);
    expect(appended.events.map((e) => e.id)).toEqual([3, 4]);
    expect((await store.completeTask(b, token(b), { ok: true }, now + 4)).kind).toBe('ok');
    expect((await store.completeTask(a, token(a), { text: 'Hello' }, now + 5)).kind).toBe('ok');
    const log = async (id: string) => (await store.listEvents(id, 0, 10)).map((e) => [e.id, e.type, e.status ?? e.text]);
    expect(await log(a)).toEqual([
      [1, 'status', 'pending'],
      [2, 'status', 'running'],
      [3, 'output', 'Hel'],
      [4, 'output', 'lo'],
      [5, 'status', 'completed'],
    ]);
    expect(await log(b)).toEqual([
      [1, 'status', 'pending'],
      [2, 'status', 'running'],
      [3, 'status', 'completed'],
    ]);
    // Resuming after an id reads the rest of that task's log only.
    expect((await store.listEvents(a, 3, 10)).map((e) => e.id)).toEqual([4, 5]);
    await store.close();
    dir.cleanup();
  });

  it('fails only the write that throws when writes share a commit; the others commit', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db') });
    const now = Date.now();
    const a = newTaskId(now);
    const b = newTaskId(now + 1);
    // Same turn, so same batch: the duplicate id breaks a UNIQUE constraint mid-batch.
    const [ra, rdup, rb] = await Promise.allSettled([store.createTask(plainTask(a, now)), store.createTask(plainTask(a, now)), store.createTask(plainTask(b, now))]);
    expect(ra.status).toBe('fulfilled');
    expect(rdup.status).toBe('rejected');
    expect(String((rdup as PromiseRejectedResult).reason)).toMatch(/UNIQUE/);
    expect(rb.status).toBe('fulfilled');
    expect((await store.getTask(a))?.status).toBe('pending');
    expect((await store.getTask(b))?.status).toBe('pending');
    // The failed write's count move was rolled back with it.
    expect((await store.counts()).find((c) => c.status === 'pending')?.current).toBe(2);
    await store.close();
    dir.cleanup();
  });

  it('answers SERVICE_UNAVAILABLE, in writes and in ping, once its writer thread is gone', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db') });
    const t = plainTask(newTaskId());
    await store.createTask(t);
    await (store as unknown as { thread: { terminate(): Promise<number> } }).thread.terminate();
    await expect(store.createTask({ ...t, id: newTaskId() })).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
    await expect(store.ping()).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
    // What was acknowledged is still readable.
    expect((await store.getTask(t.id))?.status).toBe('pending');
    await store.close();
    dir.cleanup();
  });

  it('close() commits and acknowledges the writes already queued, then refuses new ones', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'tasks.db');
    const store = SqliteTaskStore.open({ path });
    const now = Date.now();
    const pending = Array.from({ length: 100 }, (_, i) =>
      store.createTask(plainTask(newTaskId(now + i), now + i, String(i))),
    );
    await store.close();
    const created = await Promise.all(pending);
    await expect(store.createTask({ ...created[0], id: newTaskId() } as never)).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
    const reopened = SqliteTaskStore.open({ path });
    for (const t of created) expect((await reopened.getTask(t.id))?.status).toBe('pending');
    await reopened.close();
    dir.cleanup();
  });
});
