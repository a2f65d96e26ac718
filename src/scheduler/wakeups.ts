import type { ModelRef } from '../core/task.js';

interface Waiter {
  models: Set<string>;
  wake: () => void;
}

const key = (m: ModelRef): string => `${m.taskType}\u0000${m.modelName}`;

/** Long-polling leases wait here and are woken when a matching task becomes pending. */
export class LeaseWakeups {
  private readonly waiters = new Set<Waiter>();

  /** Resolves when a matching task may be available, the time is up, or the signal aborts. */
  wait(models: ModelRef[], ms: number, signal?: AbortSignal): { promise: Promise<void>; cancel: () => void } {
    let waiter!: Waiter;
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => waiter.wake();
    const promise = new Promise<void>((resolve) => {
      waiter = {
        models: new Set(models.map(key)),
        wake: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          this.waiters.delete(waiter);
          resolve();
        },
      };
    });
    this.waiters.add(waiter);
    timer = setTimeout(waiter.wake, Math.max(0, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
    if (signal?.aborted) waiter.wake();
    return { promise, cancel: waiter.wake };
  }

  /** Wakes the longest-waiting lease for this model: one new task needs one worker. */
  notify(model: ModelRef): void {
    const k = key(model);
    for (const w of this.waiters) {
      if (w.models.has(k)) {
        w.wake();
        return;
      }
    }
  }

  get size(): number {
    return this.waiters.size;
  }
}
