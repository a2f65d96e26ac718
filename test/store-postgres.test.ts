import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { newTaskId } from '../src/core/ids.js';
import { PostgresTaskStore } from '../src/store/postgres/postgres-store.js';
import { runStoreConformance } from './conformance/store-conformance.js';
import { dropSchema, PG_URL, uniqueSchema } from './helpers/pg.js';

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
      await sa.createTask({ id, taskType: 'text_generation', modelName: 'm', inputData: { prompt: 'x' }, parameters: {}, priority: 0, maxAttempts: 1, timeoutMs: 1000, createdAt: Date.now() });
      expect(await sa.getTask(id)).not.toBeNull();
      expect(await sb.getTask(id)).toBeNull();
      await sa.close();
      await sb.close();
    } finally {
      await dropSchema(a);
      await dropSchema(b);
    }
  });

  it('reports SERVICE_UNAVAILABLE when the database cannot be reached', async () => {
    await expect(PostgresTaskStore.open({ url: 'postgres://postgres@127.0.0.1:1/test', schema: 'x' })).rejects.toMatchObject({
      code: 'SERVICE_UNAVAILABLE',
    });
  });

  it('keeps counter shards consistent under concurrent writers', async () => {
    const schema = uniqueSchema();
    try {
      const store = await PostgresTaskStore.open({ url: PG_URL, schema, poolSize: 8 });
      const now = Date.now();
      await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          store.createTask({ id: newTaskId(now + i), taskType: 'text_generation', modelName: 'm', inputData: { prompt: 'x' }, parameters: {}, priority: 0, maxAttempts: 1, timeoutMs: 1000, createdAt: now + i }),
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
      await store.close();
    } finally {
      await dropSchema(schema);
    }
  });
});

