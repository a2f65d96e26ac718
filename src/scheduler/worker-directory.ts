import type { ModelRef } from '../core/task.js';

export interface WorkerEntry {
  workerId: string;
  models: ModelRef[];
  concurrency: number;
  hardware?: Record<string, unknown>;
  registeredAt: number;
  lastSeenAt: number;
}

const key = (m: ModelRef): string => `${m.taskType}\u0000${m.modelName}`;

/** Workers known to this node and the worker slots serving each model. */
export class WorkerDirectory {
  private readonly workers = new Map<string, WorkerEntry>();

  register(entry: Omit<WorkerEntry, 'registeredAt' | 'lastSeenAt'>, now = Date.now()): void {
    this.workers.set(entry.workerId, { ...entry, registeredAt: now, lastSeenAt: now });
  }

  unregister(workerId: string): void {
    this.workers.delete(workerId);
  }

  touch(workerId: string, now = Date.now()): void {
    const w = this.workers.get(workerId);
    if (w) w.lastSeenAt = now;
  }

  /** Total concurrency of the workers serving a model. */
  slots(model: ModelRef): number {
    const k = key(model);
    let n = 0;
    for (const w of this.workers.values()) if (w.models.some((m) => key(m) === k)) n += w.concurrency;
    return n;
  }

  list(): WorkerEntry[] {
    return [...this.workers.values()];
  }
}
