import pg from 'pg';
import { StoreUnavailableError } from '../../core/errors.js';
import type {
  Artifact,
  ArtifactMeta,
  CancelOutcome,
  CreateOnceOutcome,
  DeliveryResult,
  TaskLogEvent,
  WebhookDelivery,
  CountRow,
  FailRequest,
  LeasedTask,
  LeaseOutcome,
  LeaseRequest,
  ListQuery,
  ListResult,
  ReapResult,
  RunningTaskRef,
  TaskStore,
  WorkerRecord,
} from '../../core/store.js';
import { newTaskRecord, type ModelRef, type NewTask, type TaskRecord, type TaskType } from '../../core/task.js';
import {
  insertRow,
  listOrderBy,
  rowToArtifactMeta,
  rowToDelivery,
  rowToEvent,
  rowToSummary,
  rowToTask,
  rowToWorker,
  SUMMARY_COLUMNS,
  type ArtifactRow,
  type DeliveryRow,
  type EventRow,
  type InsertRow,
  type SummaryRow,
  type TaskRow,
  type WorkerRow,
} from '../rows.js';
import { modelToWire } from '../../core/worker-protocol.js';
import { loadCommands, loadMigrations } from '../sql-files.js';

const COMMANDS = [
  'insert_task',
  'insert_tasks',
  'insert_task_leased',
  'get_task',
  'lease_tasks',
  'heartbeat',
  'heartbeat_tasks',
  'complete_task',
  'complete_tasks',
  'fail_task',
  'release_task',
  'cancel_task',
  'requeue_or_fail_expired',
  'fail_timed_out',
  'queue_position',
  'counts',
  'recent_run_times',
  'claim_deliveries',
  'record_delivery',
] as const;
type Command = (typeof COMMANDS)[number];

const SQL = loadCommands(new URL('./commands/', import.meta.url), COMMANDS);
const MIGRATIONS = loadMigrations(new URL('./migrations/', import.meta.url));
const MIGRATION_LOCK = 7_146_221_901; // advisory lock id: "task-manager migrate"

export interface PostgresStoreOptions {
  url: string;
  schema?: string;
  poolSize?: number;
}

/** int8 (counts, epoch ms) as numbers: every value we keep fits in 2^53. */
const TYPES = {
  getTypeParser: (oid: number, format?: 'text' | 'binary') =>
    oid === 20 ? (v: string) => Number(v) : (pg.types.getTypeParser as (o: number, f?: string) => (v: string) => unknown)(oid, format),
};

export function quoteIdent(name: string): string {
  if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(name)) throw new Error(`Invalid schema name "${name}": use letters, digits and _`);
  return `"${name}"`;
}

interface Queued<T> {
  resolve: (out: T) => void;
  reject: (err: unknown) => void;
}
type QueuedCreate = Queued<TaskRecord> & { task: NewTask; row: InsertRow };
type QueuedCompletion = Queued<LeaseOutcome> & { id: string; leaseToken: string; result: string; now: number };
type QueuedHeartbeat = Queued<LeaseOutcome> & { id: string; leaseToken: string; expiresAt: number; progress: number | null; now: number };

/**
 * Group commit on PostgreSQL: what one turn of the event loop queued goes in one statement,
 * one round trip and one commit, where a statement each took about four times the
 * database's time. At most 500 rows or about 8 MiB go in one statement (PostgreSQL refuses
 * a message over 1 GiB); a larger turn goes in several, one after another, in order.
 */
class TurnBatcher<I extends Queued<never>> {
  private queued: I[] = [];
  /** The keys of what is queued, where items have one. */
  private keys = new Set<string>();
  private scheduled = false;
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(
    private readonly send: (items: I[]) => Promise<void>,
    private readonly bytes: (item: I) => number,
    private readonly key?: (item: I) => string,
  ) {}

  add(item: I): void {
    this.queued.push(item);
    if (this.key) this.keys.add(this.key(item));
    if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => this.flush());
    }
  }

  /** Whether an item with this key is queued and not yet sent. */
  has(key: string): boolean {
    return this.keys.has(key);
  }

  /** Sends what is queued now, and settles when everything sent so far has. */
  drain(): Promise<unknown> {
    this.flush();
    return Promise.allSettled([...this.inFlight]);
  }

  private flush(): void {
    this.scheduled = false;
    const items = this.queued;
    this.queued = [];
    if (this.keys.size) this.keys = new Set();
    if (items.length === 0) return;
    const sent = this.sendInStatements(items).finally(() => this.inFlight.delete(sent));
    this.inFlight.add(sent);
  }

  private async sendInStatements(items: I[]): Promise<void> {
    let from = 0;
    while (from < items.length) {
      let to = from;
      let bytes = 0;
      while (to < items.length && to - from < ROWS_PER_STATEMENT && (to === from || bytes < BYTES_PER_STATEMENT)) bytes += this.bytes(items[to++]);
      const statement = items.slice(from, to);
      // `send` settles every item; should it throw, none is left waiting (a settled one stays so).
      await this.send(statement).catch((err: unknown) => statement.forEach((item) => item.reject(err)));
      from = to;
    }
  }
}

const ROWS_PER_STATEMENT = 500;
const BYTES_PER_STATEMENT = 8 * 1024 * 1024;

/** Error classes (SQLSTATE) and socket errors that mean the database is not usable now. */
export function isUnavailable(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | null;
  const code = e?.code ?? '';
  if (/^(08|53|57P|58)/.test(code)) return true;
  if (['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'EAI_AGAIN'].includes(code)) return true;
  return /Connection terminated|connection timeout|Client has encountered a connection error|Cannot use a pool after calling end/i.test(e?.message ?? '');
}

function wrap(err: unknown, what: string): unknown {
  if (err instanceof StoreUnavailableError) return err;
  return isUnavailable(err) ? new StoreUnavailableError(`Task store unavailable: ${what}`, err) : err;
}

export function poolConfig(opts: PostgresStoreOptions): pg.PoolConfig {
  const schema = opts.schema ?? 'task_manager';
  return {
    connectionString: opts.url,
    max: opts.poolSize ?? 10,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    options: `-c search_path=${quoteIdent(schema)},public`,
    types: TYPES as pg.CustomTypesConfig,
  };
}

/**
 * The scale-out store: any number of nodes share it. Every method is one statement (one
 * transaction), but the creates, and the completions, of one turn of the event loop share
 * one (`TurnBatcher`); leases use FOR UPDATE SKIP LOCKED so concurrent workers never collide.
 */
export class PostgresTaskStore implements TaskStore {
  readonly kind = 'postgres' as const;
  readonly answersInCommitOrder = false;
  private readonly listSql = new Map<string, { page: string; total: string }>();
  private closed = false;
  /**
   * Set by close(): what is queued goes in, and what arrives until the pool ends goes in a
   * statement of its own, so a worker finishing while the node stops keeps its result.
   */
  private closing = false;
  private readonly busy = new Set<Promise<unknown>>();
  private readonly creates = new TurnBatcher<QueuedCreate>(
    (batch) => this.insertTogether(batch),
    (c) => c.row[3].length + c.row[4].length + 256,
  );
  private readonly completions = new TurnBatcher<QueuedCompletion>(
    (batch) => this.completeTogether(batch),
    (c) => c.result.length + 128,
    (c) => c.id,
  );
  private readonly heartbeats = new TurnBatcher<QueuedHeartbeat>(
    (batch) => this.heartbeatTogether(batch),
    () => 128,
    (h) => h.id,
  );

  private constructor(
    readonly pool: pg.Pool,
    readonly schema: string,
  ) {}

  static async open(opts: PostgresStoreOptions): Promise<PostgresTaskStore> {
    const schema = opts.schema ?? 'task_manager';
    const pool = new pg.Pool(poolConfig(opts));
    // An idle client losing its connection must not crash the process; the next query reconnects.
    pool.on('error', () => {});
    try {
      await migrate(pool, schema);
    } catch (err) {
      await pool.end().catch(() => {});
      throw wrap(err, 'cannot migrate');
    }
    return new PostgresTaskStore(pool, schema);
  }

  /** Queries and transactions under way: close() lets them finish before the pool ends. */
  private tracked<T>(work: Promise<T>): Promise<T> {
    this.busy.add(work);
    const done = () => this.busy.delete(work);
    work.then(done, done);
    return work;
  }

  private async q<R>(what: string, sql: string, params: unknown[] = []): Promise<R[]> {
    if (this.closed) throw new StoreUnavailableError('Task store is closed');
    try {
      return (await this.tracked(this.pool.query(sql, params))).rows as R[];
    } catch (err) {
      throw wrap(err, what);
    }
  }

  private run<R>(name: Command, params: unknown[] = []): Promise<R[]> {
    return this.q<R>(name, SQL[name], params);
  }

  async createTask(t: NewTask): Promise<TaskRecord> {
    const lease = t.lease;
    if (lease) return rowToTask((await this.run<TaskRow>('insert_task_leased', [...insertRow(t), lease.workerId, lease.token, lease.expiresAt]))[0]);
    if (this.closing) return rowToTask((await this.run<TaskRow>('insert_task', insertRow(t)))[0]);
    return new Promise((resolve, reject) => this.creates.add({ task: t, row: insertRow(t), resolve, reject }));
  }

  private insertTogether(batch: QueuedCreate[]): Promise<void> {
    // Columns of insert_tasks.sql: the row's fields but updated_at (index 9, = created_at).
    const columns = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11].map((i) => batch.map((c) => c.row[i]));
    return this.together(batch, (c) => c.row[0], () => this.run<{ id: string }>('insert_tasks', columns), {
      alone: (c) => this.run<TaskRow>('insert_task', c.row).then(([r]) => c.resolve(rowToTask(r)), c.reject),
      // The insert returns ids only: the record is what the caller gave, as a new row holds it.
      found: (c) => c.resolve(newTaskRecord(c.task)),
      missing: (c) => c.reject(new Error(`task ${c.row[0]} was not returned by its insert`)),
    });
  }

  /**
   * Runs one statement for a batch and settles each item by the row it returned. If the
   * statement fails for anything but an unreachable database (a bad row, a deadlock with
   * another node), each item goes on its own, in order, so that only a bad one fails.
   */
  private async together<I extends Queued<never>, R extends { id: string }>(
    batch: I[],
    key: (item: I) => string,
    statement: () => Promise<R[]>,
    settle: { alone: (item: I) => Promise<void>; found: (item: I, row: R) => void; missing: (item: I) => void },
  ): Promise<void> {
    if (batch.length === 1) return settle.alone(batch[0]);
    let rows: R[];
    try {
      rows = await statement();
    } catch (err) {
      if (err instanceof StoreUnavailableError) {
        for (const item of batch) item.reject(err);
        return;
      }
      for (const item of batch) await settle.alone(item);
      return;
    }
    const byId = new Map(rows.map((r) => [r.id, r]));
    for (const item of batch) {
      const row = byId.get(key(item));
      if (row) settle.found(item, row);
      else settle.missing(item);
    }
  }

  /** Runs `fn` in one transaction on one pooled connection. */
  private transaction<T>(what: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('Task store is closed'));
    return this.tracked(this.inTransaction(what, fn));
  }

  private async inTransaction<T>(what: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      throw wrap(err, what);
    }
    try {
      await client.query('BEGIN');
      const out = await fn(client);
      await client.query('COMMIT');
      return out;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => {});
      throw wrap(err, what);
    } finally {
      client.release();
    }
  }

  /** One transaction; the key's row lock makes concurrent retries with one key wait for the first. */
  createTaskOnce(t: Omit<NewTask, 'lease'>, key: string, fingerprint: string, ttlMs: number): Promise<CreateOnceOutcome> {
    return this.transaction('create task', async (client) => {
      const claim = await client.query<{ task_id: string }>(
        `INSERT INTO idempotency_keys (key, fingerprint, task_id, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (key) DO UPDATE SET fingerprint = EXCLUDED.fingerprint, task_id = EXCLUDED.task_id, created_at = EXCLUDED.created_at
           WHERE idempotency_keys.created_at <= $4 - $5
         RETURNING task_id`,
        [key, fingerprint, t.id, t.createdAt, ttlMs],
      );
      let out: CreateOnceOutcome;
      if (claim.rows.length === 1) {
        const { rows } = await client.query<TaskRow>(SQL.insert_task, insertRow(t));
        out = { kind: 'created', task: rowToTask(rows[0]) };
      } else {
        const { rows } = await client.query<{ fingerprint: string; task_id: string }>('SELECT fingerprint, task_id FROM idempotency_keys WHERE key = $1', [key]);
        if (rows[0].fingerprint !== fingerprint) out = { kind: 'conflict', taskId: rows[0].task_id };
        else {
          const task = await client.query<TaskRow>(SQL.get_task, [rows[0].task_id]);
          if (task.rows.length) out = { kind: 'replayed', task: rowToTask(task.rows[0]) };
          else {
            // Its task was deleted (retention): the key starts over, as SQLite's does.
            await client.query('UPDATE idempotency_keys SET task_id = $2, created_at = $3 WHERE key = $1', [key, t.id, t.createdAt]);
            const { rows: created } = await client.query<TaskRow>(SQL.insert_task, insertRow(t));
            out = { kind: 'created', task: rowToTask(created[0]) };
          }
        }
      }
      return out;
    });
  }

  async appendEvents(
    id: string,
    leaseToken: string,
    events: Array<{ progress?: number; text?: string }>,
    now: number,
  ): Promise<{ kind: LeaseOutcome['kind']; events: TaskLogEvent[] }> {
    const progress = [...events].reverse().find((e) => e.progress !== undefined)?.progress ?? null;
    // One statement: the lease check, the progress column and the log rows commit together.
    const rows = await this.q<EventRow & { lease_ok: boolean; task_status: string | null }>(
      'append events',
      `WITH t AS (
         UPDATE tasks SET progress = coalesce($4, progress), updated_at = $5
          WHERE id = $1 AND lease_token = $2 AND status = 'running'
         RETURNING id
       ), ins AS (
         INSERT INTO task_events (task_id, type, progress, text, at)
         SELECT t.id, CASE WHEN e.value->>'text' IS NOT NULL THEN 'output' ELSE 'progress' END,
                (e.value->>'progress')::float8, e.value->>'text', $5
           FROM t, jsonb_array_elements($3::jsonb) WITH ORDINALITY AS e(value, ord)
          ORDER BY e.ord
         RETURNING *
       )
       SELECT ins.*, true AS lease_ok, NULL::text AS task_status FROM ins
       UNION ALL
       SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, (SELECT count(*) > 0 FROM t), (SELECT status FROM tasks WHERE id = $1 AND lease_token = $2)`,
      [id, leaseToken, JSON.stringify(events.filter((e) => e.text || e.progress !== undefined)), progress, now],
    );
    const marker = rows[rows.length - 1];
    if (!marker.lease_ok) return { kind: marker.task_status === 'cancelled' ? 'cancelled' : 'stale', events: [] };
    return { kind: 'ok', events: rows.slice(0, -1).map(rowToEvent).sort((a, b) => a.id - b.id) };
  }

  async listEvents(taskId: string, afterId: number, limit: number): Promise<TaskLogEvent[]> {
    const rows = await this.q<EventRow>('list events', 'SELECT * FROM task_events WHERE task_id = $1 AND id > $2 ORDER BY id LIMIT $3', [taskId, afterId, limit]);
    return rows.map(rowToEvent);
  }

  async claimDeliveries(now: number, limit: number, leaseMs: number): Promise<WebhookDelivery[]> {
    return (await this.run<DeliveryRow>('claim_deliveries', [now, limit, now + leaseMs])).map(rowToDelivery);
  }

  async recordDelivery(id: number, r: DeliveryResult, now: number): Promise<void> {
    await this.run('record_delivery', [id, r.ok, r.statusCode, r.error, r.retryAt, now]);
  }

  async listDeliveries(taskId: string): Promise<WebhookDelivery[]> {
    return (await this.q<DeliveryRow>('list deliveries', 'SELECT * FROM webhook_deliveries WHERE task_id = $1 ORDER BY id', [taskId])).map(rowToDelivery);
  }

  async getTask(id: string): Promise<TaskRecord | null> {
    const [row] = await this.run<TaskRow>('get_task', [id]);
    return row ? rowToTask(row) : null;
  }

  async cancelledAmong(workerId: string, ids: string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    const rows = await this.q<{ id: string }>(
      'find cancelled tasks',
      "SELECT id FROM tasks WHERE id = ANY($1::text[]) AND status = 'cancelled' AND worker_id = $2",
      [ids, workerId],
    );
    return rows.map((r) => r.id);
  }

  async listTasks(q: ListQuery): Promise<ListResult> {
    const where: string[] = [];
    const params: unknown[] = [];
    if (q.status) (params.push(q.status), where.push(`status = $${params.length}`));
    if (q.taskType) (params.push(q.taskType), where.push(`task_type = $${params.length}`));
    if (q.modelName) (params.push(q.modelName), where.push(`model_name = $${params.length}`));
    const key = `${where.join(' AND ')}|${q.sortBy}|${q.sortOrder}`;
    let sql = this.listSql.get(key);
    if (!sql) {
      const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
      const n = params.length;
      sql = {
        page: `SELECT ${SUMMARY_COLUMNS} FROM tasks ${clause} ORDER BY ${listOrderBy(q.sortBy, q.sortOrder, 'seq')} LIMIT $${n + 1} OFFSET $${n + 2}`,
        total: `SELECT coalesce(sum(current), 0)::bigint AS n FROM task_counts ${clause}`,
      };
      this.listSql.set(key, sql);
    }
    const [rows, totals] = await Promise.all([
      this.q<SummaryRow>('list tasks', sql.page, [...params, q.limit, q.offset]),
      this.q<{ n: number }>('list total', sql.total, params),
    ]);
    return { tasks: rows.map(rowToSummary), total: totals[0].n };
  }

  async queuePosition(task: TaskRecord): Promise<number> {
    const [r] = await this.run<{ n: number }>('queue_position', [task.id, task.modelName, task.taskType, task.priority]);
    return r.n;
  }

  async cancelTask(id: string, now: number): Promise<CancelOutcome> {
    const [row] = await this.run<TaskRow & { previous_status: string }>('cancel_task', [id, now]);
    if (row) return { kind: 'cancelled', task: rowToTask(row), wasRunning: row.previous_status === 'running' };
    const current = await this.getTask(id);
    if (!current) return { kind: 'not_found' };
    if (current.status === 'cancelled') return { kind: 'already_cancelled', task: current };
    return { kind: 'not_cancellable', task: current };
  }

  async leaseTasks(req: LeaseRequest): Promise<LeasedTask[]> {
    if (req.limit <= 0 || req.models.length === 0) return [];
    const rows = await this.run<TaskRow>('lease_tasks', [
      req.models.map((m) => m.modelName),
      req.models.map((m) => m.taskType),
      req.limit,
      req.workerId,
      req.now + req.leaseMs,
      req.now,
    ]);
    return rows
      .map(rowToTask)
      .sort((a, b) => b.priority - a.priority || a.createdAt - b.createdAt)
      .map((task) => ({ task, leaseToken: task.leaseToken! }));
  }

  private async leaseMiss(id: string, leaseToken: string): Promise<LeaseOutcome> {
    const task = await this.getTask(id);
    if (task && task.status === 'cancelled' && task.leaseToken === leaseToken) return { kind: 'cancelled', task };
    return { kind: 'stale', task };
  }

  private async leaseWrite(name: Command, params: unknown[], id: string, leaseToken: string): Promise<LeaseOutcome> {
    const [row] = await this.run<TaskRow>(name, params);
    return row ? { kind: 'ok', task: rowToTask(row) } : this.leaseMiss(id, leaseToken);
  }

  heartbeat(id: string, leaseToken: string, leaseMs: number, now: number, progress?: number): Promise<LeaseOutcome> {
    // A worker's heartbeat names each of its tasks: they arrive in one turn and go in one statement.
    if (this.closing || this.heartbeats.has(id)) return this.leaseWrite('heartbeat', [id, leaseToken, now + leaseMs, progress ?? null, now], id, leaseToken);
    return new Promise((resolve, reject) =>
      this.heartbeats.add({ id, leaseToken, expiresAt: now + leaseMs, progress: progress ?? null, now, resolve, reject }),
    );
  }

  private heartbeatTogether(batch: QueuedHeartbeat[]): Promise<void> {
    return this.leaseWritesTogether(batch, 'heartbeat_tasks', 'heartbeat', (h) => [h.id, h.leaseToken, h.expiresAt, h.progress, h.now]);
  }

  /**
   * Writes under lease tokens, one per item, in one statement (`many`, taking each parameter
   * of `one` as an array): a row not returned did not hold its lease and gets its own outcome.
   */
  private leaseWritesTogether<I extends Queued<LeaseOutcome> & { id: string; leaseToken: string }>(
    batch: I[],
    many: Command,
    one: Command,
    params: (item: I) => unknown[],
  ): Promise<void> {
    const rows = batch.map(params);
    const columns = rows[0].map((_, i) => rows.map((r) => r[i]));
    return this.together(batch, (w) => w.id, () => this.run<TaskRow>(many, columns), {
      alone: (w) => this.leaseWrite(one, params(w), w.id, w.leaseToken).then(w.resolve, w.reject),
      found: (w, r) => w.resolve({ kind: 'ok', task: rowToTask(r) }),
      missing: (w) => void this.leaseMiss(w.id, w.leaseToken).then(w.resolve, w.reject),
    });
  }

  // RETURNING gives the row in the same round trip: the caller's copy is not needed.
  async completeTask(id: string, leaseToken: string, result: Record<string, unknown>, now: number): Promise<LeaseOutcome> {
    const json = JSON.stringify(result);
    // The same task twice in one statement would be updated once and both told ok: a second
    // one goes in a statement of its own, and the row lock decides which of the two wins.
    if (this.closing || this.completions.has(id)) return this.leaseWrite('complete_task', [id, leaseToken, json, now], id, leaseToken);
    return new Promise((resolve, reject) => this.completions.add({ id, leaseToken, result: json, now, resolve, reject }));
  }

  private completeTogether(batch: QueuedCompletion[]): Promise<void> {
    return this.leaseWritesTogether(batch, 'complete_tasks', 'complete_task', (c) => [c.id, c.leaseToken, c.result, c.now]);
  }

  failTask(id: string, leaseToken: string, req: FailRequest): Promise<LeaseOutcome> {
    return this.leaseWrite('fail_task', [id, leaseToken, req.retryable, req.error.code, req.error.message, req.now], id, leaseToken);
  }

  releaseTask(id: string, leaseToken: string, now: number): Promise<LeaseOutcome> {
    return this.leaseWrite('release_task', [id, leaseToken, now], id, leaseToken);
  }

  async reapExpiredLeases(now: number, limit: number): Promise<ReapResult> {
    const rows = (await this.run<TaskRow>('requeue_or_fail_expired', [now, limit])).map(rowToTask);
    return { requeued: rows.filter((t) => t.status === 'pending'), failed: rows.filter((t) => t.status === 'failed') };
  }

  commitStats(): null {
    return null;
  }

  async expireLeasesOf(workerId: string, now: number, keep: string[] = []): Promise<number> {
    const rows = await this.q(
      'expire leases',
      `UPDATE tasks SET lease_expires_at = $2 - 1
        WHERE status = 'running' AND worker_id = $1 AND lease_expires_at >= $2 AND NOT (id = ANY($3::text[]))
       RETURNING id`,
      [workerId, now, keep],
    );
    return rows.length;
  }

  async reapTimedOut(now: number, graceMs: number, limit: number): Promise<TaskRecord[]> {
    return (await this.run<TaskRow>('fail_timed_out', [now, graceMs, limit])).map(rowToTask);
  }

  async counts(): Promise<CountRow[]> {
    const rows = await this.run<{ task_type: TaskType; model_name: string; status: CountRow['status']; current: number; total: number }>('counts');
    return rows.map((r) => ({ taskType: r.task_type, modelName: r.model_name, status: r.status, current: r.current, total: r.total }));
  }

  async recentRunTimes(limitPerModel: number): Promise<Array<ModelRef & { meanMs: number; samples: number }>> {
    const rows = await this.run<{ task_type: TaskType; model_name: string; mean_ms: number; samples: number }>('recent_run_times', [
      limitPerModel,
      limitPerModel * 50,
    ]);
    return rows.map((r) => ({ taskType: r.task_type, modelName: r.model_name, meanMs: r.mean_ms, samples: r.samples }));
  }

  async upsertWorker(w: Omit<WorkerRecord, 'registeredAt' | 'lastSeenAt'>, now: number): Promise<WorkerRecord> {
    const models = JSON.stringify(w.models.map(modelToWire));
    const [row] = await this.q<WorkerRow>(
      'upsert worker',
      `INSERT INTO workers (id, models, concurrency, hardware, registered_at, last_seen_at) VALUES ($1, $2, $3, $4, $5, $5)
       ON CONFLICT (id) DO UPDATE SET models = EXCLUDED.models, concurrency = EXCLUDED.concurrency,
         hardware = EXCLUDED.hardware, last_seen_at = EXCLUDED.last_seen_at
       RETURNING *`,
      [w.id, models, w.concurrency, JSON.stringify(w.hardware), now],
    );
    return rowToWorker(row);
  }

  async touchWorker(id: string, now: number): Promise<boolean> {
    return (await this.q('touch worker', 'UPDATE workers SET last_seen_at = $2 WHERE id = $1 RETURNING id', [id, now])).length > 0;
  }

  async removeWorker(id: string): Promise<void> {
    await this.q('remove worker', 'DELETE FROM workers WHERE id = $1', [id]);
  }

  async forgetWorkers(silentSince: number): Promise<string[]> {
    const rows = await this.q<{ id: string }>(
      'forget workers',
      `DELETE FROM workers w WHERE last_seen_at < $1
         AND NOT EXISTS (SELECT 1 FROM tasks t WHERE t.status = 'running' AND t.worker_id = w.id) RETURNING id`,
      [silentSince],
    );
    return rows.map((r) => r.id);
  }

  async deleteExpiredKeys(before: number, limit: number): Promise<number> {
    const rows = await this.q<{ key: string }>(
      'delete expired idempotency keys',
      `DELETE FROM idempotency_keys WHERE key IN (
         SELECT key FROM idempotency_keys WHERE created_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED
       ) RETURNING key`,
      [before, limit],
    );
    return rows.length;
  }

  async deleteFinished(before: number, limit: number): Promise<number> {
    // The counters' trigger takes each row out of its current count.
    const rows = await this.q<{ id: string }>(
      'delete finished tasks',
      `WITH victims AS (
         SELECT id FROM tasks
          WHERE status IN ('completed', 'failed', 'cancelled') AND created_at < $1 AND updated_at < $1
            AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.task_id = tasks.id AND d.state = 'pending')
          LIMIT $2 FOR UPDATE SKIP LOCKED
       ), events AS (DELETE FROM task_events WHERE task_id IN (SELECT id FROM victims)),
       files AS (DELETE FROM artifacts WHERE task_id IN (SELECT id FROM victims)),
       hooks AS (DELETE FROM webhook_deliveries WHERE task_id IN (SELECT id FROM victims))
       DELETE FROM tasks WHERE id IN (SELECT id FROM victims) RETURNING id`,
      [before, limit],
    );
    return rows.length;
  }

  async listWorkers(): Promise<WorkerRecord[]> {
    return (await this.q<WorkerRow>('list workers', 'SELECT * FROM workers ORDER BY id')).map(rowToWorker);
  }

  async runningTasks(): Promise<RunningTaskRef[]> {
    const rows = await this.q<{ id: string; worker_id: string | null }>('running tasks', "SELECT id, worker_id FROM tasks WHERE status = 'running'");
    return rows.map((r) => ({ id: r.id, workerId: r.worker_id }));
  }

  async putArtifact(a: Omit<Artifact, 'size' | 'createdAt'>, now: number): Promise<ArtifactMeta> {
    await this.q(
      'put artifact',
      `INSERT INTO artifacts (task_id, name, content_type, size, data, created_at) VALUES ($1, $2, $3, $4, $5, $6)
       ON CONFLICT (task_id, name) DO UPDATE SET content_type = EXCLUDED.content_type, size = EXCLUDED.size,
         data = EXCLUDED.data, created_at = EXCLUDED.created_at`,
      [a.taskId, a.name, a.contentType, a.data.length, a.data, now],
    );
    return { taskId: a.taskId, name: a.name, contentType: a.contentType, size: a.data.length, createdAt: now };
  }

  async getArtifact(taskId: string, name: string): Promise<Artifact | null> {
    const [r] = await this.q<ArtifactRow>('get artifact', 'SELECT * FROM artifacts WHERE task_id = $1 AND name = $2', [taskId, name]);
    return r ? { ...rowToArtifactMeta(r), data: r.data } : null;
  }

  async listArtifacts(taskId: string): Promise<ArtifactMeta[]> {
    const rows = await this.q<ArtifactRow>(
      'list artifacts',
      'SELECT task_id, name, content_type, size, created_at FROM artifacts WHERE task_id = $1 ORDER BY name',
      [taskId],
    );
    return rows.map(rowToArtifactMeta);
  }

  /** Reachability; PostgreSQL reports its own write failures (disk full, read-only) on each write. */
  async ping(): Promise<void> {
    await this.q('ping', 'SELECT 1');
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    // Creates, completions and heartbeats already queued are written (or fail) before the pool stops taking queries.
    await Promise.all([this.creates.drain(), this.completions.drain(), this.heartbeats.drain()]);
    this.closed = true;
    // A query waiting for a connection when the pool ends would wait until it times out.
    await Promise.allSettled([...this.busy]);
    await this.pool.end();
  }
}

/** Applies pending migrations once, however many nodes start together. */
async function migrate(pool: pg.Pool, schema: string): Promise<void> {
  const known = MIGRATIONS.at(-1)?.version ?? 0;
  const client = await pool.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [MIGRATION_LOCK]);
    try {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
      await client.query(
        'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)',
      );
      const { rows } = await client.query<{ v: number | null }>('SELECT max(version) AS v FROM schema_migrations');
      const current = rows[0].v ?? 0;
      if (current > known) {
        throw new Error(
          `Database schema version ${current} is newer than this build knows (${known}); upgrade task-manager before starting it on this database`,
        );
      }
      for (const m of MIGRATIONS) {
        if (m.version <= current) continue;
        await client.query('BEGIN');
        try {
          await client.query(m.sql);
          await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()]);
          await client.query('COMMIT');
        } catch (err) {
          await client.query('ROLLBACK').catch(() => {});
          throw err;
        }
      }
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [MIGRATION_LOCK]).catch(() => {});
    }
  } finally {
    client.release();
  }
}
