import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { newTaskId } from '../src/core/ids.js';
import { SqliteTaskStore } from '../src/store/sqlite/sqlite-store.js';
import { runStoreConformance } from './conformance/store-conformance.js';
import { tempDir } from './helpers/server.js';

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

/** A new text-generation task for model "m". */
const newTask = (id: string, createdAt = Date.now(), prompt = 'p') => ({
  id,
  taskType: 'text_generation' as const,
  modelName: 'm',
  inputData: { prompt },
  parameters: {},
  priority: 0,
  maxAttempts: 1,
  timeoutMs: 1000,
  createdAt,
});

describe('SqliteTaskStore specifics', () => {
  it('keeps tasks across close and reopen', async () => {
    const dir = tempDir();
    const path = join(dir.path, 'tasks.db');
    const s1 = SqliteTaskStore.open({ path });
    const id = newTaskId();
    await s1.createTask(newTask(id));
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
        store.createTask(newTask(newTaskId(now + i), now + i, String(i))),
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

  it('rejects writes after close with SERVICE_UNAVAILABLE', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db') });
    await store.close();
    await expect(store.getTask(newTaskId())).rejects.toMatchObject({ code: 'SERVICE_UNAVAILABLE' });
    dir.cleanup();
  });

  it('fails only the write that throws when writes share a commit; the others commit', async () => {
    const dir = tempDir();
    const store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db') });
    const now = Date.now();
    const a = newTaskId(now);
    const b = newTaskId(now + 1);
    // Same turn, so same batch: the duplicate id breaks a UNIQUE constraint mid-batch.
    const [ra, rdup, rb] = await Promise.allSettled([store.createTask(newTask(a, now)), store.createTask(newTask(a, now)), store.createTask(newTask(b, now))]);
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
    const t = newTask(newTaskId());
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
      store.createTask(newTask(newTaskId(now + i), now + i, String(i))),
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
