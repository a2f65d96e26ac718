import { collectDefaultMetrics, Registry } from 'prom-client';
import { newHistogram, observe, type Histogram } from '../core/histogram.js';
import type { CommitStats, CountRow } from '../core/store.js';
import { TASK_STATUSES } from '../core/task.js';

/** Processing-time buckets in seconds, printed as the API reference shows them (`le="1.0"`). */
const PROCESSING_BUCKETS = [0.1, 0.5, 1, 5, 10, 30, 60, 300, 900];
const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
const HTTP_NAME = 'task_manager_http_request_duration_seconds';

/** One label set of the HTTP latency histogram. */
interface HttpSeries {
  labels: string;
  h: Histogram;
}

/** A histogram's lines in the exposition format prom-client writes (`le` first, cumulative buckets). */
function histogramLines(lines: string[], name: string, h: Histogram, labels = ''): void {
  const more = labels ? `,${labels}` : '';
  let acc = 0;
  h.bounds.forEach((b, i) => {
    acc += h.counts[i];
    lines.push(`${name}_bucket{le="${b}"${more}} ${acc}`);
  });
  lines.push(`${name}_bucket{le="+Inf"${more}} ${h.count}`);
  lines.push(`${name}_sum${labels ? `{${labels}}` : ''} ${h.sum}`);
  lines.push(`${name}_count${labels ? `{${labels}}` : ''} ${h.count}`);
}

const COMMIT_METRICS: Array<[keyof CommitStats, string, string]> = [
  ['groupWrites', 'task_manager_sqlite_group_commit_writes', 'Writes committed together in one SQLite transaction (group commit)'],
  ['commitSeconds', 'task_manager_sqlite_commit_seconds', 'Time to run and commit one group of writes on the SQLite writer thread'],
  ['fsyncSeconds', 'task_manager_sqlite_fsync_seconds', 'fdatasync of the WAL before creates and cancels are acknowledged'],
];

const fmt = (n: number): string => (Number.isInteger(n) ? n.toFixed(1) : String(n));
const esc = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');

/**
 * Task and HTTP metrics are rendered here (task metrics so their text matches the reference;
 * the HTTP histogram because prom-client validates and hashes the labels on every
 * observation, which cost more than the rest of a small request's bookkeeping); process
 * metrics come from prom-client.
 */
export class Metrics {
  readonly registry = new Registry();
  /** Series by route, status and method, created on first use. */
  private readonly http = new Map<string, Map<number, Map<string, HttpSeries>>>();
  private readonly httpSeries: HttpSeries[] = [];
  private readonly bucketCounts = new Array<number>(PROCESSING_BUCKETS.length).fill(0);
  private processingCount = 0;
  private processingSum = 0;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'task_manager_' });
  }

  observeHttp(method: string, route: string, statusCode: number, seconds: number): void {
    let byStatus = this.http.get(route);
    if (!byStatus) this.http.set(route, (byStatus = new Map()));
    let byMethod = byStatus.get(statusCode);
    if (!byMethod) byStatus.set(statusCode, (byMethod = new Map()));
    let series = byMethod.get(method);
    if (!series) {
      series = { labels: `method="${esc(method)}",route="${esc(route)}",status_code="${statusCode}"`, h: newHistogram(HTTP_BUCKETS) };
      byMethod.set(method, series);
      this.httpSeries.push(series);
    }
    observe(series.h, seconds);
  }

  private renderHttp(lines: string[]): void {
    lines.push(`# HELP ${HTTP_NAME} HTTP request latency`);
    lines.push(`# TYPE ${HTTP_NAME} histogram`);
    for (const s of this.httpSeries) histogramLines(lines, HTTP_NAME, s.h, s.labels);
    lines.push('');
  }

  private renderCommits(lines: string[], stats: CommitStats): void {
    for (const [key, name, help] of COMMIT_METRICS) {
      lines.push(`# HELP ${name} ${help}`);
      lines.push(`# TYPE ${name} histogram`);
      histogramLines(lines, name, stats[key]);
      lines.push('');
    }
  }

  observeProcessing(seconds: number): void {
    if (!Number.isFinite(seconds) || seconds < 0) return;
    this.processingCount++;
    this.processingSum += seconds;
    PROCESSING_BUCKETS.forEach((b, i) => {
      if (seconds <= b) this.bucketCounts[i]++;
    });
  }

  /** `commits`: the SQLite store's group-commit figures, when it has reported any. */
  async render(counts: CountRow[], commits: CommitStats | null = null): Promise<string> {
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
    this.renderHttp(lines);
    if (commits) this.renderCommits(lines, commits);
    return `${lines.join('\n')}\n${await this.registry.metrics()}`;
  }
}
