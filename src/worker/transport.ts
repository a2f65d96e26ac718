import type { LeasedTask } from '../core/store.js';
import type { ModelRef, TaskError } from '../core/task.js';

/** What the server says about a lease the worker presented. */
export type LeaseState = 'ok' | 'cancelled' | 'stale';

export interface WorkerInfo {
  workerId: string;
  models: ModelRef[];
  concurrency: number;
  hardware?: Record<string, unknown>;
}

/**
 * How a worker talks to the Task Manager. Two implementations: in-process (embedded mode)
 * and HTTP (remote workers). The runtime does not know which it has.
 */
export interface WorkerTransport {
  register(info: WorkerInfo): Promise<void>;
  /** Long-poll: resolves with up to `limit` tasks, or [] after `waitMs`. */
  lease(models: ModelRef[], limit: number, waitMs: number, signal: AbortSignal): Promise<LeasedTask[]>;
  heartbeat(taskId: string, leaseToken: string, progress?: number): Promise<LeaseState>;
  complete(taskId: string, leaseToken: string, result: Record<string, unknown>): Promise<LeaseState>;
  fail(taskId: string, leaseToken: string, error: TaskError, retryable: boolean): Promise<LeaseState>;
  release(taskId: string, leaseToken: string): Promise<LeaseState>;
  /** Push notice of cancelled tasks, where the transport has one; heartbeats are the fallback. */
  onCancel(listener: (taskId: string) => void): () => void;
  unregister(): Promise<void>;
}
