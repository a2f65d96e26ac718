import { AppError } from '../core/errors.js';
import type { EventBus, TaskEventType } from '../core/events.js';
import { newLeaseToken, newTaskId } from '../core/ids.js';
import type { CancelOutcome, LeasedTask, LeaseOutcome, ListQuery, ListResult, TaskStore } from '../core/store.js';
import { isFinal, newTaskRecord, type ModelRef, type NewLease, type NewTask, type TaskError, type TaskRecord, type TaskStatus, type TaskType } from '../core/task.js';
import { EtaEstimator } from './eta-estimator.js';
import { LeaseWakeups, type Claim, type DirectDelivery } from './wakeups.js';
import { WorkerDirectory } from './worker-directory.js';

export interface CreateTaskInput {
  taskType: TaskType;
  modelName: string;
  inputData: Record<string, unknown>;
  parameters: Record<string, unknown>;
  priority?: number;
  maxAttempts?: number;
  timeoutSeconds?: number;
  webhookUrl?: string;
  webhookEvents?: TaskStatus[];
}

export interface Idempotency {
  key: string;
  fingerprint: string;
  ttlMs: number;
}

export interface TaskQueueOptions {
  defaultMaxAttempts: number;
  defaultTimeoutMs: number;
  leaseMs: number;
  /** How long an offline worker stays listed (default 24 h). */
  workerRetentionMs?: number;
  /** How long a finished task is kept; 0 or unset keeps every task. */
  taskRetentionMs?: number;
  /** How long an idempotency key replays; older keys are deleted (unset: none are). */
  idempotencyTtlMs?: number;
}

export interface Estimate {
  estimatedCompletion: number | null;
  queuePosition: number | null;
}

/** Expired leases handled per store call. */
const REAP_BATCH = 500;
/** Rows deleted per store call (each its own transaction, so other writes interleave). */
const PRUNE_BATCH = 500;

/** Runs a bounded delete until it deletes less than a batch (or answers no number); returns the total. */
async function inBatches(del: (limit: number) => Promise<number>): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await del(PRUNE_BATCH);
    total += n;
    if (!(n >= PRUNE_BATCH)) return total;
  }
}

const refOf = (t: TaskRecord): ModelRef => ({ taskType: t.taskType, modelName: t.modelName });
/** Counts by task type, then model: keys built by concatenation would be flattened and hashed on every create. */
type PendingCounts = Map<string, Map<string, number>>;
const pendingOf = (counts: PendingCounts, m: ModelRef): number => counts.get(m.taskType)?.get(m.modelName) ?? 0;
function addPending(counts: PendingCounts, m: ModelRef, n: number): void {
  let byModel = counts.get(m.taskType);
  if (!byModel) counts.set(m.taskType, (byModel = new Map()));
  byModel.set(m.modelName, (byModel.get(m.modelName) ?? 0) + n);
}

/**
 * Every task transition goes through here: one store transaction, then one event.
 * Routes and workers (both transports) use this and never the store directly.
 */
export class TaskQueue {
  readonly workers: WorkerDirectory;
  readonly eta: EtaEstimator;
  private readonly wakeups: LeaseWakeups;
  private readonly unsubscribe: () => void;
  /** Pending tasks per model as last read from the store's counters, plus local creates since. */
  private pendingCounts: PendingCounts = new Map();
  /** Running tasks per model, as last read from the store's counters. */
  private runningCounts: PendingCounts = new Map();
  private pendingCountsAt = 0;
  private pendingRefresh: Promise<void> | null = null;
  private prunedAt = -Infinity;
  /** Completions observed per model, for processing-time metrics. */
  readonly onFinished = new Set<(task: TaskRecord) => void>();

  constructor(
    readonly store: TaskStore,
    readonly bus: EventBus,
    private readonly opts: TaskQueueOptions,
  ) {
    // A worker that has not been heard from for a lease length has lost its tasks too.
    this.workers = new WorkerDirectory(store, opts.leaseMs);
    this.wakeups = new LeaseWakeups(store.answersInCommitOrder);
    this.eta = new EtaEstimator((m) => this.workers.slots(m));
    // Wake waiting leases for tasks that became pending on this node or another one.
    this.unsubscribe = bus.subscribe((e) => {
      if ((e.type === 'created' && !e.dispatched) || e.type === 'requeued') this.wakeups.notify(refOf(e.task));
    });
  }

  get leaseMs(): number {
    return this.opts.leaseMs;
  }

  async seedEstimates(): Promise<void> {
    for (const r of await this.store.recentRunTimes(50)) this.eta.seed(r, r.meanMs);
  }

  private publish(type: TaskEventType, task: TaskRecord): void {
    this.bus.publish({ type, task, at: Date.now() });
  }

  /** With `idempotency`, a retried request returns the first task (`replayed`) instead of a new one. */
  async create(input: CreateTaskInput, idempotency?: Idempotency): Promise<{ task: TaskRecord; replayed: boolean } & Estimate> {
    const now = Date.now();
    // A worker in this process waiting with a free slot gets the task in the create's own
    // transaction. Its lease found the queue empty for this model, so nothing older is skipped.
    const claim = idempotency ? null : this.wakeups.claim(input);
    if (claim) return this.createLeased(input, claim, now);
    // Fresh counts come back as a number: a create should not cost an extra turn to await them.
    const counted = this.pendingAhead(input, now);
    const ahead = typeof counted === 'number' ? counted : await counted;
    const record = this.newTask(input, now);
    let task: TaskRecord;
    if (idempotency) {
      const out = await this.store.createTaskOnce(record, idempotency.key, idempotency.fingerprint, idempotency.ttlMs);
      if (out.kind === 'conflict') {
        throw new AppError('IDEMPOTENCY_KEY_REUSED', `Idempotency-Key "${idempotency.key}" was used for a different request (task ${out.taskId})`, {
          details: { task_id: out.taskId },
        });
      }
      if (out.kind === 'replayed') return { task: out.task, replayed: true, ...(await this.estimate(out.task)) };
      task = out.task;
    } else {
      task = await this.store.createTask(record);
    }
    addPending(this.pendingCounts, input, 1);
    this.publish('created', task);
    return { task, replayed: false, queuePosition: ahead, estimatedCompletion: this.eta.estimate(input, ahead, now, null, this.runningOf(input)) };
  }

  private newTask(input: CreateTaskInput, now: number, lease?: NewLease): NewTask {
    return {
      id: newTaskId(now),
      taskType: input.taskType,
      modelName: input.modelName,
      inputData: input.inputData,
      parameters: input.parameters,
      priority: input.priority ?? 0,
      maxAttempts: input.maxAttempts ?? this.opts.defaultMaxAttempts,
      timeoutMs: input.timeoutSeconds !== undefined ? input.timeoutSeconds * 1000 : this.opts.defaultTimeoutMs,
      createdAt: now,
      webhookUrl: input.webhookUrl ?? null,
      webhookEvents: input.webhookUrl ? (input.webhookEvents ?? ['completed', 'failed', 'cancelled']) : null,
      lease,
    };
  }

  private async createLeased(input: CreateTaskInput, claim: Claim, now: number): Promise<{ task: TaskRecord; replayed: boolean } & Estimate> {
    const lease: NewLease = { workerId: claim.workerId, token: newLeaseToken(), expiresAt: now + this.opts.leaseMs };
    const record = this.newTask(input, now, lease);
    let task: TaskRecord;
    try {
      task = await this.store.createTask(record);
    } catch (err) {
      claim.abandoned();
      throw err;
    }
    // The create answers, and its event shows, the task as created: first in its queue. The
    // lease shows from the next read on, and as the `leased` event.
    const created = newTaskRecord(record);
    const at = Date.now();
    this.bus.publish({ type: 'created', task: created, at, dispatched: true });
    this.bus.publish({ type: 'leased', task, at });
    claim.delivered({ task, leaseToken: lease.token });
    return { task: created, replayed: false, queuePosition: 0, estimatedCompletion: this.eta.estimate(input, 0, now) };
  }

  /** Resolves with the task once it is final, or as it is when `ms` pass (or the signal aborts). */
  async waitUntilFinal(id: string, ms: number, signal?: AbortSignal): Promise<TaskRecord> {
    let wake!: () => void;
    const woken = new Promise<void>((r) => (wake = r));
    const off = this.bus.subscribe((e) => {
      if (e.task.id === id && isFinal(e.task.status)) wake();
    });
    const timer = setTimeout(wake, ms);
    signal?.addEventListener('abort', wake, { once: true });
    try {
      // Subscribed first, then looked: a change in between still wakes us.
      const now = await this.get(id);
      if (isFinal(now.status) || ms <= 0) return now;
      await woken;
      return await this.get(id);
    } finally {
      off();
      clearTimeout(timer);
      signal?.removeEventListener('abort', wake);
    }
  }

  /**
   * Reads the store's counters again when the last read is over 250 ms old: an estimate must
   * not cost a count on the create path. Undefined when nothing needs reading.
   */
  private refreshCounts(now: number): Promise<void> | undefined {
    if (now - this.pendingCountsAt <= 250) return undefined;
    return (this.pendingRefresh ??= this.store
      .counts()
      .then((rows) => {
        const pending: PendingCounts = new Map();
        const running: PendingCounts = new Map();
        for (const r of rows) {
          if (r.status === 'pending') addPending(pending, r, r.current);
          else if (r.status === 'running') addPending(running, r, r.current);
        }
        this.pendingCounts = pending;
        this.runningCounts = running;
        this.pendingCountsAt = Date.now();
      })
      .finally(() => {
        this.pendingRefresh = null;
      }));
  }

  /** Tasks of the same model already pending, from the counters (see refreshCounts). */
  private pendingAhead(model: ModelRef, now: number): number | Promise<number> {
    const refreshed = this.refreshCounts(now);
    if (refreshed) return refreshed.then(() => Math.max(0, pendingOf(this.pendingCounts, model)));
    return Math.max(0, pendingOf(this.pendingCounts, model));
  }

  /** Tasks of this model running now, from the same counters (as fresh as the last create or estimate made them). */
  private runningOf(model: ModelRef): number {
    return Math.max(0, pendingOf(this.runningCounts, model));
  }

  async get(id: string): Promise<TaskRecord> {
    const task = await this.store.getTask(id);
    if (!task) throw new AppError('TASK_NOT_FOUND', `Task ${id} not found`, { details: { task_id: id } });
    return task;
  }

  /** Exact position and estimate for a task that has not finished. */
  async estimate(task: TaskRecord): Promise<Estimate> {
    const now = Date.now();
    if (task.status === 'pending') {
      const model = refOf(task);
      const [ahead] = await Promise.all([this.store.queuePosition(task), this.refreshCounts(now)]);
      return { queuePosition: ahead, estimatedCompletion: this.eta.estimate(model, ahead, now, null, this.runningOf(model)) };
    }
    if (task.status === 'running') {
      return { queuePosition: null, estimatedCompletion: this.eta.estimate(refOf(task), 0, now, task.startedAt) };
    }
    return { queuePosition: null, estimatedCompletion: null };
  }

  list(query: ListQuery): Promise<ListResult> {
    return this.store.listTasks(query);
  }

  async cancel(id: string): Promise<TaskRecord> {
    const outcome: CancelOutcome = await this.store.cancelTask(id, Date.now());
    switch (outcome.kind) {
      case 'not_found':
        throw new AppError('TASK_NOT_FOUND', `Task ${id} not found`, { details: { task_id: id } });
      case 'not_cancellable':
        throw new AppError('TASK_NOT_CANCELLABLE', `Task ${id} is already ${outcome.task.status}`, {
          details: { task_id: id, status: outcome.task.status },
        });
      case 'already_cancelled':
        return outcome.task;
      case 'cancelled':
        this.publish('cancelled', outcome.task);
        return outcome.task;
    }
  }

  async lease(workerId: string, models: ModelRef[], limit: number): Promise<LeasedTask[]> {
    this.wakeups.leaseAsked(workerId, models);
    const leased = await this.store.leaseTasks({ workerId, models, limit, leaseMs: this.opts.leaseMs, now: Date.now() });
    this.wakeups.leaseAnswered(workerId, models, limit, leased.length);
    for (const l of leased) this.publish('leased', l.task);
    return leased;
  }

  /** Long-poll: returns as soon as a matching task is leased, or [] when the time is up. */
  async leaseWait(workerId: string, models: ModelRef[], limit: number, waitMs: number, signal?: AbortSignal): Promise<LeasedTask[]> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      // Register before looking, so a task created in between still wakes us.
      const waiter = this.wakeups.wait(models, deadline - Date.now(), signal, workerId);
      // Known empty: no need to ask until a wakeup says the store has some again.
      if (!this.wakeups.drained(workerId, models)) {
        let leased: LeasedTask[];
        try {
          leased = await this.lease(workerId, models, limit);
        } catch (err) {
          waiter.cancel();
          throw err;
        }
        if (leased.length > 0 || Date.now() >= deadline || signal?.aborted) {
          waiter.cancel();
          return leased;
        }
      }
      await waiter.promise;
      if (signal?.aborted) return [];
      if (this.wakeups.attached(workerId)) {
        // A whole wait without a wakeup: ask the store next time anyway, for tasks that came
        // in without an event (written by other means, or a lost notification).
        if (Date.now() >= deadline) this.wakeups.recheck(workerId);
        // It may have been handed tasks meanwhile: the worker counts its free slots again.
        return [];
      }
      if (Date.now() >= deadline) return this.lease(workerId, models, limit);
    }
  }

  /**
   * Lets creates hand tasks of these models to a worker in this process once its lease has
   * found the queue empty (see LeaseWakeups). Returns the undo.
   */
  attachWorker(workerId: string, models: ModelRef[], delivery: DirectDelivery): () => void {
    return this.wakeups.attach(workerId, models, delivery);
  }

  async heartbeat(id: string, leaseToken: string, progress?: number): Promise<LeaseOutcome> {
    const out = await this.store.heartbeat(id, leaseToken, this.opts.leaseMs, Date.now(), progress);
    if (out.kind === 'ok' && progress !== undefined) this.publish('progress', out.task);
    return out;
  }

  /** Streamed output and progress of a running task: logged (for SSE resume), then published. */
  async appendEvents(id: string, leaseToken: string, events: Array<{ progress?: number; text?: string }>): Promise<LeaseOutcome['kind']> {
    const out = await this.store.appendEvents(id, leaseToken, events, Date.now());
    if (out.kind === 'ok' && out.events.length) {
      const task = await this.store.getTask(id);
      if (task) this.bus.publish({ type: 'output', task, at: Date.now(), log: out.events });
    }
    return out.kind;
  }

  /** `leased`: the worker's copy of the task, which spares the store a read (TaskStore.completeTask). */
  async complete(id: string, leaseToken: string, result: Record<string, unknown>, leased?: TaskRecord): Promise<LeaseOutcome> {
    const out = await this.store.completeTask(id, leaseToken, result, Date.now(), leased);
    if (out.kind === 'ok') this.finished('completed', out.task);
    return out;
  }

  async fail(id: string, leaseToken: string, error: TaskError, retryable: boolean): Promise<LeaseOutcome> {
    const out = await this.store.failTask(id, leaseToken, { error, retryable, now: Date.now() });
    if (out.kind === 'ok') {
      if (out.task.status === 'pending') this.publish('requeued', out.task);
      else this.finished('failed', out.task);
    }
    return out;
  }

  async release(id: string, leaseToken: string): Promise<LeaseOutcome> {
    const out = await this.store.releaseTask(id, leaseToken, Date.now());
    if (out.kind === 'ok') this.publish('requeued', out.task);
    return out;
  }

  /** One pass of the lease reaper. */
  async reap(timeoutGraceMs: number): Promise<{ requeued: number; failed: number }> {
    const now = Date.now();
    const expired = await this.requeueExpired(now);
    const timedOut = await this.store.reapTimedOut(now, timeoutGraceMs, 500);
    for (const t of timedOut) this.finished('failed', t);
    return { requeued: expired.requeued, failed: expired.failed + timedOut.length };
  }

  /**
   * At most once a minute: deletes the finished tasks past the retention, the idempotency keys
   * that no longer replay, and the workers silent past theirs that hold no task (a crashed
   * worker never unregisters, and a restarted one usually has a new id). Returns how many of
   * each went.
   */
  async prune(now = Date.now()): Promise<{ tasks: number; keys: number; workers: number }> {
    const out = { tasks: 0, keys: 0, workers: 0 };
    if (now - this.prunedAt < 60_000) return out;
    this.prunedAt = now;
    const { taskRetentionMs = 0, idempotencyTtlMs = 0, workerRetentionMs = 24 * 3_600_000 } = this.opts;
    if (taskRetentionMs > 0) out.tasks = await inBatches((limit) => this.store.deleteFinished(now - taskRetentionMs, limit));
    if (idempotencyTtlMs > 0) out.keys = await inBatches((limit) => this.store.deleteExpiredKeys(now - idempotencyTtlMs, limit));
    out.workers = (await this.store.forgetWorkers(now - workerRetentionMs)).length;
    return out;
  }

  private async requeueExpired(now: number): Promise<{ requeued: number; failed: number }> {
    const expired = await this.store.reapExpiredLeases(now, REAP_BATCH);
    for (const t of expired.requeued) this.publish('requeued', t);
    for (const t of expired.failed) this.finished('failed', t);
    return { requeued: expired.requeued.length, failed: expired.failed.length };
  }

  /**
   * Requeues (or fails, once their attempts are spent) the tasks a worker id held before its
   * process restarted, instead of waiting for their leases to run out: every lease held under
   * the id except those on `keep` (what the process says it is running now).
   */
  async recoverLeasesOf(workerId: string, keep: string[] = []): Promise<{ requeued: number; failed: number }> {
    const total = { requeued: 0, failed: 0 };
    if ((await this.store.expireLeasesOf(workerId, Date.now(), keep)) === 0) return total;
    for (;;) {
      const pass = await this.requeueExpired(Date.now());
      total.requeued += pass.requeued;
      total.failed += pass.failed;
      if (pass.requeued + pass.failed < REAP_BATCH) return total;
    }
  }

  private finished(type: 'completed' | 'failed', task: TaskRecord): void {
    if (type === 'completed' && task.startedAt !== null && task.completedAt !== null) {
      this.eta.observe(refOf(task), task.completedAt - task.startedAt);
    }
    for (const fn of this.onFinished) fn(task);
    this.publish(type, task);
  }

  close(): void {
    this.workers.stop();
    this.unsubscribe();
  }
}
