import type { ModelRef, NewTask, TaskError, TaskRecord, TaskStatus, TaskType } from './task.js';
import type { Histogram } from './histogram.js';

export type SortField = 'created_at' | 'status' | 'task_type';
export type SortOrder = 'asc' | 'desc';

export interface ListQuery {
  status?: TaskStatus;
  taskType?: TaskType;
  modelName?: string;
  limit: number;
  offset: number;
  sortBy: SortField;
  sortOrder: SortOrder;
}

/** A row of the list view: no inputs or results, so a page stays small. */
export type TaskSummary = Pick<
  TaskRecord,
  | 'id'
  | 'status'
  | 'taskType'
  | 'modelName'
  | 'priority'
  | 'createdAt'
  | 'startedAt'
  | 'completedAt'
  | 'cancelledAt'
  | 'workerId'
>;

export interface ListResult {
  tasks: TaskSummary[];
  total: number;
}

/** Current and all-time counts per (task_type, model_name, status), kept by the store. */
export interface CountRow {
  taskType: TaskType;
  modelName: string;
  status: TaskStatus;
  current: number;
  total: number;
}

export interface LeaseRequest {
  workerId: string;
  models: ModelRef[];
  limit: number;
  leaseMs: number;
  now: number;
}

export interface LeasedTask {
  task: TaskRecord;
  leaseToken: string;
}

export type CancelOutcome =
  | { kind: 'cancelled'; task: TaskRecord; wasRunning: boolean }
  | { kind: 'already_cancelled'; task: TaskRecord }
  | { kind: 'not_cancellable'; task: TaskRecord }
  | { kind: 'not_found' };

/** Outcome of a write that must present a lease token. */
export type LeaseOutcome =
  | { kind: 'ok'; task: TaskRecord }
  /** The task was cancelled while the worker held it. */
  | { kind: 'cancelled'; task: TaskRecord }
  /** The token is stale (lease expired and re-leased, or the task finished). */
  | { kind: 'stale'; task: TaskRecord | null };

export interface FailRequest {
  error: TaskError;
  /** Go back to pending when attempts remain (a worker crash, a lost GPU), else fail. */
  retryable: boolean;
  now: number;
}

/** A model as a worker registers it. */
export interface RegisteredModel extends ModelRef {
  /** Tasks of this model the worker runs at once, where fewer than its concurrency (its engine's capacity). */
  concurrency?: number;
}

export interface WorkerRecord {
  id: string;
  models: RegisteredModel[];
  concurrency: number;
  hardware: Record<string, unknown>;
  registeredAt: number;
  lastSeenAt: number;
}

export interface ArtifactMeta {
  taskId: string;
  name: string;
  contentType: string;
  size: number;
  createdAt: number;
}

export interface Artifact extends ArtifactMeta {
  data: Buffer;
}

export interface RunningTaskRef {
  id: string;
  workerId: string | null;
}

/** One entry of a task's event log; ids increase in commit order per task. */
export interface TaskLogEvent {
  id: number;
  taskId: string;
  type: 'status' | 'progress' | 'output';
  status: TaskStatus | null;
  progress: number | null;
  text: string | null;
  at: number;
}

export type CreateOnceOutcome =
  | { kind: 'created'; task: TaskRecord }
  /** The key was used before with the same request: the task it created. */
  | { kind: 'replayed'; task: TaskRecord }
  /** The key was used before with a different request. */
  | { kind: 'conflict'; taskId: string };

export interface WebhookDelivery {
  id: number;
  taskId: string;
  event: TaskStatus;
  url: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  nextAttemptAt: number;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: number;
  deliveredAt: number | null;
}

export interface DeliveryResult {
  ok: boolean;
  statusCode: number | null;
  error: string | null;
  /** When to try again if not ok; null gives up (state becomes failed). */
  retryAt: number | null;
}

/** How the SQLite store's group commits went since it opened. */
export interface CommitStats {
  /** Writes per group commit. */
  groupWrites: Histogram;
  /** Seconds to run and commit one group. */
  commitSeconds: Histogram;
  /** Seconds per fdatasync of the WAL (synchronous=FULL). */
  fsyncSeconds: Histogram;
}

export interface ReapResult {
  requeued: TaskRecord[];
  failed: TaskRecord[];
}

/**
 * The one storage seam. Routes, scheduler and workers see only this; no connection or
 * transaction type leaks out. Every method is one transaction.
 */
export interface TaskStore {
  readonly kind: 'sqlite' | 'postgres';
  /**
   * True where writes are answered in the order they committed, so a lease answered after
   * another write's answer saw that write (one writer). Concurrent transactions do not give this.
   */
  readonly answersInCommitOrder: boolean;
  /** Group-commit figures, where the store has them (SQLite's writer thread); null elsewhere. */
  commitStats(): CommitStats | null;
  /** With `task.lease`, the new task is running under that lease when this resolves (attempt 1). */
  createTask(task: NewTask): Promise<TaskRecord>;
  getTask(id: string): Promise<TaskRecord | null>;
  /** Those of `ids` that were cancelled while leased to this worker (one query, however many). */
  cancelledAmong(workerId: string, ids: string[]): Promise<string[]>;
  listTasks(query: ListQuery): Promise<ListResult>;
  /** Tasks of the same model ahead of this pending task in lease order. */
  queuePosition(task: TaskRecord): Promise<number>;
  cancelTask(id: string, now: number): Promise<CancelOutcome>;
  /** Leases up to `limit` pending tasks, highest priority first, then oldest. */
  leaseTasks(req: LeaseRequest): Promise<LeasedTask[]>;
  /** Extends the lease and records progress. */
  heartbeat(id: string, leaseToken: string, leaseMs: number, now: number, progress?: number): Promise<LeaseOutcome>;
  /**
   * `leased`: the caller's copy of the task as it was leased. A store may build the completed
   * record from it instead of reading the row back (what the update sets is known).
   */
  completeTask(id: string, leaseToken: string, result: Record<string, unknown>, now: number, leased?: TaskRecord): Promise<LeaseOutcome>;
  failTask(id: string, leaseToken: string, req: FailRequest): Promise<LeaseOutcome>;
  /** Gives a leased task back to the queue without spending an attempt (graceful shutdown). */
  releaseTask(id: string, leaseToken: string, now: number): Promise<LeaseOutcome>;
  /** Requeues running tasks whose lease expired, or fails them when attempts are spent. */
  reapExpiredLeases(now: number, limit: number): Promise<ReapResult>;
  /**
   * Ends now every lease a worker id holds except on `keep` (the process that held them is
   * gone: a restart under the same id), so the next `reapExpiredLeases` treats them as
   * expired. Returns how many there were.
   */
  expireLeasesOf(workerId: string, now: number, keep?: string[]): Promise<number>;
  /** Fails running tasks that outlived their timeout by `graceMs` (a hung worker). */
  reapTimedOut(now: number, graceMs: number, limit: number): Promise<TaskRecord[]>;
  /** O(models), not O(tasks). */
  counts(): Promise<CountRow[]>;
  /** Mean run time (ms) of recent completions per model, for estimates at start-up. */
  recentRunTimes(limitPerModel: number): Promise<Array<ModelRef & { meanMs: number; samples: number }>>;
  /** Registers or re-registers a worker; `lastSeenAt` is set to `now`. */
  upsertWorker(w: Omit<WorkerRecord, 'registeredAt' | 'lastSeenAt'>, now: number): Promise<WorkerRecord>;
  touchWorker(id: string, now: number): Promise<boolean>;
  removeWorker(id: string): Promise<void>;
  /** Removes workers last seen before `silentSince` that hold no running task; returns their ids. */
  forgetWorkers(silentSince: number): Promise<string[]>;
  /**
   * Deletes up to `limit` finished tasks (completed, failed, cancelled) created and last
   * changed before `before`, with their events, artifacts and webhook deliveries; a task
   * with a webhook still to deliver stays. Current counts drop, all-time totals do not.
   * Returns how many went.
   */
  deleteFinished(before: number, limit: number): Promise<number>;
  /** Deletes up to `limit` idempotency keys created before `before` (expired: they no longer replay). */
  deleteExpiredKeys(before: number, limit: number): Promise<number>;
  listWorkers(): Promise<WorkerRecord[]>;
  /** Every running task with its worker (bounded by the number of worker slots). */
  runningTasks(): Promise<RunningTaskRef[]>;
  /** Stores a binary output for a task; replaces one of the same name. */
  putArtifact(a: Omit<Artifact, 'size' | 'createdAt'>, now: number): Promise<ArtifactMeta>;
  getArtifact(taskId: string, name: string): Promise<Artifact | null>;
  listArtifacts(taskId: string): Promise<ArtifactMeta[]>;
  /**
   * Creates a task once per idempotency key (kept `ttlMs`): the same key with the same
   * fingerprint returns the first task; with another fingerprint, a conflict. The task is
   * created pending (a replay could not give a lease back).
   */
  createTaskOnce(task: Omit<NewTask, 'lease'>, key: string, fingerprint: string, ttlMs: number): Promise<CreateOnceOutcome>;
  /** Appends progress and output to a running task's log under its lease. */
  appendEvents(
    id: string,
    leaseToken: string,
    events: Array<{ progress?: number; text?: string }>,
    now: number,
  ): Promise<{ kind: LeaseOutcome['kind']; events: TaskLogEvent[] }>;
  listEvents(taskId: string, afterId: number, limit: number): Promise<TaskLogEvent[]>;
  /** Claims due webhook deliveries for `leaseMs` so no other node sends them meanwhile. */
  claimDeliveries(now: number, limit: number, leaseMs: number): Promise<WebhookDelivery[]>;
  recordDelivery(id: number, result: DeliveryResult, now: number): Promise<void>;
  listDeliveries(taskId: string): Promise<WebhookDelivery[]>;
  /** Throws when the store cannot serve requests. */
  ping(): Promise<void>;
  close(): Promise<void>;
}
