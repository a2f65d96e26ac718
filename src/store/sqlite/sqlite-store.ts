import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Worker } from 'node:worker_threads';
import type Database from 'better-sqlite3';
import { StoreUnavailableError } from '../../core/errors.js';
import type {
  Artifact,
  ArtifactMeta,
  CancelOutcome,
  CommitStats,
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
  type SummaryRow,
  type TaskRow,
  type WorkerRow,
} from '../rows.js';
import { modelToWire } from '../../core/worker-protocol.js';
import { loadCommands, loadMigrations } from '../sql-files.js';
import { InFlight } from './in-flight.js';
import { shaped, type ShapedStatement } from './shaped-rows.js';
import type { FromWriter, ToWriter, WireError, WriterInit } from './writer-thread.js';
import { isUnavailable, openConnection, SqliteWriter, type CreatedOnce, type Outcome, type WriteOp } from './writer.js';

/** Statements the read side prepares; writes have their own (writer.ts). */
const COMMANDS = ['get_task', 'queue_position', 'counts', 'recent_run_times', 'list_events'] as const;
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

interface Waiting {
  id: number;
  resolve: (value: any) => void;
  reject: (err: unknown) => void;
  /** What the promise resolves with when the write's outcome carries no value. */
  value: unknown;
  /** A write that needs fresh pages (a new task, the health probe). */
  grows: boolean;
}

/** Writes that add rows: one of them committing shows a full file has room again. */
const growing = (op: WriteOp): boolean => op.op === 'createTask' || op.op === 'createTaskOnce' || op.op === 'probe';

function wrap(err: unknown, what: string): unknown {
  if (err instanceof StoreUnavailableError) return err;
  return isUnavailable(err) ? new StoreUnavailableError(`Task store unavailable: ${what}`, err) : err;
}

const fromWire = (e: WireError): Error => Object.assign(new Error(e.message), { name: e.name, code: e.code });

/**
 * ORDER BY of a list query. seq is creation order here (one writer inserts tasks in the order
 * the event loop stamped them), so the unfiltered list by creation time walks the table itself
 * and needs no index of its own.
 */
export function sqliteListOrder(filtered: boolean, sortBy: string, sortOrder: 'asc' | 'desc'): string {
  if (!filtered && sortBy === 'created_at') return `seq ${sortOrder === 'asc' ? 'ASC' : 'DESC'}`;
  return listOrderBy(sortBy, sortOrder, 'seq');
}

/**
 * The writer thread's entry point. Under the test runner this module is the TypeScript
 * source, and the thread runs the built copy of the entry.
 */
function writerEntry(): URL {
  const here = import.meta.url;
  if (here.endsWith('.ts')) return new URL(here.replace(/\/src\/store\/sqlite\/sqlite-store\.ts$/, '/dist/store/sqlite/writer-thread.js'));
  return new URL('./writer-thread.js', here);
}

/**
 * The embedded store. Reads run on the caller's connection; writes go to a writer thread
 * that owns a second connection and commits them in groups (group commit): one transaction
 * and one fdatasync cover every write that arrived together, and each caller's promise
 * resolves only after its commit (creates and cancels: after the fdatasync). An in-memory
 * database has one connection, so there the writer runs inline.
 */
export class SqliteTaskStore implements TaskStore {
  readonly kind = 'sqlite' as const;
  // One writer commits in order; a create is answered after its fdatasync, a lease on commit,
  // so a create answered before a lease committed before it.
  readonly answersInCommitOrder = true;
  private readonly db: Database.Database;
  private readonly stmt = {} as Record<Command, Database.Statement>;
  private readonly listCache = new Map<string, { page: ShapedStatement<SummaryRow>; total: Database.Statement }>();
  private readonly taskById: ShapedStatement<TaskRow>;
  /** Set for an in-memory database: writes run on this thread. */
  private readonly inline: SqliteWriter | null = null;
  private readonly thread: Worker | null = null;
  private threadExit: Promise<void> = Promise.resolve();
  /** Why the writer thread cannot take writes any more, once it cannot. */
  private threadDown: unknown = null;
  private outbox: { ids: number[]; ops: WriteOp[] } = { ids: [], ops: [] };
  private readonly waiting = new InFlight<Waiting>();
  private nextId = 1;
  private immediateScheduled = false;
  private closed = false;
  /** The writer thread's last report. */
  private lastCommitStats: CommitStats | null = null;
  /**
   * Set when a commit failed; cleared by a write that adds rows: a full file still takes
   * writes that rewrite a row in place, and those prove nothing.
   */
  private writeFailure: unknown = null;

  static open(opts: SqliteStoreOptions): SqliteTaskStore {
    try {
      if (opts.path !== ':memory:') mkdirSync(dirname(opts.path), { recursive: true });
      return new SqliteTaskStore(openConnection(opts.path), opts);
    } catch (err) {
      throw wrap(err, `cannot open ${opts.path}`);
    }
  }

  private constructor(db: Database.Database, opts: SqliteStoreOptions) {
    this.db = db;
    this.migrate();
    const sql = loadCommands(new URL('./commands/', import.meta.url), COMMANDS);
    for (const name of COMMANDS) this.stmt[name] = db.prepare(sql[name]);
    this.taskById = shaped(this.stmt.get_task);
    if (opts.path === ':memory:') {
      this.inline = new SqliteWriter(db);
      if (opts.maxBytes) this.inline.setMaxBytes(opts.maxBytes);
      return;
    }
    const init: WriterInit = { path: opts.path, walPath: (opts.synchronous ?? 'FULL') === 'FULL' ? `${opts.path}-wal` : null, maxBytes: opts.maxBytes };
    const thread = new Worker(writerEntry(), { workerData: init });
    this.thread = thread;
    // Only writes in flight keep the process alive, as a pending file write would.
    thread.unref();
    thread.on('message', (m: FromWriter) => this.onWriterMessage(m));
    thread.on('error', (err) => this.writerDown(err));
    this.threadExit = new Promise((resolve) =>
      thread.once('exit', (code) => {
        this.writerDown(new StoreUnavailableError(`Task store unavailable: writer thread exited (code ${code})`));
        resolve();
      }),
    );
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

  /**
   * Queues a write; the writes of one turn of the event loop go to the writer in one message,
   * and the writer commits whatever reached it together (group commit).
   */
  private write<T>(op: WriteOp, value?: T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('Task store is closed'));
    if (this.threadDown) return Promise.reject(wrap(this.threadDown, 'write failed'));
    return new Promise<T>((resolve, reject) => {
      const id = this.nextId++;
      if (this.waiting.size === 0) this.thread?.ref();
      this.waiting.add({ id, resolve, reject, value, grows: growing(op) });
      this.outbox.ids.push(id);
      this.outbox.ops.push(op);
      if (!this.immediateScheduled) {
        this.immediateScheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private settle(id: number, fn: (w: Waiting) => void): void {
    const w = this.waiting.take(id);
    if (!w) return;
    if (this.waiting.size === 0) this.thread?.unref();
    fn(w);
  }

  /** Sends what is queued to the writer (or, inline, commits it now). */
  private flush(): void {
    this.immediateScheduled = false;
    const { ids, ops } = this.outbox;
    if (ids.length === 0) return;
    this.outbox = { ids: [], ops: [] };
    if (this.thread) {
      this.thread.postMessage({ type: 'batch', ids, ops } satisfies ToWriter);
      return;
    }
    try {
      this.acknowledge(ids, this.inline!.execute(ops));
    } catch (err) {
      this.failAll(ids, err, 'write failed');
    }
  }

  private onWriterMessage(m: FromWriter): void {
    if (m.type === 'done') this.acknowledge(m.ids, m.outcomes?.map((o) => (o.ok ? o : { ok: false as const, err: fromWire(o.err) })) ?? null);
    else if (m.type === 'failed') this.failAll(m.ids, fromWire(m.err), /fdatasync/.test(m.err.message) ? 'write not durable' : 'write failed');
    else if (m.type === 'fatal') this.writerDown(fromWire(m.err));
    else if (m.type === 'stats') this.lastCommitStats = m.stats;
  }

  /** A committed group: each write gets its own outcome (null: every write succeeded with no value). */
  private acknowledge(ids: number[], outcomes: Outcome[] | null): void {
    for (let i = 0; i < ids.length; i++) {
      const o = outcomes?.[i];
      this.settle(ids[i], (w) => {
        if (o && !o.ok) return w.reject(o.err);
        if (w.grows) this.writeFailure = null;
        w.resolve(o?.value === undefined ? w.value : o.value);
      });
    }
  }

  /** A group that did not commit (or did not reach the disk): every write in it fails. */
  private failAll(ids: number[], err: unknown, what: string): void {
    this.writeFailure = err;
    const wrapped = wrap(err, what);
    for (const id of ids) this.settle(id, (w) => w.reject(wrapped));
  }

  private writerDown(err: unknown): void {
    if (this.threadDown) return;
    this.threadDown = err instanceof StoreUnavailableError ? err : new StoreUnavailableError('Task store unavailable: writer thread failed', err);
    this.failAll(this.waiting.ids(), this.threadDown, 'write failed');
  }

  private read<T>(what: string, fn: () => T): Promise<T> {
    if (this.closed) return Promise.reject(new StoreUnavailableError('Task store is closed'));
    try {
      return Promise.resolve(fn());
    } catch (err) {
      return Promise.reject(wrap(err, what));
    }
  }


  createTask(t: NewTask): Promise<TaskRecord> {
    return this.write({ op: 'createTask', row: insertRow(t), lease: t.lease }, newTaskRecord(t, t.lease));
  }

  createTaskOnce(t: Omit<NewTask, 'lease'>, key: string, fingerprint: string, ttlMs: number): Promise<CreateOnceOutcome> {
    return this.write<CreateOnceOutcome | CreatedOnce>({ op: 'createTaskOnce', row: insertRow(t), key, fingerprint, ttlMs }).then((o) =>
      o.kind === 'created' ? { kind: 'created', task: newTaskRecord(t) } : o,
    );
  }

  appendEvents(
    id: string,
    leaseToken: string,
    events: Array<{ progress?: number; text?: string }>,
    now: number,
  ): Promise<{ kind: LeaseOutcome['kind']; events: TaskLogEvent[] }> {
    return this.write({ op: 'appendEvents', id, leaseToken, events, now });
  }

  listEvents(taskId: string, afterId: number, limit: number): Promise<TaskLogEvent[]> {
    return this.read('list events', () => (this.stmt.list_events.all({ taskId, afterId, limit }) as EventRow[]).map(rowToEvent));
  }

  claimDeliveries(now: number, limit: number, leaseMs: number): Promise<WebhookDelivery[]> {
    return this.write({ op: 'claimDeliveries', now, limit, leaseMs });
  }

  recordDelivery(id: number, r: DeliveryResult, now: number): Promise<void> {
    return this.write({ op: 'recordDelivery', id, r, now });
  }

  listDeliveries(taskId: string): Promise<WebhookDelivery[]> {
    return this.read('list deliveries', () =>
      (this.db.prepare('SELECT * FROM webhook_deliveries WHERE task_id = ? ORDER BY id').all(taskId) as DeliveryRow[]).map(rowToDelivery),
    );
  }

  getTask(id: string): Promise<TaskRecord | null> {
    return this.read('get task', () => {
      const row = this.taskById.get({ id });
      return row ? rowToTask(row) : null;
    });
  }

  private cancelledStmt: Database.Statement | null = null;

  cancelledAmong(workerId: string, ids: string[]): Promise<string[]> {
    if (ids.length === 0) return Promise.resolve([]);
    return this.read('find cancelled tasks', () => {
      this.cancelledStmt ??= this.db
        .prepare("SELECT id FROM tasks WHERE id IN (SELECT value FROM json_each(?)) AND status = 'cancelled' AND worker_id = ?")
        .pluck();
      return this.cancelledStmt.all(JSON.stringify(ids), workerId) as string[];
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
        const order = sqliteListOrder(where.length > 0, q.sortBy, q.sortOrder);
        stmts = {
          page: shaped(
            this.db.prepare(`SELECT ${SUMMARY_COLUMNS} FROM tasks ${clause} ORDER BY ${order} LIMIT :limit OFFSET :offset`),
          ),
          // The counters table answers every filter combination the API offers.
          total: this.db.prepare(`SELECT coalesce(sum(current), 0) AS n FROM task_counts ${clause}`),
        };
        this.listCache.set(key, stmts);
      }
      const { limit: _l, offset: _o, ...filter } = params;
      const tasks = stmts.page.all(params).map(rowToSummary);
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
    return this.write({ op: 'cancelTask', id, now });
  }

  leaseTasks(req: LeaseRequest): Promise<LeasedTask[]> {
    if (req.limit <= 0 || req.models.length === 0) return Promise.resolve([]);
    return this.write({ op: 'leaseTasks', req });
  }

  /** Explains a lease write that matched nothing: cancelled under the worker, or stale. */

  heartbeat(id: string, leaseToken: string, leaseMs: number, now: number, progress?: number): Promise<LeaseOutcome> {
    return this.write({ op: 'heartbeat', id, leaseToken, leaseMs, now, progress });
  }

  completeTask(id: string, leaseToken: string, result: Record<string, unknown>, now: number, leased?: TaskRecord): Promise<LeaseOutcome> {
    if (!leased) return this.write({ op: 'completeTask', id, leaseToken, result: JSON.stringify(result), now });
    const known = { taskType: leased.taskType, modelName: leased.modelName, webhookUrl: leased.webhookUrl, webhookEvents: leased.webhookEvents };
    return this.write<LeaseOutcome | { kind: 'ok'; task?: undefined }>({ op: 'completeTask', id, leaseToken, result: JSON.stringify(result), now, known }).then((o) =>
      o.kind === 'ok' && !o.task
        ? { kind: 'ok', task: { ...leased, status: 'completed', result, progress: 1, completedAt: now, updatedAt: now, leaseToken: null, leaseExpiresAt: null } }
        : (o as LeaseOutcome),
    );
  }

  failTask(id: string, leaseToken: string, req: FailRequest): Promise<LeaseOutcome> {
    return this.write({ op: 'failTask', id, leaseToken, req });
  }

  releaseTask(id: string, leaseToken: string, now: number): Promise<LeaseOutcome> {
    return this.write({ op: 'releaseTask', id, leaseToken, now });
  }

  reapExpiredLeases(now: number, limit: number): Promise<ReapResult> {
    return this.write({ op: 'reapExpiredLeases', now, limit });
  }

  commitStats(): CommitStats | null {
    return this.lastCommitStats;
  }

  expireLeasesOf(workerId: string, now: number, keep: string[] = []): Promise<number> {
    return this.write({ op: 'expireLeasesOf', workerId, now, keep });
  }

  reapTimedOut(now: number, graceMs: number, limit: number): Promise<TaskRecord[]> {
    return this.write({ op: 'reapTimedOut', now, graceMs, limit });
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
    const models = JSON.stringify(w.models.map(modelToWire));
    return this.write({ op: 'upsertWorker', id: w.id, models, concurrency: w.concurrency, hardware: JSON.stringify(w.hardware), now });
  }

  touchWorker(id: string, now: number): Promise<boolean> {
    return this.write({ op: 'touchWorker', id, now });
  }

  removeWorker(id: string): Promise<void> {
    return this.write({ op: 'removeWorker', id });
  }

  forgetWorkers(silentSince: number): Promise<string[]> {
    return this.write({ op: 'forgetWorkers', silentSince });
  }

  deleteFinished(before: number, limit: number): Promise<number> {
    return this.write({ op: 'deleteFinished', before, limit });
  }

  deleteExpiredKeys(before: number, limit: number): Promise<number> {
    return this.write({ op: 'deleteExpiredKeys', before, limit });
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
    return this.write({ op: 'putArtifact', taskId: a.taskId, name: a.name, contentType: a.contentType, data: a.data, now });
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
    // Writes queued before this call commit under the old cap, the ones after under the new.
    this.flush();
    if (this.inline) this.inline.setMaxBytes(bytes);
    else this.thread?.postMessage({ type: 'maxBytes', bytes } satisfies ToWriter);
  }

  /** Reads the counters; after a failed commit also proves that a write commits again. */
  async ping(): Promise<void> {
    if (this.closed) throw new StoreUnavailableError('Task store is closed');
    // Reads are proven by the counts the health check reads next; only writes need a probe.
    if (this.writeFailure !== null) await this.write({ op: 'probe' });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.flush();
    this.closed = true;
    if (this.thread) {
      // The writer commits what it was sent, and acknowledgements waiting for their
      // fdatasync get it, before its connection closes.
      this.thread.ref();
      this.thread.postMessage({ type: 'close' } satisfies ToWriter);
      await this.threadExit;
    }
    this.db.close();
  }
}
