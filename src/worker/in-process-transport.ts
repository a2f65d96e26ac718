import type { ModelRef, TaskError, TaskRecord } from '../core/task.js';
import type { LeaseOutcome } from '../core/store.js';
import type { TaskQueue } from '../scheduler/task-queue.js';
import type { DirectDelivery } from '../scheduler/wakeups.js';
import type { EngineArtifact } from '../core/engine.js';
import type { ArtifactRef, LeaseState, WorkerInfo, WorkerTransport } from './transport.js';

export const artifactUrl = (taskId: string, name: string): string => `/tasks/${taskId}/artifacts/${encodeURIComponent(name)}`;

const state = (o: LeaseOutcome): LeaseState => o.kind;

/** Embedded mode: the worker calls the queue directly; cancels arrive as events at once. */
export class InProcessTransport implements WorkerTransport {
  private info: WorkerInfo | null = null;
  private detach: (() => void) | null = null;

  constructor(private readonly queue: TaskQueue) {}

  async register(info: WorkerInfo): Promise<void> {
    this.info = info;
    await this.queue.workers.register({ id: info.workerId, models: info.models, concurrency: info.concurrency, hardware: info.hardware ?? {} });
  }

  async unregister(): Promise<void> {
    this.detach?.();
    this.detach = null;
    if (!this.info) return;
    await this.queue.workers.unregister(this.info.workerId);
    this.info = null;
  }

  private get workerId(): string {
    if (!this.info) throw new Error('worker is not registered');
    return this.info.workerId;
  }

  async lease(models: ModelRef[], limit: number, waitMs: number, signal: AbortSignal) {
    await this.queue.workers.touch(this.workerId);
    return this.queue.leaseWait(this.workerId, models, limit, waitMs, signal);
  }

  acceptHandoffs(delivery: DirectDelivery): void {
    if (!this.info) throw new Error('worker is not registered');
    this.detach?.();
    this.detach = this.queue.attachWorker(this.info.workerId, this.info.models, delivery);
  }

  async heartbeat(taskId: string, leaseToken: string, progress?: number): Promise<LeaseState> {
    await this.queue.workers.touch(this.workerId);
    return state(await this.queue.heartbeat(taskId, leaseToken, progress));
  }

  async complete(taskId: string, leaseToken: string, result: Record<string, unknown>, leased?: TaskRecord): Promise<LeaseState> {
    return state(await this.queue.complete(taskId, leaseToken, result, leased));
  }

  async fail(taskId: string, leaseToken: string, error: TaskError, retryable: boolean): Promise<LeaseState> {
    return state(await this.queue.fail(taskId, leaseToken, error, retryable));
  }

  async release(taskId: string, leaseToken: string): Promise<LeaseState> {
    return state(await this.queue.release(taskId, leaseToken));
  }

  appendEvents(taskId: string, leaseToken: string, events: Array<{ progress?: number; text?: string }>): Promise<LeaseState> {
    return this.queue.appendEvents(taskId, leaseToken, events);
  }

  async putArtifact(taskId: string, leaseToken: string, artifact: EngineArtifact): Promise<ArtifactRef> {
    const task = await this.queue.store.getTask(taskId);
    if (!task || task.status !== 'running' || task.leaseToken !== leaseToken) throw new Error(`lease on ${taskId} is no longer held`);
    const meta = await this.queue.store.putArtifact({ taskId, name: artifact.name, contentType: artifact.contentType, data: artifact.data }, Date.now());
    return { name: meta.name, url: artifactUrl(taskId, meta.name), content_type: meta.contentType, size: meta.size };
  }

  onCancel(listener: (taskId: string) => void): () => void {
    return this.queue.bus.subscribe((e) => {
      if (e.type === 'cancelled' && this.info && e.task.workerId === this.info.workerId) listener(e.task.id);
    });
  }
}
