import type { Engine, EngineContext, EngineResult, EngineTask } from '../../src/core/engine.js';
import { TASK_TYPES, type TaskType } from '../../src/core/task.js';

interface Pending {
  task: EngineTask;
  ctx: EngineContext;
  resolve: (r: EngineResult) => void;
  reject: (e: unknown) => void;
  abortedAt: number | null;
}

/**
 * A test engine whose runs stay open until the test finishes them, so tests can observe a
 * task mid-run, cancel it, or let its lease expire. It honours the abort signal like a
 * real engine: an aborted run rejects at once.
 */
export class GateEngine implements Engine {
  readonly name = 'gate';
  readonly taskTypes: readonly TaskType[] = TASK_TYPES;
  readonly runs: Pending[] = [];
  readonly aborted: Array<{ taskId: string; reason: unknown; at: number }> = [];
  private waiters: Array<() => void> = [];
  /** When set, runs finish at once with this result instead of waiting. */
  autoResult: ((task: EngineTask) => Record<string, unknown>) | null = null;
  /** When set, runs fail at once with this error. */
  autoError: Error | null = null;
  /** When true, the engine ignores aborts (a hung engine). */
  ignoreAbort = false;
  /** Runs it works on at once (Engine.capacity); unset: no limit of its own. */
  capacity?: number;

  run(task: EngineTask, ctx: EngineContext): Promise<EngineResult> {
    if (this.autoError) return Promise.reject(this.autoError);
    if (this.autoResult) return Promise.resolve({ result: this.autoResult(task) });
    return new Promise((resolve, reject) => {
      const p: Pending = { task, ctx, resolve, reject, abortedAt: null };
      this.runs.push(p);
      ctx.signal.addEventListener('abort', () => {
        p.abortedAt = Date.now();
        this.aborted.push({ taskId: task.id, reason: ctx.signal.reason, at: p.abortedAt });
        if (!this.ignoreAbort) reject(new Error(`aborted: ${String(ctx.signal.reason)}`));
      });
      for (const w of this.waiters.splice(0)) w();
    });
  }

  /** Waits until `n` runs have started. */
  async started(n: number, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (this.runs.length < n) {
      if (Date.now() > deadline) throw new Error(`only ${this.runs.length} of ${n} runs started`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }

  finish(taskId: string, result: Record<string, unknown>): void {
    const p = this.runs.findLast((r) => r.task.id === taskId);
    if (!p) throw new Error(`no run for ${taskId}`);
    p.resolve({ result });
  }

  failRun(taskId: string, err: Error): void {
    const p = this.runs.findLast((r) => r.task.id === taskId);
    if (!p) throw new Error(`no run for ${taskId}`);
    p.reject(err);
  }
}
