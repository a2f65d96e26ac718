import type { ModelRef, TaskType } from '../core/task.js';

/** Run-time guesses before a model has history; replaced by observations as they come. */
const DEFAULT_RUN_MS: Record<TaskType, number> = {
  text_generation: 5_000,
  image_generation: 20_000,
  text_to_speech: 2_000,
  image_to_text: 3_000,
};

const key = (m: ModelRef): string => `${m.taskType}\u0000${m.modelName}`;

/**
 * estimated_completion = now + tasks ahead ÷ throughput + mean run time, where throughput
 * is the worker slots serving the model divided by its mean run time.
 */
export class EtaEstimator {
  private readonly meanMs = new Map<string, number>();
  private readonly alpha: number;

  /** `slots` tells how many worker slots serve a model right now. */
  constructor(private readonly slots: (model: ModelRef) => number, opts: { smoothing?: number } = {}) {
    this.alpha = opts.smoothing ?? 0.2;
  }

  seed(model: ModelRef, meanMs: number): void {
    if (Number.isFinite(meanMs) && meanMs >= 0) this.meanMs.set(key(model), meanMs);
  }

  observe(model: ModelRef, runMs: number): void {
    if (!Number.isFinite(runMs) || runMs < 0) return;
    const k = key(model);
    const prev = this.meanMs.get(k);
    this.meanMs.set(k, prev === undefined ? runMs : prev + this.alpha * (runMs - prev));
  }

  meanRunMs(model: ModelRef): number {
    return this.meanMs.get(key(model)) ?? DEFAULT_RUN_MS[model.taskType];
  }

  /** Epoch ms when a task with `ahead` tasks before it should finish. */
  estimate(model: ModelRef, ahead: number, now: number, startedAt: number | null = null): number {
    const mean = this.meanRunMs(model);
    if (startedAt !== null) return Math.max(now, startedAt + mean);
    const slots = Math.max(1, this.slots(model));
    return now + Math.ceil(ahead / slots) * mean + mean;
  }
}
