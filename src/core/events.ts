import { EventEmitter } from 'node:events';
import type { TaskLogEvent } from './store.js';
import type { TaskRecord } from './task.js';

export type TaskEventType = 'created' | 'leased' | 'progress' | 'output' | 'completed' | 'failed' | 'cancelled' | 'requeued';

export interface TaskEvent {
  type: TaskEventType;
  task: TaskRecord;
  at: number;
  /** For `output`: the log entries just appended (streamed text and progress). */
  log?: TaskLogEvent[];
  /** For `created`: the task went straight to a waiting worker (a `leased` event follows); no lease needs waking. */
  dispatched?: true;
}

/** Fans task events out; the PostgreSQL build carries them across nodes. */
export interface EventBus {
  publish(event: TaskEvent): void;
  subscribe(listener: (event: TaskEvent) => void): () => void;
  /**
   * Tells the other nodes (not this one) that a worker asked to be woken: its lease poll may
   * be waiting on one of them, where the request to wake it did not land.
   */
  wakeWorker(workerId: string): void;
  /** Wakes that other nodes sent. */
  onWorkerWake(listener: (workerId: string) => void): () => void;
  close(): Promise<void>;
}

export class LocalEventBus implements EventBus {
  private readonly emitter = new EventEmitter();

  constructor() {
    this.emitter.setMaxListeners(0);
  }

  publish(event: TaskEvent): void {
    this.emitter.emit('event', event);
  }

  subscribe(listener: (event: TaskEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }

  /** One node: there are no others to tell. */
  wakeWorker(): void {}

  onWorkerWake(): () => void {
    return () => {};
  }

  async close(): Promise<void> {
    this.emitter.removeAllListeners();
  }
}
