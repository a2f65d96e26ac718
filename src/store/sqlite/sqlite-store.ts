import { mkdirSync } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import { StoreUnavailableError } from '../../core/errors.js';
import { newLeaseToken } from '../../core/ids.js';
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
import type { ModelRef, NewTask, TaskRecord, TaskType } from '../../core/task.js';
import {
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
  type SummaryRow,
  type TaskRow,
  type WorkerRow,
} from '../rows.js';
import { loadCommands, loadMigrations } from '../sql-files.js';

const COMMANDS = [
  'insert_task',
  'get_task',
  'lease_candidates',
  'lease_task',
  'heartbeat',
  'complete_task',
  'fail_task',
  'release_task',
  'cancel_task',
  'expired_leases',
  'requeue_or_fail_expired',
  'fail_timed_out',
  'queue_position',
  'counts',
  'recent_run_times',
  'claim_deliveries',
  'record_delivery',
] as const;
type Command = (typeof COMMANDS)[number];

export interface SqliteStoreOptions {
  /** File path, or ':memory:'. */
  path: string;
  /**
   * FULL: every acknowledged write survives power loss (the WAL is fdatasync'd before the
   * callers hear back — off the event loop). NORMAL: acknowledged writes survive a crash of
   * the process, not of the machine.
   */
  synchronous?: 'FULL' | 'NORMAL';
  /** Caps the database file; a write past it fails like a full disk (503) until the cap is raised. */
  maxBytes?: number;
}

interface QueuedWrite {
  run: () => unknown;
  /** Acknowledged only once on disk (FULL): creates and cancels, the promises clients hold. */
  durable: boolean;
  resolve: (value: any) => void;
  reject: (err: unknown) => void;
}

/** SQLite errors that mean "the store is not usable now", as opposed to a bug. */
const UNAVAILABLE_CODES = new Set([
  'SQLITE_FULL',
  'SQLITE_IOERR',
  'SQLITE_READONLY',
  'SQLITE_CANTOPEN',
  'SQLITE_BUSY',
  'SQLITE_LOCKED',
  'SQLITE_CORRUPT',
  'SQLITE_NOTADB',
  'SQLITE_PERM',
]);

function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code ?? '';
  return [...UNAVAILABLE_CODES].some((c) => code === c || code.startsWith(`${c}_`)) || /database connection is not open/.test(String(err));
}

/** The record of a task just inserted: known from its input, so nothing is read back. */
function newRecord(t: NewTask): TaskRecord {
  return {
    id: t.id,
    status: 'pending',
    taskType: t.taskType,
    modelName: t.modelName,
    inputData: t.inputData,
    parameters: t.parameters,
    priority: t.priority,
    attempts: 0,
    maxAttempts: t.maxAttempts,
    timeoutMs: t.timeoutMs,
    createdAt: t.createdAt,
    startedAt: null,
    completedAt: null,
    cancelledAt: null,
    updatedAt: t.createdAt,
    workerId: null,
    leaseToken: null,
    leaseExpiresAt: null,
    progress: null,
    result: null,
    error: null,
    webhookUrl: t.webhookUrl ?? null,
    webhookEvents: t.webhookEvents ?? null,
  };
}

/** The columns of a task row that a status change needs. */
interface MovedRow {
  id: string;
  task_type: string;
  model_name: string;
  updated_at?: number | string;
  created_at?: number | string;
  webhook_url?: string | null;
  webhook_events?: string | string[] | null;
}

function wrap(err: unknown, what: string): unknown {
  if (err instanceof StoreUnavailableError) return err;
  return isUnavailable(err) ? new StoreUnavailableError(`Task store unavailable: ${what}`, err) : err;
}

/**
 * The embedded store. better-sqlite3 is synchronous, so writes are queued and committed
 * together (group commit): one fsync covers every write that arrived in the same turn of
 * the event loop, and each caller's promise resolves only after its commit.
 */
type Outcome = { ok: true; value: unknown } | { ok: false; err: unknown };

/** Thrown inside an optimistic batch to have it rerun with a savepoint per write. */
class BatchRetry extends Error {}

export class SqliteTaskStore implements TaskStore {
  readonly kind = 'sqlite' as const;
  private readonly db: Database.Database;
  private readonly stmt: Record<Command, Database.Statement>;
  private readonly listCache = new Map<string, { page: Database.Statement; total: Database.Statement }>();
  private queue: QueuedWrite[] = [];
  private immediateScheduled = false;
  private flushTimer: NodeJS.Timeout | null = null;
  private lastFlushAt = 0;
  /** The WAL file to fdatasync before acknowledging writes (FULL), or null. */
  private readonly walPath: string | null;
  private syncing = false;
  private syncWaiters: Array<(err: unknown) => void> = [];
  /** Kept open: SQLite keeps one WAL file for the life of the connection. */
  private walHandle: Promise<FileHandle> | null = null;
  private closed = false;
  /** Status moves of the write running now, and of the batch so far (see countMove). */
  private opMoves: Array<[string, number, number]> = [];
  private batchMoves = new Map<string, [number, number]>();
  private savepoint!: { begin: Database.Statement; release: Database.Statement; rollback: Database.Statement };
  private bumpCounts!: Database.Statement;
  private logStatus!: Database.Statement;
  private queueDelivery!: Database.Statement;
  /** Set when a commit failed; cleared by the next one that succeeds. */
  private writeFailure: unknown = null;

  static open(opts: SqliteStoreOptions): SqliteTaskStore {
    try {
      if (opts.path !== ':memory:') mkdirSync(dirname(opts.path), { recursive: true });
      return new SqliteTaskStore(new Database(opts.path), opts);
    } catch (err) {
      throw wrap(err, `cannot open ${opts.path}`);
    }
  }

  private constructor(db: Database.Database, opts: SqliteStoreOptions) {
    this.db = db;
    db.pragma('journal_mode = WAL');
    // SQLite itself never fsyncs on commit; with FULL the store does it in the background.
    db.pragma('synchronous = NORMAL');
    this.walPath = opts.path === ':memory:' || (opts.synchronous ?? 'FULL') !== 'FULL' ? null : `${opts.path}-wal`;
    db.pragma('busy_timeout = 5000');
    db.pragma('foreign_keys = ON');
    this.migrate();
    if (opts.maxBytes) this.setMaxBytes(opts.maxBytes);
    const sql = loadCommands(new URL('./commands/', import.meta.url), COMMANDS);
    this.stmt = {} as Record<Command, Database.Statement>;
    for (const name of COMMANDS) this.stmt[name] = db.prepare(sql[name]);
    this.savepoint = { begin: db.prepare('SAVEPOINT w'), release: db.prepare('RELEASE w'), rollback: db.prepare('ROLLBACK TO w') };
    this.logStatus = db.prepare("INSERT INTO task_events (task_id, type, status, at) VALUES (?, 'status', ?, ?)");
    this.queueDelivery = db.prepare('INSERT INTO webhook_deliveries (task_id, event, url, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?)');
    this.bumpCounts = db.prepare(
      `INSERT INTO task_counts (task_type, model_name, status, current, total) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (task_type, model_name, status) DO UPDATE SET current = current + excluded.current, total = total + excluded.total`,
    );
  }

  /**
   * Everything a status change implies, in the transaction that makes it: the event log
   * entry, a webhook delivery when the task asked for one, and the count moves (summed and
   * applied once per batch).
   */
  private moved(row: MovedRow, from: string | null, to: string): void {
    if (from === to) return;
    const at = Number(row.updated_at ?? row.created_at ?? Date.now());
    this.logStatus.run(row.id, to, at);
    if (row.webhook_url && row.webhook_events) {
      const events = typeof row.webhook_events === 'string' ? (JSON.parse(row.webhook_events) as string[]) : row.webhook_events;
      if (events.includes(to)) this.queueDelivery.run(row.id, to, row.webhook_url, at, at);
    }
    if (from !== null) this.opMoves.push([`${row.task_type}\u0000${row.model_name}\u0000${from}`, -1, 0]);
    this.opMoves.push([`${row.task_type}\u0000${row.model_name}\u0000${to}`, 1, 1]);
  }

  private migrate(): void {
    const migrations = loadMigrations(new URL('./migrations/', import.meta.url));
    const known = migrations.at(-1)?.version ?? 0;
    this.db.exec(
      'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)',
    );
    this.db
      .transaction(() => {
        const current = (this.db.prepare('SELECT max(version) AS v FROM schema_migrations').get() as { v: number | null }).v ?? 0;
        if (current > known) {
          throw new Error(
            `Database schema version ${current} is newer than this build knows (${known}); upgrade task-manager before starting it on this database`,
          );
        }
        for (const m of migrations) {
          if (m.version <= current) continue;
          this.db.exec(m.sql);
          this.db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, Date.now());
        }
      })
      .exclusive();
  }

  /** Queues a write into the next group commit. */
  /**
   * Queues a write into the next group commit. Durable writes are acknowledged after the
   * WAL's fdatasync; the others (worker-side transitions) on commit: a power loss can only
   * roll those back to an earlier state, from which the task is run again.
   */
  private write<T>(run: () => T, durable = false): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('Task store is closed'));
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ run, resolve, reject, durable });
      // Worker-side writes commit on the next turn: their round trips bound a worker's pace.
      // Durable writes (creates, cancels) wait for an fdatasync anyway, so under load they
      // wait a moment longer and share a commit: less CPU per request.
      if (!durable || performance.now() - this.lastFlushAt >= 2) {
        if (!this.immediateScheduled) {
          this.immediateScheduled = true;
          setImmediate(() => this.flush());
        }
      } else if (!this.flushTimer && !this.immediateScheduled) {
        this.flushTimer = setTimeout(() => this.flush(), 1);
      }
    });
  }

  private flush(): void {
    this.immediateScheduled = false;
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.lastFlushAt = performance.now();
    const batch = this.queue;
    this.queue = [];
    if (batch.length === 0) return;
    let outcomes: Outcome[];
    try {
      // Optimistic: the whole batch in one transaction. Only when a write throws is the batch
      // rolled back and run again with a savepoint per write, so one bad write fails alone.
      try {
        outcomes = this.db.transaction(() => this.runBatch(batch, false)).immediate();
      } catch (err) {
        if (!(err instanceof BatchRetry)) throw err;
        outcomes = this.db.transaction(() => this.runBatch(batch, true)).immediate();
      }
    } catch (err) {
      this.writeFailure = err;
      const wrapped = wrap(err, 'write failed');
      for (const w of batch) w.reject(wrapped);
      return;
    }
    this.writeFailure = null;
    const settle = (w: QueuedWrite, i: number, syncError: unknown) => {
      const o = outcomes[i];
      if (syncError) w.reject(wrap(Object.assign(new Error(`fdatasync failed: ${String(syncError)}`), { code: 'SQLITE_IOERR' }), 'write not durable'));
      else if (o.ok) w.resolve(o.value);
      else w.reject(o.err);
    };
    const waiting: number[] = [];
    batch.forEach((w, i) => {
      if (w.durable && this.walPath && outcomes[i].ok) waiting.push(i);
      else settle(w, i, null);
    });
    if (waiting.length) this.afterSync((err) => waiting.forEach((i) => settle(batch[i], i, err)));
  }

  private runBatch(batch: QueuedWrite[], isolated: boolean): Outcome[] {
    const outcomes: Outcome[] = [];
    this.batchMoves = new Map();
    for (const w of batch) {
      this.opMoves = [];
      if (isolated) this.savepoint.begin.run();
      try {
        const value = w.run();
        if (isolated) this.savepoint.release.run();
        outcomes.push({ ok: true, value });
      } catch (err) {
        if (!isolated) throw isUnavailable(err) ? err : new BatchRetry();
        this.savepoint.rollback.run();
        this.savepoint.release.run();
        if (isUnavailable(err)) throw err;
        outcomes.push({ ok: false, err });
        continue;
      }
      for (const [key, dc, dt] of this.opMoves) {
        const m = this.batchMoves.get(key);
        if (m) (m[0] += dc), (m[1] += dt);
        else this.batchMoves.set(key, [dc, dt]);
      }
    }
    for (const [key, [dc, dt]] of this.batchMoves) {
      if (dc === 0 && dt === 0) continue;
      const [type, model, status] = key.split('\u0000');
      this.bumpCounts.run(type, model, status, dc, dt);
    }
    return outcomes;
  }

  /**
   * Group fsync: one fdatasync of the WAL, on the thread pool, covers every commit made
   * before it started; commits made while one runs wait for the next.
   */
  private afterSync(done: (err: unknown) => void): void {
    this.syncWaiters.push(done);
    if (!this.syncing) this.startSync();
  }

  private startSync(): void {
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    this.syncing = true;
    this.walHandle ??= open(this.walPath!, 'r');
    this.walHandle
      .then((fh) => fh.datasync())
      .then(
        () => waiters.forEach((w) => w(null)),
        (err) => {
          this.walHandle = null; // reopen next time
          waiters.forEach((w) => w(err));
        },
      )
      .finally(() => {
        this.syncing = false;
        if (this.syncWaiters.length) this.startSync();
      });
  }


  private read<T>(what: string, fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('Task store is closed'));
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(wrap(err, what));
    }
  }

  private insertParams(t: NewTask) {
    return {
      id: t.id,
      task_type: t.taskType,
      model_name: t.modelName,
      input_data: JSON.stringify(t.inputData),
      parameters: JSON.stringify(t.parameters),
      priority: t.priority,
      max_attempts: t.maxAttempts,
      timeout_ms: t.timeoutMs,
      created_at: t.createdAt,
      webhook_url: t.webhookUrl ?? null,
      webhook_events: t.webhookEvents ? JSON.stringify(t.webhookEvents) : null,
    };
  }

  createTask(t: NewTask): Promise<TaskRecord> {
    const params = this.insertParams(t);
    return this.write(() => {
      this.stmt.insert_task.run(params);
      this.moved(params, null, 'pending');
      return newRecord(t);
    }, true);
  }

  createTaskOnce(t: NewTask, key: string, fingerprint: string, ttlMs: number): Promise<CreateOnceOutcome> {
    const params = this.insertParams(t);
    return this.write((): CreateOnceOutcome => {
      const prior = this.db.prepare('SELECT fingerprint, task_id, created_at FROM idempotency_keys WHERE key = ?').get(key) as
        | { fingerprint: string; task_id: string; created_at: number }
        | undefined;
      if (prior && prior.created_at > t.createdAt - ttlMs) {
        if (prior.fingerprint !== fingerprint) return { kind: 'conflict', taskId: prior.task_id };
        const row = this.stmt.get_task.get({ id: prior.task_id }) as TaskRow | undefined;
        if (row) return { kind: 'replayed', task: rowToTask(row) };
      }
      this.stmt.insert_task.run(params);
      this.moved(params, null, 'pending');
      const task = newRecord(t);
      this.db
        .prepare('INSERT OR REPLACE INTO idempotency_keys (key, fingerprint, task_id, created_at) VALUES (?, ?, ?, ?)')
        .run(key, fingerprint, task.id, t.createdAt);
      return { kind: 'created', task };
    }, true);
  }

  appendEvents(
    id: string,
    leaseToken: string,
    events: Array<{ progress?: number; text?: string }>,
    now: number,
  ): Promise<{ kind: LeaseOutcome['kind']; events: TaskLogEvent[] }> {
    return this.write(() => {
      const row = this.stmt.get_task.get({ id }) as TaskRow | undefined;
      if (!row || row.lease_token !== leaseToken) return { kind: 'stale' as const, events: [] };
      if (row.status === 'cancelled') return { kind: 'cancelled' as const, events: [] };
      if (row.status !== 'running') return { kind: 'stale' as const, events: [] };
      const insert = this.db.prepare('INSERT INTO task_events (task_id, type, progress, text, at) VALUES (?, ?, ?, ?, ?) RETURNING *');
      const out: TaskLogEvent[] = [];
      let progress: number | undefined;
      for (const e of events) {
        if (e.text) out.push(rowToEvent(insert.get(id, 'output', e.progress ?? null, e.text, now) as EventRow));
        else if (e.progress !== undefined) out.push(rowToEvent(insert.get(id, 'progress', e.progress, null, now) as EventRow));
        if (e.progress !== undefined) progress = e.progress;
      }
      if (progress !== undefined) this.db.prepare('UPDATE tasks SET progress = ?, updated_at = ? WHERE id = ?').run(progress, now, id);
      return { kind: 'ok' as const, events: out };
    });
  }

  listEvents(taskId: string, afterId: number, limit: number): Promise<TaskLogEvent[]> {
    return this.read('list events', () =>
      (this.db.prepare('SELECT * FROM task_events WHERE task_id = ? AND id > ? ORDER BY id LIMIT ?').all(taskId, afterId, limit) as EventRow[]).map(rowToEvent),
    );
  }

  claimDeliveries(now: number, limit: number, leaseMs: number): Promise<WebhookDelivery[]> {
    return this.write(() =>
      (this.stmt.claim_deliveries.all({ now, limit, claimed_until: now + leaseMs }) as DeliveryRow[]).map(rowToDelivery),
    );
  }

  recordDelivery(id: number, r: DeliveryResult, now: number): Promise<void> {
    return this.write(() => {
      this.stmt.record_delivery.run({ id, ok: r.ok ? 1 : 0, status_code: r.statusCode, error: r.error, retry_at: r.retryAt, now });
    });
  }

  listDeliveries(taskId: string): Promise<WebhookDelivery[]> {
    return this.read('list deliveries', () =>
      (this.db.prepare('SELECT * FROM webhook_deliveries WHERE task_id = ? ORDER BY id').all(taskId) as DeliveryRow[]).map(rowToDelivery),
    );
  }

  getTask(id: string): Promise<TaskRecord | null> {
    return this.read('get task', () => {
      const row = this.stmt.get_task.get({ id }) as TaskRow | undefined;
      return row ? rowToTask(row) : null;
    });
  }

  listTasks(q: ListQuery): Promise<ListResult> {
    return this.read('list tasks', () => {
      const where: string[] = [];
      const params: Record<string, unknown> = { limit: q.limit, offset: q.offset };
      if (q.status) (where.push('status = :status'), (params.status = q.status));
      if (q.taskType) (where.push('task_type = :task_type'), (params.task_type = q.taskType));
      if (q.modelName) (where.push('model_name = :model_name'), (params.model_name = q.modelName));
      const key = `${where.join(' AND ')}|${q.sortBy}|${q.sortOrder}`;
      let stmts = this.listCache.get(key);
      if (!stmts) {
        const clause = where.length ? `WHERE ${where.join(' AND ')}` : '';
        stmts = {
          page: this.db.prepare(
            `SELECT ${SUMMARY_COLUMNS} FROM tasks ${clause} ORDER BY ${listOrderBy(q.sortBy, q.sortOrder, 'seq')} LIMIT :limit OFFSET :offset`,
          ),
          // The counters table answers every filter combination the API offers.
          total: this.db.prepare(`SELECT coalesce(sum(current), 0) AS n FROM task_counts ${clause}`),
        };
        this.listCache.set(key, stmts);
      }
      const { limit: _l, offset: _o, ...filter } = params;
      const tasks = (stmts.page.all(params) as SummaryRow[]).map(rowToSummary);
      const total = (stmts.total.get(filter) as { n: number }).n;
      return { tasks, total };
    });
  }

  queuePosition(task: TaskRecord): Promise<number> {
    return this.read('queue position', () => {
      const r = this.stmt.queue_position.get({
        id: task.id,
        model_name: task.modelName,
        task_type: task.taskType,
        priority: task.priority,
      }) as { n: number };
      return r.n;
    });
  }

  cancelTask(id: string, now: number): Promise<CancelOutcome> {
    return this.write((): CancelOutcome => {
      const before = this.stmt.get_task.get({ id }) as TaskRow | undefined;
      if (!before) return { kind: 'not_found' };
      if (before.status === 'cancelled') return { kind: 'already_cancelled', task: rowToTask(before) };
      const row = this.stmt.cancel_task.get({ id, now }) as TaskRow | undefined;
      if (!row) return { kind: 'not_cancellable', task: rowToTask(before) };
      this.moved(row, before.status, 'cancelled');
      return { kind: 'cancelled', task: rowToTask(row), wasRunning: before.status === 'running' };
    }, true);
  }

  leaseTasks(req: LeaseRequest): Promise<LeasedTask[]> {
    if (req.limit <= 0 || req.models.length === 0) return Promise.resolve([]);
    return this.write(() => {
      const candidates: Array<{ seq: number; priority: number }> = [];
      for (const m of req.models) {
        candidates.push(
          ...(this.stmt.lease_candidates.all({ model_name: m.modelName, task_type: m.taskType, limit: req.limit }) as Array<{
            seq: number;
            priority: number;
          }>),
        );
      }
      candidates.sort((a, b) => b.priority - a.priority || a.seq - b.seq);
      const leased: LeasedTask[] = [];
      for (const c of candidates.slice(0, req.limit)) {
        const leaseToken = newLeaseToken();
        const row = this.stmt.lease_task.get({
          seq: c.seq,
          worker_id: req.workerId,
          lease_token: leaseToken,
          lease_expires_at: req.now + req.leaseMs,
          now: req.now,
        }) as TaskRow | undefined;
        if (row) {
          this.moved(row, 'pending', 'running');
          leased.push({ task: rowToTask(row), leaseToken });
        }
      }
      return leased;
    });
  }

  /** Explains a lease write that matched nothing: cancelled under the worker, or stale. */
  private leaseMiss(id: string, leaseToken: string): LeaseOutcome {
    const row = this.stmt.get_task.get({ id }) as TaskRow | undefined;
    if (row && row.status === 'cancelled' && row.lease_token === leaseToken) return { kind: 'cancelled', task: rowToTask(row) };
    return { kind: 'stale', task: row ? rowToTask(row) : null };
  }

  heartbeat(id: string, leaseToken: string, leaseMs: number, now: number, progress?: number): Promise<LeaseOutcome> {
    return this.write((): LeaseOutcome => {
      const row = this.stmt.heartbeat.get({
        id,
        lease_token: leaseToken,
        lease_expires_at: now + leaseMs,
        progress: progress ?? null,
        now,
      }) as TaskRow | undefined;
      return row ? { kind: 'ok', task: rowToTask(row) } : this.leaseMiss(id, leaseToken);
    });
  }

  completeTask(id: string, leaseToken: string, result: Record<string, unknown>, now: number): Promise<LeaseOutcome> {
    const resultJson = JSON.stringify(result);
    return this.write((): LeaseOutcome => {
      const row = this.stmt.complete_task.get({ id, lease_token: leaseToken, result: resultJson, now }) as TaskRow | undefined;
      if (row) this.moved(row, 'running', 'completed');
      return row ? { kind: 'ok', task: rowToTask(row) } : this.leaseMiss(id, leaseToken);
    });
  }

  failTask(id: string, leaseToken: string, req: FailRequest): Promise<LeaseOutcome> {
    return this.write((): LeaseOutcome => {
      const row = this.stmt.fail_task.get({
        id,
        lease_token: leaseToken,
        retryable: req.retryable ? 1 : 0,
        error_code: req.error.code,
        error_message: req.error.message,
        now: req.now,
      }) as TaskRow | undefined;
      if (row) this.moved(row, 'running', row.status);
      return row ? { kind: 'ok', task: rowToTask(row) } : this.leaseMiss(id, leaseToken);
    });
  }

  releaseTask(id: string, leaseToken: string, now: number): Promise<LeaseOutcome> {
    return this.write((): LeaseOutcome => {
      const row = this.stmt.release_task.get({ id, lease_token: leaseToken, now }) as TaskRow | undefined;
      if (row) this.moved(row, 'running', 'pending');
      return row ? { kind: 'ok', task: rowToTask(row) } : this.leaseMiss(id, leaseToken);
    });
  }

  reapExpiredLeases(now: number, limit: number): Promise<ReapResult> {
    return this.write((): ReapResult => {
      const out: ReapResult = { requeued: [], failed: [] };
      for (const { seq } of this.stmt.expired_leases.all({ now, limit }) as Array<{ seq: number }>) {
        const row = this.stmt.requeue_or_fail_expired.get({ seq, now }) as TaskRow | undefined;
        if (!row) continue;
        this.moved(row, 'running', row.status);
        const task = rowToTask(row);
        (task.status === 'pending' ? out.requeued : out.failed).push(task);
      }
      return out;
    });
  }

  reapTimedOut(now: number, graceMs: number, limit: number): Promise<TaskRecord[]> {
    return this.write(() =>
      (this.stmt.fail_timed_out.all({ now, grace_ms: graceMs, limit }) as TaskRow[]).map((row) => {
        this.moved(row, 'running', 'failed');
        return rowToTask(row);
      }),
    );
  }

  counts(): Promise<CountRow[]> {
    return this.read('counts', () =>
      (this.stmt.counts.all() as Array<{ task_type: TaskType; model_name: string; status: CountRow['status']; current: number; total: number }>).map(
        (r) => ({ taskType: r.task_type, modelName: r.model_name, status: r.status, current: r.current, total: r.total }),
      ),
    );
  }

  recentRunTimes(limitPerModel: number): Promise<Array<ModelRef & { meanMs: number; samples: number }>> {
    return this.read('run times', () =>
      (this.stmt.recent_run_times.all({ limit: limitPerModel, window: limitPerModel * 50 }) as Array<{
        task_type: TaskType;
        model_name: string;
        mean_ms: number;
        samples: number;
      }>).map((r) => ({ taskType: r.task_type, modelName: r.model_name, meanMs: r.mean_ms, samples: r.samples })),
    );
  }

  upsertWorker(w: Omit<WorkerRecord, 'registeredAt' | 'lastSeenAt'>, now: number): Promise<WorkerRecord> {
    const models = JSON.stringify(w.models.map((m) => ({ task_type: m.taskType, model_name: m.modelName })));
    const hardware = JSON.stringify(w.hardware);
    return this.write(() => {
      const row = this.db
        .prepare(
          `INSERT INTO workers (id, models, concurrency, hardware, registered_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (id) DO UPDATE SET models = excluded.models, concurrency = excluded.concurrency,
             hardware = excluded.hardware, last_seen_at = excluded.last_seen_at
           RETURNING *`,
        )
        .get(w.id, models, w.concurrency, hardware, now, now) as WorkerRow;
      return rowToWorker(row);
    });
  }

  touchWorker(id: string, now: number): Promise<boolean> {
    return this.write(() => this.db.prepare('UPDATE workers SET last_seen_at = ? WHERE id = ?').run(now, id).changes > 0);
  }

  removeWorker(id: string): Promise<void> {
    return this.write(() => {
      this.db.prepare('DELETE FROM workers WHERE id = ?').run(id);
    });
  }

  listWorkers(): Promise<WorkerRecord[]> {
    return this.read('list workers', () => (this.db.prepare('SELECT * FROM workers ORDER BY id').all() as WorkerRow[]).map(rowToWorker));
  }

  runningTasks(): Promise<RunningTaskRef[]> {
    return this.read('running tasks', () =>
      (this.db.prepare("SELECT id, worker_id FROM tasks WHERE status = 'running'").all() as Array<{ id: string; worker_id: string | null }>).map(
        (r) => ({ id: r.id, workerId: r.worker_id }),
      ),
    );
  }

  putArtifact(a: Omit<Artifact, 'size' | 'createdAt'>, now: number): Promise<ArtifactMeta> {
    return this.write(() => {
      this.db
        .prepare(
          `INSERT INTO artifacts (task_id, name, content_type, size, data, created_at) VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT (task_id, name) DO UPDATE SET content_type = excluded.content_type, size = excluded.size,
             data = excluded.data, created_at = excluded.created_at`,
        )
        .run(a.taskId, a.name, a.contentType, a.data.length, a.data, now);
      return { taskId: a.taskId, name: a.name, contentType: a.contentType, size: a.data.length, createdAt: now };
    });
  }

  getArtifact(taskId: string, name: string): Promise<Artifact | null> {
    return this.read('get artifact', () => {
      const r = this.db.prepare('SELECT * FROM artifacts WHERE task_id = ? AND name = ?').get(taskId, name) as ArtifactRow | undefined;
      return r ? { ...rowToArtifactMeta(r), data: r.data } : null;
    });
  }

  listArtifacts(taskId: string): Promise<ArtifactMeta[]> {
    return this.read('list artifacts', () =>
      (this.db.prepare('SELECT task_id, name, content_type, size, created_at FROM artifacts WHERE task_id = ? ORDER BY name').all(taskId) as ArtifactRow[]).map(
        rowToArtifactMeta,
      ),
    );
  }

  /**
   * Rebuilds the current counts from the rows (a full scan): for databases written by other
   * means, such as a bulk import. All-time totals never drop below the current counts.
   */
  recount(): void {
    this.db.transaction(() => {
      this.db.exec(`UPDATE task_counts SET current = 0`);
      this.db.exec(`INSERT INTO task_counts (task_type, model_name, status, current, total)
        SELECT task_type, model_name, status, count(*), count(*) FROM tasks GROUP BY task_type, model_name, status
        ON CONFLICT (task_type, model_name, status) DO UPDATE SET current = excluded.current, total = max(total, excluded.current)`);
    })();
  }

  /** Sets the size cap (bytes; 0 removes it). Never below what the file already holds. */
  setMaxBytes(bytes: number): void {
    const pageSize = this.db.pragma('page_size', { simple: true }) as number;
    const used = this.db.pragma('page_count', { simple: true }) as number;
    this.db.pragma(`max_page_count = ${bytes > 0 ? Math.max(used, Math.floor(bytes / pageSize)) : 4294967294}`);
  }

  /** Reads the counters; after a failed commit also proves that a write commits again. */
  ping(): Promise<void> {
    return this.read('ping', () => {
      // Reads are proven by the counts the health check reads next; only writes need a probe.
      if (this.writeFailure !== null) {
        // A probe that needs fresh pages, as a task would: rewriting a row in place can
        // succeed on a full disk.
        this.db.transaction(() => {
          this.db.prepare('INSERT OR REPLACE INTO store_probe (id, at) VALUES (2, zeroblob(16384))').run();
          this.db.prepare('DELETE FROM store_probe WHERE id = 2').run();
        })();
        this.writeFailure = null;
      }
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.queue.length) this.flush();
    this.closed = true;
    // Acknowledgements still waiting for their fdatasync get it before the handle closes.
    while (this.syncing) await new Promise((r) => setTimeout(r, 1));
    this.db.close();
    const wal = this.walHandle;
    this.walHandle = null;
    await wal?.then((fh) => fh.close()).catch(() => {});
  }
}
