import { collectDefaultMetrics, Histogram, Registry } from 'prom-client';
import type { CountRow } from '../core/store.js';
import { TASK_STATUSES } from '../core/task.js';

/** Processing-time buckets in seconds, printed as the API reference shows them (`le="1.0"`). */
const PROCESSING_BUCKETS = [0.1, 0.5, 1, 5, 10, 30, 60, 300, 900];

const fmt = (n: number): string => (Number.isInteger(n) ? n.toFixed(1) : String(n));
const esc = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

/**
 * Task metrics are rendered here so their text matches the reference; process and HTTP
 * metrics come from prom-client.
 */
export class Metrics {
  readonly registry = new Registry();
  readonly httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  /** Children by route, status and method: finding one by its labels object costs more than observing. */
  private readonly httpChildren = new Map<string, Map<number, Map<string, { observe(v: number): void }>>>();
  private readonly bucketCounts = new Array<number>(PROCESSING_BUCKETS.length).fill(0);
  private processingCount = 0;
  private processingSum = 0;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'task_manager_' });
    this.httpDuration = new Histogram({
      name: 'task_manager_http_request_duration_seconds',
      help: 'HTTP request latency',
      labelNames: ['method', 'route', 'status_code'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [this.registry],
    });
  }

  observeHttp(method: string, route: string, statusCode: number, seconds: number): void {
    let byStatus = this.httpChildren.get(route);
    if (!byStatus) this.httpChildren.set(route, (byStatus = new Map()));
    let byMethod = byStatus.get(statusCode);
    if (!byMethod) byStatus.set(statusCode, (byMethod = new Map()));
    let child = byMethod.get(method);
    if (!child) byMethod.set(method, (child = this.httpDuration.labels({ method, route, status_code: String(statusCode) })));
    child.observe(seconds);
  }

  observeProcessing(seconds: number): void {
    if (!Number.isFinite(seconds) || seconds < 0) return;
    this.processingCount++;
    this.processingSum += seconds;
    PROCESSING_BUCKETS.forEach((b, i) => {
      if (seconds <= b) this.bucketCounts[i]++;
    });
  }

  async render(counts: CountRow[]): Promise<string> {
    const total = new Map<string, number>(TASK_STATUSES.map((s) => [s, 0]));
    const current = new Map<string, number>(TASK_STATUSES.map((s) => [s, 0]));
    for (const r of counts) {
      total.set(r.status, (total.get(r.status) ?? 0) + r.total);
      current.set(r.status, (current.get(r.status) ?? 0) + r.current);
    }
    const lines: string[] = [];
    lines.push('# HELP task_manager_tasks_total Total number of tasks processed (transitions into each status, ever)');
    lines.push('# TYPE task_manager_tasks_total counter');
    for (const s of TASK_STATUSES) lines.push(`task_manager_tasks_total{status="${s}"} ${total.get(s)}`);
    lines.push('');
    lines.push('# HELP task_manager_tasks Tasks currently in each status');
    lines.push('# TYPE task_manager_tasks gauge');
    for (const s of TASK_STATUSES) lines.push(`task_manager_tasks{status="${s}"} ${current.get(s)}`);
    lines.push('');
    lines.push('# HELP task_manager_queue_depth Pending tasks per task type and model');
    lines.push('# TYPE task_manager_queue_depth gauge');
    for (const r of counts) {
      if (r.status !== 'pending') continue;
      lines.push(`task_manager_queue_depth{task_type="${esc(r.taskType)}",model_name="${esc(r.modelName)}"} ${r.current}`);
    }
    lines.push('');
    lines.push('# HELP task_manager_processing_time_seconds Task processing time');
    lines.push('# TYPE task_manager_processing_time_seconds histogram');
    PROCESSING_BUCKETS.forEach((b, i) => lines.push(`task_manager_processing_time_seconds_bucket{le="${fmt(b)}"} ${this.bucketCounts[i]}`));
    lines.push(`task_manager_processing_time_seconds_bucket{le="+Inf"} ${this.processingCount}`);
    lines.push(`task_manager_processing_time_seconds_sum ${this.processingSum}`);
    lines.push(`task_manager_processing_time_seconds_count ${this.processingCount}`);
    lines.push('');
    return `${lines.join('\n')}\n${await this.registry.metrics()}`;
  }
}
