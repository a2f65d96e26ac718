import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { EngineError, RetryableEngineError, type Engine, type EngineContext } from '../core/engine.js';
import type { LeasedTask } from '../core/store.js';
import type { ModelRef, TaskError } from '../core/task.js';
import type { WorkerTransport } from './transport.js';

export interface ServedModel extends ModelRef {
  engine: Engine;
  modelOptions: Record<string, unknown>;
}

export interface WorkerLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
  child?(bindings: object): WorkerLogger;
}

export interface WorkerOptions {
  id?: string;
  transport: WorkerTransport;
  models: ServedModel[];
  concurrency: number;
  /** How often a running task's lease is extended (and cancels are learnt on HTTP). */
  heartbeatMs: number;
  /** How long one lease long-poll may wait. */
  leaseWaitMs?: number;
  /** How often streamed output and progress are reported (default 100 ms). */
  streamIntervalMs?: number;
  hardware?: Record<string, unknown>;
  log?: WorkerLogger;
}

/** Why a running task's engine was told to stop. */
type StopReason = 'cancelled' | 'timeout' | 'lost' | 'shutdown';

interface Running {
  leased: LeasedTask;
  stop: StopSignal;
  progress: number | undefined;
  done: Promise<void>;
  /** Made on the first output or progress. */
  stream: OutputStream | null;
  /** Holds one of the worker's slots until its engine has returned (reporting needs none). */
  slot: boolean;
  /** The engine it runs on, when the worker counts engine room (`capped`). */
  engine: Engine | undefined;
}

/**
 * A running task's stop signal. The AbortController behind it is made only when the engine
 * reads the signal or the task is stopped: making one per task costs more than a no-op
 * engine's whole run.
 */
class StopSignal {
  private controller: AbortController | null = null;
  reason: StopReason | null = null;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.reason) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  /** False when already stopped. */
  stop(reason: StopReason): boolean {
    if (this.reason) return false;
    this.reason = reason;
    this.controller?.abort(reason);
    return true;
  }
}

/**
 * What a running engine reports through. A class, so that the lazy `signal` getter lives on
 * the prototype: an object literal with a getter is built by a runtime call on every task.
 * The report functions are own properties, so an engine may destructure them.
 */
class RunContext implements EngineContext {
  constructor(
    private readonly stop: StopSignal,
    readonly reportProgress: (progress: number) => void,
    readonly reportOutput: (text: string) => void,
  ) {}

  get signal(): AbortSignal {
    return this.stop.signal;
  }
}

/** Batches a task's streamed output and progress into one report per interval, in order. */
class OutputStream {
  private buffer: Array<{ progress?: number; text?: string }> = [];
  private timer: NodeJS.Timeout | null = null;
  private chain: Promise<void> = Promise.resolve();
  private lastProgress = -1;

  constructor(
    private readonly send: (events: Array<{ progress?: number; text?: string }>) => Promise<unknown>,
    private readonly intervalMs: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  text(t: string): void {
    if (!t) return;
    this.buffer.push({ text: t });
    this.schedule();
  }

  progress(p: number): void {
    // Progress moves in steps of at least 1% so a per-token call does not flood the log.
    if (Math.abs(p - this.lastProgress) < 0.01 && p < 1) return;
    this.lastProgress = p;
    const last = this.buffer.at(-1);
    if (last && last.progress === undefined && last.text !== undefined) last.progress = p;
    else this.buffer.push({ progress: p });
    this.schedule();
  }

  private schedule(): void {
    this.timer ??= setTimeout(() => void this.flush(), this.intervalMs);
  }

  /** Sends what is buffered; resolves when everything sent so far has been delivered. */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const batch = this.buffer;
    this.buffer = [];
    if (batch.length) this.chain = this.chain.then(() => this.send(batch)).then(() => undefined, this.onError);
    return this.chain;
  }

  discard(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.buffer = [];
  }
}

const noopLog: WorkerLogger = { info() {}, warn() {}, error() {} };
const modelKey = (m: ModelRef): string => `${m.taskType}\u0000${m.modelName}`;

export const defaultWorkerId = (): string => `worker_${hostname()}_${randomBytes(3).toString('hex')}`;

/**
 * The worker runtime: leases tasks for the models it serves, runs each on its engine with an
 * AbortSignal, heartbeats, and reports the outcome under the lease token.
 */
export class Worker {
  readonly id: string;
  private readonly transport: WorkerTransport;
  private readonly served = new Map<string, ServedModel>();
  private readonly running = new Map<string, Running>();
  private readonly stopController = new AbortController();
  private readonly log: WorkerLogger;
  private loop: Promise<void> | null = null;
  private slotFreed: (() => void) | null = null;
  private offCancel: (() => void) | null = null;
  /** Slots held for tasks being created already leased to this worker. */
  private reserved = 0;
  /** Tasks whose engine has not returned yet. */
  private busy = 0;
  private allDelivered: (() => void) | null = null;
  /** Tasks handed over while stopping, on their way back to the queue. */
  private readonly handingBack = new Set<Promise<void>>();
  /** One timer heartbeats every running task: their beats share a request (HTTP) or a commit. */
  private beatTimer: NodeJS.Timeout | null = null;
  /** Runs started or reserved on each engine that has a capacity, until the engine returns (counted when `capped`). */
  private readonly engineUse = new Map<Engine, number>();
  /** Some engine has room for fewer runs than the worker's concurrency: leases are scoped to engines with room. */
  private readonly capped: boolean;
  private readonly allModels: ModelRef[];

  constructor(private readonly opts: WorkerOptions) {
    this.id = opts.id ?? defaultWorkerId();
    this.transport = opts.transport;
    for (const m of opts.models) this.served.set(modelKey(m), m);
    this.log = opts.log ?? noopLog;
    this.allModels = opts.models.map(({ taskType, modelName }) => ({ taskType, modelName }));
    this.capped = opts.models.some((m) => m.engine.capacity !== undefined && m.engine.capacity < opts.concurrency);
  }

  get activeTasks(): string[] {
    return [...this.running.keys()];
  }

  async start(): Promise<void> {
    if (this.loop) return;
    await this.transport.register({
      workerId: this.id,
      // A model whose engine takes fewer runs than the worker's slots says so (estimates count it).
      models: this.opts.models.map(({ taskType, modelName, engine }) =>
        engine.capacity !== undefined && engine.capacity < this.opts.concurrency ? { taskType, modelName, concurrency: engine.capacity } : { taskType, modelName },
      ),
      concurrency: this.opts.concurrency,
      hardware: this.opts.hardware,
    });
    this.offCancel = this.transport.onCancel((taskId) => this.stopTask(taskId, 'cancelled'));
    this.beatTimer = setInterval(() => this.heartbeatAll(), this.opts.heartbeatMs);
    this.beatTimer.unref();
    this.transport.acceptHandoffs?.({
      reserve: (model) => {
        if (this.stopController.signal.aborted || this.free() <= 0) return false;
        const engine = this.capped ? this.engineOf(model) : undefined;
        if (this.room(engine) <= 0) return false;
        this.reserved++;
        this.use(engine, 1);
        return true;
      },
      deliver: (leased) => {
        this.reserved--;
        this.takeHandoff(leased);
        if (this.reserved === 0) this.allDelivered?.();
      },
      accepts: (model) => !this.stopController.signal.aborted && this.free() > 0 && this.room(this.capped ? this.engineOf(model) : undefined) > 0,
      unreserve: (model) => {
        this.reserved--;
        if (this.capped) this.use(this.engineOf(model), -1);
        this.slotFreed?.();
        this.slotFreed = null;
        if (this.reserved === 0) this.allDelivered?.();
      },
    });
    this.loop = this.leaseLoop();
  }

  private async leaseLoop(): Promise<void> {
    const signal = this.stopController.signal;
    let backoffMs = 100;
    while (!signal.aborted) {
      const { models, limit: free } = this.leaseScope();
      if (free <= 0 && !this.transport.pollsForCancels) {
        await new Promise<void>((resolve) => (this.slotFreed = resolve));
        // Let the other tasks that finished in the same commit free their slots too, so one
        // lease call fills them all.
        await new Promise((r) => setImmediate(r));
        continue;
      }
      // When full, the poll only listens for cancels; a freed slot ends it so we ask for work
      // again. So does an engine's, when the poll leaves out that engine's models: such a poll
      // may be leasing tasks, so it is woken rather than aborted where aborting could lose them.
      const poll = new AbortController();
      const stopPoll = () => poll.abort();
      signal.addEventListener('abort', stopPoll, { once: true });
      let onFree: (() => void) | null = null;
      if (free <= 0) onFree = stopPoll;
      else if (models.length < this.allModels.length) onFree = this.transport.wake ? () => this.transport.wake!() : stopPoll;
      if (onFree) this.slotFreed = onFree;
      try {
        const leased = await this.transport.lease(models, Math.max(0, free), this.opts.leaseWaitMs ?? 30_000, poll.signal);
        backoffMs = 100;
        for (const l of leased) {
          // Leased while stopping: give it straight back rather than start it.
          if (signal.aborted) await this.report(() => this.transport.release(l.task.id, l.leaseToken));
          else this.runTask(l);
        }
      } catch (err) {
        if (signal.aborted) break;
        this.log.warn({ err, backoffMs }, 'lease failed; retrying');
        await sleep(backoffMs, signal);
        backoffMs = Math.min(backoffMs * 2, 5_000);
      } finally {
        signal.removeEventListener('abort', stopPoll);
        if (onFree && this.slotFreed === onFree) this.slotFreed = null;
      }
    }
  }

  private free(): number {
    return this.opts.concurrency - this.busy - this.reserved;
  }

  private engineOf(m: ModelRef): Engine | undefined {
    return this.served.get(modelKey(m))?.engine;
  }

  /** How many more runs an engine takes now (Infinity without a capacity). */
  private room(engine: Engine | undefined): number {
    if (engine?.capacity === undefined) return Infinity;
    return engine.capacity - (this.engineUse.get(engine) ?? 0);
  }

  private use(engine: Engine | undefined, delta: number): void {
    if (engine?.capacity !== undefined) this.engineUse.set(engine, (this.engineUse.get(engine) ?? 0) + delta);
  }

  /**
   * What the next lease asks for: the models whose engines have room, and no more tasks than
   * the fullest of those engines can start (a lease's limit spans its models).
   */
  private leaseScope(): { models: ModelRef[]; limit: number } {
    const free = this.free();
    if (!this.capped) return { models: this.allModels, limit: free };
    const models: ModelRef[] = [];
    let limit = free;
    for (const m of this.opts.models) {
      const room = this.room(m.engine);
      if (room <= 0) continue;
      models.push({ taskType: m.taskType, modelName: m.modelName });
      limit = Math.min(limit, room);
    }
    return models.length ? { models, limit } : { models: this.allModels, limit: 0 };
  }

  /** A handed-over task: its slot and engine room were reserved for it. */
  private takeHandoff(leased: LeasedTask): void {
    if (!this.stopController.signal.aborted) return this.runTask(leased, true);
    if (this.capped) this.use(this.engineOf(leased.task), -1);
    // Handed over while stopping: give it back, as a lease taken while stopping is.
    const back = this.report(() => this.transport.release(leased.task.id, leased.leaseToken)).finally(() => this.handingBack.delete(back));
    this.handingBack.add(back);
  }

  private runTask(leased: LeasedTask, reserved = false): void {
    const engine = this.capped ? this.engineOf(leased.task) : undefined;
    const entry: Running = { leased, stop: new StopSignal(), progress: undefined, done: Promise.resolve(), stream: null, slot: true, engine };
    this.running.set(leased.task.id, entry);
    this.busy++;
    if (!reserved) this.use(engine, 1);
    entry.done = this.execute(entry).finally(() => {
      this.running.delete(leased.task.id);
      this.freeSlot(entry);
    });
  }

  private streamOf(entry: Running): OutputStream {
    const { task, leaseToken } = entry.leased;
    return (entry.stream ??= new OutputStream(
      (events) => this.transport.appendEvents(task.id, leaseToken, events),
      this.opts.streamIntervalMs ?? 100,
      (err) => this.log.warn({ err, task_id: task.id }, 'could not report output'),
    ));
  }

  /** Extends the lease of every running task and learns which to stop. */
  private heartbeatAll(): void {
    for (const entry of this.running.values()) {
      const { task, leaseToken } = entry.leased;
      this.transport
        .heartbeat(task.id, leaseToken, entry.progress)
        .then((state) => {
          if (state === 'cancelled') this.stopTask(task.id, 'cancelled');
          else if (state === 'stale') this.stopTask(task.id, 'lost');
        })
        .catch((err) => this.log.warn({ err, task_id: task.id }, 'heartbeat failed'));
    }
  }

  /** The engine is done with the task: the next one can start while this one is reported. */
  private freeSlot(entry: Running): void {
    if (!entry.slot) return;
    entry.slot = false;
    this.busy--;
    this.use(entry.engine, -1);
    this.slotFreed?.();
    this.slotFreed = null;
  }

  private async execute(entry: Running): Promise<void> {
    const { task, leaseToken } = entry.leased;
    const { stop } = entry;
    // A scoped logger only when something is logged: the happy path stays allocation-light.
    let scoped: WorkerLogger | null = null;
    const scope = () => (scoped ??= this.log.child?.({ task_id: task.id, worker_id: this.id }) ?? this.log);
    const log: WorkerLogger = {
      info: (o, m) => scope().info(o, m),
      warn: (o, m) => scope().warn(o, m),
      error: (o, m) => scope().error(o, m),
    };
    const served = this.served.get(modelKey(task));
    if (!served) {
      await this.report(() =>
        this.transport.fail(task.id, leaseToken, { code: 'MODEL_NOT_SERVED', message: `Worker ${this.id} does not serve ${task.modelName}` }, true),
      );
      return;
    }
    const elapsed = task.startedAt !== null ? Date.now() - task.startedAt : 0;
    const timeout = setTimeout(() => this.stopTask(task.id, 'timeout'), Math.max(0, task.timeoutMs - elapsed));
    try {
      const { result, artifacts = [] } = await served.engine.run(
        {
          id: task.id,
          taskType: task.taskType,
          modelName: task.modelName,
          inputData: task.inputData,
          parameters: task.parameters,
          modelOptions: served.modelOptions,
        },
        new RunContext(
          stop,
          (p) => {
            if (!Number.isFinite(p)) return;
            entry.progress = Math.min(1, Math.max(0, p));
            this.streamOf(entry).progress(entry.progress);
          },
          (text) => this.streamOf(entry).text(String(text)),
        ),
      );
      this.freeSlot(entry);
      if (stop.reason) {
        await this.afterStop(entry, stop.reason, log);
      } else {
        // Streamed output is logged before the final status, so subscribers see it in order.
        await entry.stream?.flush();
        const refs = [];
        for (const a of artifacts) refs.push(await this.transport.putArtifact(task.id, leaseToken, a));
        const final = refs.length ? { ...result, artifacts: refs } : result;
        await this.report(() => this.transport.complete(task.id, leaseToken, final, task), log);
      }
    } catch (err) {
      this.freeSlot(entry);
      if (stop.reason) {
        await this.afterStop(entry, stop.reason, log);
      } else {
        const { error, retryable } = describeFailure(err);
        log.warn({ err, code: error.code }, 'engine failed');
        await entry.stream?.flush();
        await this.report(() => this.transport.fail(task.id, leaseToken, error, retryable), log);
      }
    } finally {
      entry.stream?.discard();
      clearTimeout(timeout);
    }
  }

  private async afterStop(entry: Running, reason: StopReason, log: WorkerLogger): Promise<void> {
    const { task, leaseToken } = entry.leased;
    if (reason === 'timeout') {
      const error = { code: 'TIMEOUT', message: `Task exceeded its timeout of ${task.timeoutMs / 1000} s` };
      await this.report(() => this.transport.fail(task.id, leaseToken, error, false), log);
    } else if (reason === 'shutdown') {
      await this.report(() => this.transport.release(task.id, leaseToken), log);
    } else {
      log.info({ reason }, 'task stopped');
    }
  }

  private async report(send: () => Promise<unknown>, log: WorkerLogger = this.log): Promise<void> {
    // A report that cannot be delivered is not lost work: the lease expires and the task is retried.
    try {
      await send();
    } catch (err) {
      log.error({ err }, 'could not report task outcome');
    }
  }

  /** Aborts a running task's engine; the engine's promise settles soon after. */
  stopTask(taskId: string, reason: StopReason): boolean {
    const entry = this.running.get(taskId);
    return entry ? entry.stop.stop(reason) : false;
  }

  /**
   * Stops leasing, lets running tasks finish for up to `graceMs`, then stops the rest and
   * gives them back to the queue.
   */
  async stop(graceMs = 0): Promise<void> {
    this.stopController.abort();
    this.slotFreed?.();
    await this.loop;
    // Creates already leasing to this worker commit first; their tasks go back to the queue.
    while (this.reserved > 0) await new Promise<void>((r) => (this.allDelivered = r));
    await Promise.all(this.handingBack);
    const all = [...this.running.values()].map((r) => r.done);
    if (all.length) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(all), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
      for (const id of this.running.keys()) this.stopTask(id, 'shutdown');
      await Promise.all([...this.running.values()].map((r) => r.done));
    }
    this.offCancel?.();
    if (this.beatTimer) clearInterval(this.beatTimer);
    await this.transport.unregister().catch(() => {});
  }
}

function describeFailure(err: unknown): { error: TaskError; retryable: boolean } {
  if (err instanceof RetryableEngineError) return { error: { code: err.code, message: err.message }, retryable: true };
  if (err instanceof EngineError) return { error: { code: err.code, message: err.message }, retryable: false };
  const message = err instanceof Error ? err.message : String(err);
  return { error: { code: 'ENGINE_ERROR', message: message.slice(0, 2000) }, retryable: false };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
