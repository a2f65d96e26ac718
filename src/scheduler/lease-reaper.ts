import type { TaskQueue } from './task-queue.js';

export interface ReaperLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

/**
 * Periodically requeues tasks whose worker stopped heartbeating, fails hung ones, and deletes
 * what outlived its retention (finished tasks, idempotency keys, silent workers).
 */
export class LeaseReaper {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;

  constructor(
    private readonly queue: TaskQueue,
    private readonly opts: { intervalMs: number; timeoutGraceMs: number },
    private readonly log?: ReaperLogger,
  ) {}

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick(), this.opts.intervalMs);
    this.timer.unref();
  }

  tick(): Promise<void> {
    this.running ??= this.queue
      .reap(this.opts.timeoutGraceMs)
      .then(async (r) => {
        if (r.requeued || r.failed) this.log?.info(r, 'reaped expired leases');
        const pruned = await this.queue.prune();
        if (pruned.tasks || pruned.keys || pruned.workers) this.log?.info(pruned, 'deleted what outlived its retention');
      })
      .catch((err) => this.log?.warn({ err }, 'lease reaper pass failed'))
      .finally(() => {
        this.running = null;
      });
    return this.running;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
