import type { LeasedTask } from '../core/store.js';
import type { ModelRef } from '../core/task.js';

/** A worker in this process that takes tasks straight from creates. */
export interface DirectDelivery {
  /** Holds a slot for a create of this model about to lease to this worker; false when none is free. */
  reserve(model: ModelRef): boolean;
  /** The create committed: the task, leased to this worker, takes the slot. */
  deliver(leased: LeasedTask): void;
  /** The create failed: the slot is free again. */
  unreserve(model: ModelRef): void;
  /** Whether a task of this model could start now (a free slot, room on its engine); holds nothing. */
  accepts(model: ModelRef): boolean;
}

interface Waiter {
  models: Set<string>;
  wake: () => void;
  /** The worker whose lease waits; where it is one in this process, notify checks its room. */
  workerId?: string;
}

interface Direct {
  workerId: string;
  models: Set<string>;
  delivery: DirectDelivery;
  /**
   * Models for which the worker's last lease got fewer tasks than it asked for, and for
   * which nothing has become pending since. A worker whose engine is busy leases for its
   * other models only, so this is kept per model.
   */
  drained: Set<string>;
  /** A matching task became pending while a lease was being answered, perhaps too late for it to see. */
  dirty: boolean;
}

/** A slot of a drained worker, held by a create until its commit. */
export interface Claim {
  workerId: string;
  delivered(leased: LeasedTask): void;
  abandoned(): void;
}

const key = (m: ModelRef): string => `${m.taskType}\u0000${m.modelName}`;

/**
 * Long-polling leases wait here and are woken when a matching task becomes pending.
 *
 * A worker in this process can also be handed new tasks: once its lease found the queue
 * empty for a model, a create of that model inserts the task already leased to it (one
 * transaction instead of two, and no lease round trip). Nothing older is skipped: every task
 * that becomes pending otherwise (a create it had no slot for, a requeue, another node's
 * create) clears the model's drained mark, and the worker asks the store again.
 */
export class LeaseWakeups {
  private readonly waiters = new Set<Waiter>();
  private readonly direct = new Map<string, Direct>();

  /** @param ordered the store answers writes in commit order (see TaskStore.answersInCommitOrder). */
  constructor(private readonly ordered = false) {}

  /** Resolves when a matching task may be available, the time is up, or the signal aborts. */
  wait(models: ModelRef[], ms: number, signal?: AbortSignal, workerId?: string): { promise: Promise<void>; cancel: () => void } {
    let waiter!: Waiter;
    let timer: NodeJS.Timeout | undefined;
    const onAbort = () => waiter.wake();
    const promise = new Promise<void>((resolve) => {
      waiter = {
        workerId,
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

  /**
   * Wakes the longest-waiting lease for this model that can take it (one new task needs one
   * worker) and un-drains its workers. A worker in this process whose slots or engine filled
   * up (by handoffs) since its poll began would not lease the task: it is woken (to look
   * again once it has room) and so is the next waiting lease, which may be able to.
   */
  notify(model: ModelRef): void {
    const k = key(model);
    for (const d of this.direct.values()) {
      // In an ordered store, a task announced before the lease's answer was seen by it.
      if (d.models.has(k)) d.drained.delete(k), (d.dirty = !this.ordered);
    }
    for (const w of this.waiters) {
      if (!w.models.has(k)) continue;
      // Woken all the same, so that it looks again once it has room.
      w.wake();
      if (w.workerId === undefined || this.direct.get(w.workerId)?.delivery.accepts(model) !== false) return;
    }
  }

  /** Lets creates hand tasks to this worker while it is drained; returns the undo. */
  attach(workerId: string, models: ModelRef[], delivery: DirectDelivery): () => void {
    const d: Direct = { workerId, models: new Set(models.map(key)), delivery, drained: new Set(), dirty: false };
    this.direct.set(workerId, d);
    return () => {
      if (this.direct.get(workerId) === d) this.direct.delete(workerId);
    };
  }

  attached(workerId: string): boolean {
    return this.direct.has(workerId);
  }

  /** True when the store is known to hold nothing of these models that this worker could lease. */
  drained(workerId: string, models: ModelRef[]): boolean {
    const d = this.direct.get(workerId);
    return d !== undefined && models.length > 0 && models.every((m) => d.drained.has(key(m)));
  }

  /** Makes the worker ask the store before it takes another handoff. */
  recheck(workerId: string): void {
    this.direct.get(workerId)?.drained.clear();
  }

  /** Call before a lease query for these models; pass its answer to `leaseAnswered`. */
  leaseAsked(workerId: string, models: ModelRef[]): void {
    const d = this.direct.get(workerId);
    if (!d) return;
    for (const m of models) d.drained.delete(key(m));
    d.dirty = false;
  }

  leaseAnswered(workerId: string, models: ModelRef[], asked: number, got: number): void {
    const d = this.direct.get(workerId);
    if (!d || got >= asked || d.dirty) return;
    for (const m of models) {
      const k = key(m);
      if (d.models.has(k)) d.drained.add(k);
    }
  }

  /** Holds a slot of a drained worker serving this model, if one has a slot free. */
  claim(model: ModelRef): Claim | null {
    if (this.direct.size === 0) return null;
    const k = key(model);
    for (const d of this.direct.values()) {
      if (!d.drained.has(k) || !d.delivery.reserve(model)) continue;
      const delivery = d.delivery;
      return { workerId: d.workerId, delivered: (leased) => delivery.deliver(leased), abandoned: () => delivery.unreserve(model) };
    }
    return null;
  }

  get size(): number {
    return this.waiters.size;
  }
}
