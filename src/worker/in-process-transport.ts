import type { ModelRef, TaskError } from '../core/task.js';
import type { LeaseOutcome } from '../core/store.js';
import type { TaskQueue } from '../scheduler/task-queue.js';
import type { LeaseState, WorkerInfo, WorkerTransport } from './transport.js';

const state = (o: LeaseOutcome): LeaseState => o.kind;

/** Embedded mode: the worker calls the queue directly; cancels arrive as events at once. */
export class InProcessTransport implements WorkerTransport {
  private info: WorkerInfo | null = null;

  constructor(private readonly queue: TaskQueue) {}

  async register(info: WorkerInfo): Promise<void> {
    this.info = info;
    this.queue.workers.register(info);
  }

  async unregister(): Promise<void> {
    if (!this.info) return;
    this.queue.workers.unregister(this.info.workerId);
    this.info = null;
  }

  private get workerId(): string {
    if (!this.info) throw new Error('worker is not registered');
    return this.info.workerId;
  }

  lease(models: ModelRef[], limit: number, waitMs: number, signal: AbortSignal) {
    return this.queue.leaseWait(this.workerId, models, limit, waitMs, signal);
  }

  async heartbeat(taskId: string, leaseToken: string, progress?: number): Promise<LeaseState> {
    return state(await this.queue.heartbeat(taskId, leaseToken, progress));
  }

  async complete(taskId: string, leaseToken: string, result: Record<string, unknown>): Promise<LeaseState> {
    return state(await this.queue.complete(taskId, leaseToken, result));
  }

  async fail(taskId: string, leaseToken: string, error: TaskError, retryable: boolean): Promise<LeaseState> {
    return state(await this.queue.fail(taskId, leaseToken, error, retryable));
  }

  async release(taskId: string, leaseToken: string): Promise<LeaseState> {
    return state(await this.queue.release(taskId, leaseToken));
  }

  onCancel(listener: (taskId: string) => void): () => void {
    return this.queue.bus.subscribe((e) => {
      if (e.type === 'cancelled' && this.info && e.task.workerId === this.info.workerId) listener(e.task.id);
    });
  }
}
