import Database from 'better-sqlite3';
import { newLeaseToken } from '../../core/ids.js';
import type {
  CancelOutcome,
  CreateOnceOutcome,
  DeliveryResult,
  FailRequest,
  LeasedTask,
  LeaseOutcome,
  LeaseRequest,
  ReapResult,
  TaskLogEvent,
  WorkerRecord,
} from '../../core/store.js';
import type { NewLease, TaskRecord } from '../../core/task.js';
import { rowToDelivery, rowToEvent, rowToTask, rowToWorker, type DeliveryRow, type InsertRow, type TaskRow, type WorkerRow } from '../rows.js';
import { loadCommands } from '../sql-files.js';
import { shaped, type ShapedStatement } from './shaped-rows.js';

const COMMANDS = [
  'insert_task',
  'insert_task_leased',
  'get_task',
  'get_task_seq',
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
  'claim_deliveries',
  'record_delivery',
] as const;
type Command = (typeof COMMANDS)[number];

/** One write, as data: it crosses to the writer thread by structured clone. */
export type WriteOp =
  | { op: 'createTask'; row: InsertRow; lease?: NewLease }
  | { op: 'createTaskOnce'; row: InsertRow; key: string; fingerprint: string; ttlMs: number }
  | { op: 'appendEvents'; id: string; leaseToken: string; events: Array<{ progress?: number; text?: string }>; now: number }
  | { op: 'cancelTask'; id: string; now: number }
  | { op: 'leaseTasks'; req: LeaseRequest }
  | { op: 'heartbeat'; id: string; leaseToken: string; leaseMs: number; now: number; progress?: number }
  | { op: 'completeTask'; id: string; leaseToken: string; result: string; now: number; known?: KnownTask }
  | { op: 'failTask'; id: string; leaseToken: string; req: FailRequest }
  | { op: 'releaseTask'; id: string; leaseToken: string; now: number }
  | { op: 'reapExpiredLeases'; now: number; limit: number }
  | { op: 'expireLeasesOf'; workerId: string; now: number; keep: string[] }
  | { op: 'reapTimedOut'; now: number; graceMs: number; limit: number }
  | { op: 'claimDeliveries'; now: number; limit: number; leaseMs: number }
  | { op: 'recordDelivery'; id: number; r: DeliveryResult; now: number }
  | { op: 'upsertWorker'; id: string; models: string; concurrency: number; hardware: string; now: number }
  | { op: 'touchWorker'; id: string; now: number }
  | { op: 'removeWorker'; id: string }
  | { op: 'forgetWorkers'; silentSince: number }
  | { op: 'deleteFinished'; before: number; limit: number }
  | { op: 'deleteExpiredKeys'; before: number; limit: number }
  | { op: 'putArtifact'; taskId: string; name: string; contentType: string; data: Uint8Array; now: number }
  | { op: 'probe' };

/** What the caller knows of a task and never changes: a status change needs it, so the row need not be read. */
export type KnownTask = Pick<TaskRecord, 'taskType' | 'modelName' | 'webhookUrl' | 'webhookEvents'>;

/** Creates and cancels: the promises clients hold, acknowledged only once on disk. */
export const isDurable = (op: WriteOp): boolean => op.op === 'createTask' || op.op === 'createTaskOnce' || op.op === 'cancelTask';

export type Outcome = { ok: true; value: unknown } | { ok: false; err: unknown };

/** A createTaskOnce that inserted: the store adds the record it built. */
export type CreatedOnce = { kind: 'created' };

/** Thrown inside an optimistic batch to have it rerun with a savepoint per write. */
class BatchRetry extends Error {}

/** SQLite errors that mean "the store is not usable now", as opposed to a bug. */
const UNAVAILABLE_CODES = [
  'SQLITE_FULL',
  'SQLITE_IOERR',
  'SQLITE_READONLY',
  'SQLITE_CANTOPEN',
  'SQLITE_BUSY',
  'SQLITE_LOCKED',
  'SQLITE_CORRUPT',
  'SQLITE_NOTADB',
  'SQLITE_PERM',
];

export function isUnavailable(err: unknown): boolean {
  const code = (err as { code?: string } | null)?.code ?? '';
  return UNAVAILABLE_CODES.some((c) => code === c || code.startsWith(`${c}_`)) || /database connection is not open/.test(String(err));
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

/** Opens a connection with the settings every connection of the store uses. */
export function openConnection(path: string): Database.Database {
  const db = new Database(path);
  db.pragma('journal_mode = WAL');
  // SQLite itself never fsyncs on commit; with FULL the store does it before acknowledging.
  db.pragma('synchronous = NORMAL');
  db.pragma('busy_timeout = 5000');
  db.pragma('foreign_keys = ON');
  return db;
}

/**
 * The write side of the SQLite store: every write is a `WriteOp`, and a batch of them runs
 * in one transaction (group commit). It runs on the store's writer thread, or inline on the
 * caller's connection for an in-memory database.
 */
export class SqliteWriter {
  private readonly stmt = {} as Record<Command, Database.Statement>;
  private readonly taskById: ShapedStatement<TaskRow>;
  private readonly taskBySeq: ShapedStatement<TaskRow>;
  private readonly savepoint: { begin: Database.Statement; release: Database.Statement; rollback: Database.Statement };
  /** An event whose id is known: a new task's log starts at id 1. */
  private readonly logNth: Database.Statement;
  private readonly logStatus: Database.Statement;
  private readonly lastEventId: Database.Statement;
  private readonly logOutput: Database.Statement;
  private readonly setProgress: Database.Statement;
  private readonly queueDelivery: Database.Statement;
  private readonly bumpCounts: Database.Statement;
  private readonly upsertWorkerStmt: Database.Statement;
  private readonly idempotencyGet: Database.Statement;
  private readonly idempotencyPut: Database.Statement;
  /** Status moves of the write running now, and of the batch so far (summed per key). */
  private opMoves: Array<[string, number, number]> = [];
  private batchMoves = new Map<string, [number, number]>();
  /** Made once: better-sqlite3 defines a property set on every transaction function it makes. */
  private readonly batch: Database.Transaction<(ops: WriteOp[], isolated: boolean) => Outcome[]>;

  constructor(readonly db: Database.Database) {
    const sql = loadCommands(new URL('./commands/', import.meta.url), COMMANDS);
    for (const name of COMMANDS) this.stmt[name] = db.prepare(sql[name]);
    this.taskById = shaped(this.stmt.get_task);
    this.taskBySeq = shaped(this.stmt.get_task_seq);
    this.savepoint = { begin: db.prepare('SAVEPOINT w'), release: db.prepare('RELEASE w'), rollback: db.prepare('ROLLBACK TO w') };
    // Event ids count up per task: the next one is found by a seek to the end of the task's key range.
    this.logNth = db.prepare("INSERT INTO task_events (task_id, id, type, status, at) VALUES (?, ?, 'status', ?, ?)");
    // A task with no stored event has the implicit first one (id 1, see migration 009).
    this.logStatus = db.prepare(
      "INSERT INTO task_events (task_id, id, type, status, at) VALUES (?, (SELECT coalesce(max(id), 1) + 1 FROM task_events WHERE task_id = ?), 'status', ?, ?)",
    );
    this.lastEventId = db.prepare('SELECT coalesce(max(id), 1) FROM task_events WHERE task_id = ?').pluck();
    this.logOutput = db.prepare('INSERT INTO task_events (task_id, id, type, progress, text, at) VALUES (?, ?, ?, ?, ?, ?)');
    this.setProgress = db.prepare('UPDATE tasks SET progress = ?, updated_at = ? WHERE id = ?');
    this.queueDelivery = db.prepare('INSERT INTO webhook_deliveries (task_id, event, url, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?)');
    this.bumpCounts = db.prepare(
      `INSERT INTO task_counts (task_type, model_name, status, current, total) VALUES (?, ?, ?, ?, ?)
       ON CONFLICT (task_type, model_name, status) DO UPDATE SET current = current + excluded.current, total = total + excluded.total`,
    );
    this.upsertWorkerStmt = db.prepare(
      `INSERT INTO workers (id, models, concurrency, hardware, registered_at, last_seen_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (id) DO UPDATE SET models = excluded.models, concurrency = excluded.concurrency,
         hardware = excluded.hardware, last_seen_at = excluded.last_seen_at
       RETURNING *`,
    );
    this.idempotencyGet = db.prepare('SELECT fingerprint, task_id, created_at FROM idempotency_keys WHERE key = ?');
    this.idempotencyPut = db.prepare('INSERT OR REPLACE INTO idempotency_keys (key, fingerprint, task_id, created_at) VALUES (?, ?, ?, ?)');
    this.batch = db.transaction((ops: WriteOp[], isolated: boolean) => this.runBatch(ops, isolated));
  }

  /**
   * Runs a batch in one transaction. Optimistic: only when a write throws is the batch rolled
   * back and run again with a savepoint per write, so one bad write fails alone. An error
   * that makes the store unusable (disk full, I/O) fails the whole batch: it is thrown.
   */
  execute(ops: WriteOp[]): Outcome[] {
    try {
      return this.batch.immediate(ops, false);
    } catch (err) {
      if (!(err instanceof BatchRetry)) throw err;
      return this.batch.immediate(ops, true);
    }
  }

  private runBatch(ops: WriteOp[], isolated: boolean): Outcome[] {
    const outcomes: Outcome[] = [];
    this.batchMoves = new Map();
    for (const op of ops) {
      this.opMoves = [];
      if (isolated) this.savepoint.begin.run();
      try {
        const value = this.run(op);
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
   * Everything a status change implies, in the transaction that makes it: the event log
   * entry, a webhook delivery when the task asked for one, and the count moves (summed and
   * applied once per batch). `eventId` 'implicit': the event is derived from the row when
   * read, not stored (a task's first).
   */
  private moved(row: MovedRow, from: string | null, to: string, eventId?: number | 'implicit'): void {
    if (from === to) return;
    const at = Number(row.updated_at ?? row.created_at ?? Date.now());
    if (typeof eventId === 'number') this.logNth.run(row.id, eventId, to, at);
    else if (eventId === undefined) this.logStatus.run(row.id, row.id, to, at);
    if (row.webhook_url && row.webhook_events) {
      const events = typeof row.webhook_events === 'string' ? (JSON.parse(row.webhook_events) as string[]) : row.webhook_events;
      if (events.includes(to)) this.queueDelivery.run(row.id, to, row.webhook_url, at, at);
    }
    if (from !== null) this.opMoves.push([`${row.task_type}\u0000${row.model_name}\u0000${from}`, -1, 0]);
    this.opMoves.push([`${row.task_type}\u0000${row.model_name}\u0000${to}`, 1, 1]);
  }

  /** Inserts a new task with its first event and count move; leased, with the lease's too. */
  private insert(r: InsertRow, lease?: NewLease): void {
    const moved = { id: r[0], task_type: r[1], model_name: r[2], created_at: r[8], webhook_url: r[10], webhook_events: r[11] };
    if (!lease) {
      this.stmt.insert_task.run(r);
      this.moved(moved, null, 'pending', 'implicit');
      return;
    }
    this.stmt.insert_task_leased.run(...r, lease.workerId, lease.token, lease.expiresAt, r[8]);
    this.moved(moved, null, 'pending', 'implicit');
    this.moved(moved, 'pending', 'running', 2);
  }

  /**
   * One row's update, then the row as it is now. SQLite runs `RETURNING` through a temporary
   * table opened for each statement (4-5 times the cost of the update here); a read of the
   * same row in the same transaction gives the same answer.
   */
  private updateById(cmd: Command, params: Record<string, unknown> & { id: string }): TaskRow | undefined {
    if (this.stmt[cmd].run(params).changes === 0) return undefined;
    return this.taskById.get({ id: params.id })!;
  }

  private updateBySeq(cmd: Command, params: Record<string, unknown> & { seq: number }): TaskRow | undefined {
    if (this.stmt[cmd].run(params).changes === 0) return undefined;
    return this.taskBySeq.get({ seq: params.seq })!;
  }

  /** Explains a lease write that matched nothing: cancelled under the worker, or stale. */
  private leaseMiss(id: string, leaseToken: string): LeaseOutcome {
    const row = this.taskById.get({ id });
    if (row && row.status === 'cancelled' && row.lease_token === leaseToken) return { kind: 'cancelled', task: rowToTask(row) };
    return { kind: 'stale', task: row ? rowToTask(row) : null };
  }

  private leaseResult(row: TaskRow | undefined, id: string, leaseToken: string, from: string): LeaseOutcome {
    if (!row) return this.leaseMiss(id, leaseToken);
    this.moved(row, from, row.status);
    return { kind: 'ok', task: rowToTask(row) };
  }

  private run(w: WriteOp): unknown {
    switch (w.op) {
      case 'createTask':
        // The caller builds the record from its own input: nothing to send back.
        this.insert(w.row, w.lease);
        return undefined;
      case 'createTaskOnce': {
        const id = w.row[0];
        const createdAt = w.row[8];
        const prior = this.idempotencyGet.get(w.key) as { fingerprint: string; task_id: string; created_at: number } | undefined;
        if (prior && prior.created_at > createdAt - w.ttlMs) {
          if (prior.fingerprint !== w.fingerprint) return { kind: 'conflict', taskId: prior.task_id } satisfies CreateOnceOutcome;
          const row = this.taskById.get({ id: prior.task_id });
          if (row) return { kind: 'replayed', task: rowToTask(row) } satisfies CreateOnceOutcome;
        }
        this.insert(w.row);
        this.idempotencyPut.run(w.key, w.fingerprint, id, createdAt);
        // As for createTask, the caller builds the record.
        return { kind: 'created' } satisfies CreatedOnce;
      }
      case 'appendEvents': {
        const row = this.taskById.get({ id: w.id });
        if (!row || row.lease_token !== w.leaseToken) return { kind: 'stale', events: [] };
        if (row.status === 'cancelled') return { kind: 'cancelled', events: [] };
        if (row.status !== 'running') return { kind: 'stale', events: [] };
        const out: TaskLogEvent[] = [];
        let progress: number | undefined;
        // The rows are known from what is inserted: nothing is read back (see updateById).
        let id = this.lastEventId.get(w.id) as number;
        const log = (type: 'output' | 'progress', progress: number | null, text: string | null): TaskLogEvent => {
          this.logOutput.run(w.id, ++id, type, progress, text, w.now);
          return rowToEvent({ id, task_id: w.id, type, status: null, progress, text, at: w.now });
        };
        for (const e of w.events) {
          if (e.text) out.push(log('output', e.progress ?? null, e.text));
          else if (e.progress !== undefined) out.push(log('progress', e.progress, null));
          if (e.progress !== undefined) progress = e.progress;
        }
        if (progress !== undefined) this.setProgress.run(progress, w.now, w.id);
        return { kind: 'ok', events: out };
      }
      case 'cancelTask': {
        const before = this.taskById.get({ id: w.id });
        if (!before) return { kind: 'not_found' } satisfies CancelOutcome;
        if (before.status === 'cancelled') return { kind: 'already_cancelled', task: rowToTask(before) } satisfies CancelOutcome;
        const row = this.updateById('cancel_task', { id: w.id, now: w.now });
        if (!row) return { kind: 'not_cancellable', task: rowToTask(before) } satisfies CancelOutcome;
        this.moved(row, before.status, 'cancelled');
        return { kind: 'cancelled', task: rowToTask(row), wasRunning: before.status === 'running' } satisfies CancelOutcome;
      }
      case 'leaseTasks': {
        const req = w.req;
        const candidates: Array<{ seq: number; priority: number }> = [];
        for (const m of req.models) {
          for (const c of this.stmt.lease_candidates.all({ model_name: m.modelName, task_type: m.taskType, limit: req.limit }) as Array<{
            seq: number;
            priority: number;
          }>) {
            candidates.push(c);
          }
        }
        if (req.models.length > 1) candidates.sort((a, b) => b.priority - a.priority || a.seq - b.seq);
        const leased: LeasedTask[] = [];
        for (const c of candidates.slice(0, req.limit)) {
          const leaseToken = newLeaseToken();
          const row = this.updateBySeq('lease_task', {
            seq: c.seq,
            worker_id: req.workerId,
            lease_token: leaseToken,
            lease_expires_at: req.now + req.leaseMs,
            now: req.now,
          });
          if (row) {
            this.moved(row, 'pending', 'running');
            leased.push({ task: rowToTask(row), leaseToken });
          }
        }
        return leased;
      }
      case 'heartbeat': {
        const row = this.updateById('heartbeat', {
          id: w.id,
          lease_token: w.leaseToken,
          lease_expires_at: w.now + w.leaseMs,
          progress: w.progress ?? null,
          now: w.now,
        });
        return row ? ({ kind: 'ok', task: rowToTask(row) } satisfies LeaseOutcome) : this.leaseMiss(w.id, w.leaseToken);
      }
      case 'completeTask':
        if (w.known) {
          // The caller builds the completed record from its copy: only the outcome goes back.
          if (this.stmt.complete_task.run({ id: w.id, lease_token: w.leaseToken, result: w.result, now: w.now }).changes === 0) {
            return this.leaseMiss(w.id, w.leaseToken);
          }
          const k = w.known;
          this.moved({ id: w.id, task_type: k.taskType, model_name: k.modelName, updated_at: w.now, webhook_url: k.webhookUrl, webhook_events: k.webhookEvents }, 'running', 'completed');
          return { kind: 'ok' };
        }
        return this.leaseResult(
          this.updateById('complete_task', { id: w.id, lease_token: w.leaseToken, result: w.result, now: w.now }),
          w.id,
          w.leaseToken,
          'running',
        );
      case 'failTask':
        return this.leaseResult(
          this.updateById('fail_task', {
            id: w.id,
            lease_token: w.leaseToken,
            retryable: w.req.retryable ? 1 : 0,
            error_code: w.req.error.code,
            error_message: w.req.error.message,
            now: w.req.now,
          }),
          w.id,
          w.leaseToken,
          'running',
        );
      case 'releaseTask':
        return this.leaseResult(
          this.updateById('release_task', { id: w.id, lease_token: w.leaseToken, now: w.now }),
          w.id,
          w.leaseToken,
          'running',
        );
      case 'reapExpiredLeases': {
        const out: ReapResult = { requeued: [], failed: [] };
        for (const { seq } of this.stmt.expired_leases.all({ now: w.now, limit: w.limit }) as Array<{ seq: number }>) {
          const row = this.updateBySeq('requeue_or_fail_expired', { seq, now: w.now });
          if (!row) continue;
          this.moved(row, 'running', row.status);
          const task = rowToTask(row);
          (task.status === 'pending' ? out.requeued : out.failed).push(task);
        }
        return out;
      }
      case 'expireLeasesOf':
        return this.db
          .prepare(
            `UPDATE tasks SET lease_expires_at = ? WHERE status = 'running' AND worker_id = ? AND lease_expires_at >= ?
               AND id NOT IN (SELECT value FROM json_each(?))`,
          )
          .run(w.now - 1, w.workerId, w.now, JSON.stringify(w.keep)).changes;
      case 'reapTimedOut':
        return (this.stmt.fail_timed_out.all({ now: w.now, grace_ms: w.graceMs, limit: w.limit }) as TaskRow[]).map((row) => {
          this.moved(row, 'running', 'failed');
          return rowToTask(row);
        });
      case 'claimDeliveries':
        return (this.stmt.claim_deliveries.all({ now: w.now, limit: w.limit, claimed_until: w.now + w.leaseMs }) as DeliveryRow[]).map(rowToDelivery);
      case 'recordDelivery':
        this.stmt.record_delivery.run({
          id: w.id,
          ok: w.r.ok ? 1 : 0,
          status_code: w.r.statusCode,
          error: w.r.error,
          retry_at: w.r.retryAt,
          now: w.now,
        });
        return undefined;
      case 'upsertWorker':
        return rowToWorker(this.upsertWorkerStmt.get(w.id, w.models, w.concurrency, w.hardware, w.now, w.now) as WorkerRow) satisfies WorkerRecord;
      case 'touchWorker':
        return this.db.prepare('UPDATE workers SET last_seen_at = ? WHERE id = ?').run(w.now, w.id).changes > 0;
      case 'removeWorker':
        this.db.prepare('DELETE FROM workers WHERE id = ?').run(w.id);
        return undefined;
      case 'forgetWorkers':
        return (
          this.db
            .prepare(
              `DELETE FROM workers WHERE last_seen_at < ?
                 AND NOT EXISTS (SELECT 1 FROM tasks WHERE status = 'running' AND worker_id = workers.id) RETURNING id`,
            )
            .all(w.silentSince) as Array<{ id: string }>
        ).map((r) => r.id);
      case 'deleteFinished': {
        const victims = this.db
          .prepare(
            `SELECT id FROM tasks
              WHERE status IN ('completed', 'failed', 'cancelled') AND created_at < ? AND updated_at < ?
                AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.task_id = tasks.id AND d.state = 'pending')
              LIMIT ?`,
          )
          .all(w.before, w.before, w.limit) as Array<{ id: string }>;
        const gone = ['task_events', 'artifacts', 'webhook_deliveries', 'tasks'].map((t) => this.db.prepare(`DELETE FROM ${t} ${t === 'tasks' ? 'WHERE id = ?' : 'WHERE task_id = ?'}`));
        // The counts' delete trigger takes each row out of its current count.
        for (const v of victims) for (const del of gone) del.run(v.id);
        return victims.length;
      }
      case 'deleteExpiredKeys':
        return this.db
          .prepare('DELETE FROM idempotency_keys WHERE key IN (SELECT key FROM idempotency_keys WHERE created_at < ? LIMIT ?)')
          .run(w.before, w.limit).changes;
      case 'putArtifact': {
        const data = Buffer.from(w.data.buffer, w.data.byteOffset, w.data.byteLength);
        this.db
          .prepare(
            `INSERT INTO artifacts (task_id, name, content_type, size, data, created_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (task_id, name) DO UPDATE SET content_type = excluded.content_type, size = excluded.size,
               data = excluded.data, created_at = excluded.created_at`,
          )
          .run(w.taskId, w.name, w.contentType, data.length, data, w.now);
        return { taskId: w.taskId, name: w.name, contentType: w.contentType, size: data.length, createdAt: w.now };
      }
      case 'probe':
        // A probe that needs fresh pages, as a task would: rewriting a row in place can succeed
        // on a full disk.
        this.db.prepare('INSERT OR REPLACE INTO store_probe (id, at) VALUES (2, zeroblob(16384))').run();
        this.db.prepare('DELETE FROM store_probe WHERE id = 2').run();
        return undefined;
      default:
        // A writer thread from another build: fail loudly rather than answer nothing.
        throw new Error(`Unknown write op ${(w as { op: string }).op}`);
    }
  }

  /** Caps the file (bytes; 0 removes the cap), never below what it already holds. */
  setMaxBytes(bytes: number): void {
    const pageSize = this.db.pragma('page_size', { simple: true }) as number;
    const used = this.db.pragma('page_count', { simple: true }) as number;
    this.db.pragma(`max_page_count = ${bytes > 0 ? Math.max(used, Math.floor(bytes / pageSize)) : 4294967294}`);
  }
}
