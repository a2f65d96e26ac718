import type { TaskStore, WorkerRecord } from '../core/store.js';
import type { ModelRef } from '../core/task.js';

export type WorkerStatus = 'idle' | 'busy' | 'offline';

export interface WorkerView extends WorkerRecord {
  status: WorkerStatus;
  currentTasks: string[];
}

const key = (m: ModelRef): string => `${m.taskType}\u0000${m.modelName}`;

/**
 * Workers known to every node (kept in the store), with a local cache of the live ones so
 * that estimates and model checks never wait on the database.
 */
export class WorkerDirectory {
  private live: WorkerRecord[] = [];
  private refreshTimer: NodeJS.Timeout | null = null;
  private readonly lastTouch = new Map<string, number>();

  constructor(
    private readonly store: TaskStore,
    /** A worker silent this long is offline (its leases expire at the same time). */
    private readonly offlineAfterMs: number,
  ) {}

  start(refreshMs = 2_000): void {
    if (this.refreshTimer) return;
    void this.refresh();
    this.refreshTimer = setInterval(() => void this.refresh(), refreshMs);
    this.refreshTimer.unref();
  }

  stop(): void {
    if (this.refreshTimer) clearInterval(this.refreshTimer);
    this.refreshTimer = null;
  }

  async refresh(now = Date.now()): Promise<void> {
    try {
      this.live = (await this.store.listWorkers()).filter((w) => now - w.lastSeenAt <= this.offlineAfterMs);
    } catch {
      // keep the last known set; the store's outage is reported by /health
    }
  }

  async register(w: Omit<WorkerRecord, 'registeredAt' | 'lastSeenAt'>, now = Date.now()): Promise<WorkerRecord> {
    const rec = await this.store.upsertWorker(w, now);
    this.live = [...this.live.filter((x) => x.id !== rec.id), rec];
    this.lastTouch.set(rec.id, now);
    return rec;
  }

  async unregister(id: string): Promise<void> {
    await this.store.removeWorker(id);
    this.live = this.live.filter((x) => x.id !== id);
    this.lastTouch.delete(id);
  }

  /** Records that a worker is alive; writes at most once a second per worker. */
  async touch(id: string, now = Date.now()): Promise<boolean> {
    if (now - (this.lastTouch.get(id) ?? 0) < 1_000) return true;
    this.lastTouch.set(id, now);
    const known = await this.store.touchWorker(id, now);
    if (!known) this.lastTouch.delete(id);
    return known;
  }

  /** A live worker by id; looks in the store when this node has not seen it yet. */
  async get(id: string): Promise<WorkerRecord | undefined> {
    const cached = this.live.find((w) => w.id === id);
    if (cached) return cached;
    await this.refresh();
    return this.live.find((w) => w.id === id);
  }

  /** How many tasks of a model the live workers run at once, all together. */
  slots(model: ModelRef): number {
    const k = key(model);
    let n = 0;
    for (const w of this.live) {
      const m = w.models.find((x) => key(x) === k);
      if (m) n += Math.min(w.concurrency, m.concurrency ?? w.concurrency);
    }
    return n;
  }

  /** Live workers serving a model. */
  serving(model: ModelRef): string[] {
    const k = key(model);
    return this.live.filter((w) => w.models.some((m) => key(m) === k)).map((w) => w.id);
  }

  /** Task types live workers advertise for a model name (for models outside the catalog). */
  liveTaskTypes(modelName: string): ModelRef['taskType'][] {
    return [...new Set(this.live.flatMap((w) => w.models.filter((m) => m.modelName === modelName).map((m) => m.taskType)))];
  }

  liveModels(): ModelRef[] {
    const seen = new Map<string, ModelRef>();
    for (const w of this.live) for (const m of w.models) seen.set(key(m), m);
    return [...seen.values()];
  }

  async list(now = Date.now()): Promise<WorkerView[]> {
    const [workers, running] = await Promise.all([this.store.listWorkers(), this.store.runningTasks()]);
    return workers.map((w) => {
      const currentTasks = running.filter((r) => r.workerId === w.id).map((r) => r.id);
      const status: WorkerStatus = now - w.lastSeenAt > this.offlineAfterMs ? 'offline' : currentTasks.length > 0 ? 'busy' : 'idle';
      return { ...w, status, currentTasks };
    });
  }
}
