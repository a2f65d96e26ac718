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
 * estimated_completion = when the task should get a worker slot + the model's mean run time.
 *
 * The slots serving the model are lanes: a free one is available now, a busy one (a task
 * running) in half a mean run time on average (how far along it is is not known), and each
 * task ahead in the queue takes the next lane to come free for one mean run time. The task
 * then starts when the lane after all of those comes free.
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

  /**
   * Epoch ms when a task should finish: one that started at `startedAt`, or one waiting with
   * `ahead` tasks before it while `running` tasks of the model run.
   */
  estimate(model: ModelRef, ahead: number, now: number, startedAt: number | null = null, running = 0): number {
    const mean = this.meanRunMs(model);
    if (startedAt !== null) return Math.max(now, startedAt + mean);
    const slots = Math.max(1, this.slots(model));
    const free = slots - Math.min(Math.max(0, running), slots);
    // Lanes come free round after round: the free ones at k × mean, the busy ones half a run later.
    const round = Math.floor(ahead / slots);
    const lane = ahead % slots;
    const wait = round * mean + (lane < free ? 0 : mean / 2);
    return now + Math.round(wait + mean);
  }
}
