import type { EngineArtifact } from '../core/engine.js';
import type { LeasedTask, RegisteredModel } from '../core/store.js';
import type { ModelRef, TaskError, TaskRecord } from '../core/task.js';
import type { DirectDelivery } from '../scheduler/wakeups.js';

/** What the server says about a lease the worker presented. */
export type LeaseState = 'ok' | 'cancelled' | 'stale';

export interface ArtifactRef {
  name: string;
  url: string;
  content_type: string;
  size: number;
}

export interface WorkerInfo {
  workerId: string;
  models: RegisteredModel[];
  concurrency: number;
  hardware?: Record<string, unknown>;
}

/**
 * How a worker talks to the Task Manager. Two implementations: in-process (embedded mode)
 * and HTTP (remote workers). The runtime does not know which it has.
 */
export interface WorkerTransport {
  /** True where cancels arrive as answers to a lease poll, so one poll must stay open even when every slot is busy. */
  readonly pollsForCancels?: boolean;
  register(info: WorkerInfo): Promise<void>;
  /** Long-poll: resolves with up to `limit` tasks, or [] after `waitMs`. */
  lease(models: ModelRef[], limit: number, waitMs: number, signal: AbortSignal): Promise<LeasedTask[]>;
  /**
   * Ends the lease poll in flight early without losing its answer: it resolves with whatever
   * it leased. Where a transport has none, aborting a poll's signal loses nothing (in process);
   * over HTTP an aborted request can drop an answer already on its way, tasks and all.
   */
  wake?(): void;
  heartbeat(taskId: string, leaseToken: string, progress?: number): Promise<LeaseState>;
  /** `leased`: the task as leased, for a transport that can pass it on (in-process). */
  complete(taskId: string, leaseToken: string, result: Record<string, unknown>, leased?: TaskRecord): Promise<LeaseState>;
  fail(taskId: string, leaseToken: string, error: TaskError, retryable: boolean): Promise<LeaseState>;
  release(taskId: string, leaseToken: string): Promise<LeaseState>;
  /** Streams output and progress of a running task (logged and pushed to subscribers). */
  appendEvents(taskId: string, leaseToken: string, events: Array<{ progress?: number; text?: string }>): Promise<LeaseState>;
  /** Stores a binary output under the lease; returns where clients fetch it. */
  putArtifact(taskId: string, leaseToken: string, artifact: EngineArtifact): Promise<ArtifactRef>;
  /**
   * Where the queue is in this process: once the worker has drained the queue, new tasks
   * come straight to it, created already leased to it, in the slots it reserves.
   */
  acceptHandoffs?(delivery: DirectDelivery): void;
  /** Push notice of cancelled tasks, where the transport has one; heartbeats are the fallback. */
  onCancel(listener: (taskId: string) => void): () => void;
  unregister(): Promise<void>;
}
