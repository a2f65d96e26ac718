import type { NewTask, TaskRecord, TaskStatus, TaskType } from '../core/task.js';
import type { ArtifactMeta, TaskSummary, WorkerRecord } from '../core/store.js';
import { modelFromWire, type WireModel } from '../core/worker-protocol.js';

/** Column names are the same in both stores. */
export interface TaskRow {
  id: string;
  status: string;
  task_type: string;
  model_name: string;
  input_data: string | Record<string, unknown>;
  parameters: string | Record<string, unknown>;
  priority: number;
  attempts: number;
  max_attempts: number;
  timeout_ms: number | string;
  created_at: number | string;
  started_at: number | string | null;
  completed_at: number | string | null;
  cancelled_at: number | string | null;
  updated_at: number | string;
  worker_id: string | null;
  lease_token: string | null;
  lease_expires_at: number | string | null;
  progress: number | null;
  result: string | Record<string, unknown> | null;
  error_code: string | null;
  error_message: string | null;
  webhook_url?: string | null;
  webhook_events?: string | string[] | null;
}

const json = (v: string | Record<string, unknown>): Record<string, unknown> =>
  typeof v === 'string' ? JSON.parse(v) : v;
const num = (v: number | string): number => (typeof v === 'string' ? Number(v) : v);
const numOrNull = (v: number | string | null): number | null => (v === null ? null : num(v));

export function rowToTask(r: TaskRow): TaskRecord {
  return {
    id: r.id,
    status: r.status as TaskStatus,
    taskType: r.task_type as TaskType,
    modelName: r.model_name,
    inputData: json(r.input_data),
    parameters: json(r.parameters),
    priority: r.priority,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    timeoutMs: num(r.timeout_ms),
    createdAt: num(r.created_at),
    startedAt: numOrNull(r.started_at),
    completedAt: numOrNull(r.completed_at),
    cancelledAt: numOrNull(r.cancelled_at),
    updatedAt: num(r.updated_at),
    workerId: r.worker_id,
    leaseToken: r.lease_token,
    leaseExpiresAt: numOrNull(r.lease_expires_at),
    progress: r.progress,
    result: r.result === null ? null : json(r.result),
    error: r.error_code === null ? null : { code: r.error_code, message: r.error_message ?? '' },
    webhookUrl: r.webhook_url ?? null,
    webhookEvents: r.webhook_events == null ? null : ((typeof r.webhook_events === 'string' ? JSON.parse(r.webhook_events) : r.webhook_events) as TaskStatus[]),
  };
}

export type SummaryRow = Pick<
  TaskRow,
  'id' | 'status' | 'task_type' | 'model_name' | 'priority' | 'created_at' | 'started_at' | 'completed_at' | 'cancelled_at' | 'worker_id'
>;

export const SUMMARY_COLUMNS =
  'id, status, task_type, model_name, priority, created_at, started_at, completed_at, cancelled_at, worker_id';

export function rowToSummary(r: SummaryRow): TaskSummary {
  return {
    id: r.id,
    status: r.status as TaskStatus,
    taskType: r.task_type as TaskType,
    modelName: r.model_name,
    priority: r.priority,
    createdAt: num(r.created_at),
    startedAt: numOrNull(r.started_at),
    completedAt: numOrNull(r.completed_at),
    cancelledAt: numOrNull(r.cancelled_at),
    workerId: r.worker_id,
  };
}

/** ORDER BY for the list view; identical in both stores. Ties go by insertion order. */
export function listOrderBy(sortBy: string, sortOrder: 'asc' | 'desc', tiebreak: string): string {
  const dir = sortOrder === 'asc' ? 'ASC' : 'DESC';
  const lead = sortBy === 'status' ? `status ${dir}, ` : sortBy === 'task_type' ? `task_type ${dir}, ` : '';
  return `${lead}created_at ${dir}, ${tiebreak} ${dir}`;
}

export interface WorkerRow {
  id: string;
  models: string | WireModel[];
  concurrency: number;
  hardware: string | Record<string, unknown>;
  registered_at: number | string;
  last_seen_at: number | string;
}

export function rowToWorker(r: WorkerRow): WorkerRecord {
  const models = typeof r.models === 'string' ? (JSON.parse(r.models) as WireModel[]) : r.models;
  return {
    id: r.id,
    models: models.map(modelFromWire),
    concurrency: r.concurrency,
    hardware: json(r.hardware),
    registeredAt: num(r.registered_at),
    lastSeenAt: num(r.last_seen_at),
  };
}

export interface ArtifactRow {
  task_id: string;
  name: string;
  content_type: string;
  size: number | string;
  created_at: number | string;
  data: Buffer;
}

export function rowToArtifactMeta(r: ArtifactRow): ArtifactMeta {
  return { taskId: r.task_id, name: r.name, contentType: r.content_type, size: num(r.size), createdAt: num(r.created_at) };
}

export interface EventRow {
  id: number | string;
  task_id: string;
  type: 'status' | 'progress' | 'output';
  status: string | null;
  progress: number | null;
  text: string | null;
  at: number | string;
}

export function rowToEvent(r: EventRow): import('../core/store.js').TaskLogEvent {
  return {
    id: num(r.id),
    taskId: r.task_id,
    type: r.type,
    status: (r.status as TaskStatus | null) ?? null,
    progress: r.progress,
    text: r.text,
    at: num(r.at),
  };
}

export interface DeliveryRow {
  id: number | string;
  task_id: string;
  event: string;
  url: string;
  state: 'pending' | 'delivered' | 'failed';
  attempts: number;
  next_attempt_at: number | string;
  last_status_code: number | null;
  last_error: string | null;
  created_at: number | string;
  delivered_at: number | string | null;
}

export function rowToDelivery(r: DeliveryRow): import('../core/store.js').WebhookDelivery {
  return {
    id: num(r.id),
    taskId: r.task_id,
    event: r.event as TaskStatus,
    url: r.url,
    state: r.state,
    attempts: r.attempts,
    nextAttemptAt: num(r.next_attempt_at),
    lastStatusCode: r.last_status_code,
    lastError: r.last_error,
    createdAt: num(r.created_at),
    deliveredAt: numOrNull(r.delivered_at),
  };
}

/**
 * A task row to insert, in the order of both stores' insert_task.sql parameters. On SQLite
 * this flat array of primitives crosses to the writer thread for a fraction of what an
 * object with nested input costs to clone, and binds by position without a lookup per name.
 */
export type InsertRow = [
  id: string,
  taskType: string,
  modelName: string,
  inputData: string,
  parameters: string,
  priority: number,
  maxAttempts: number,
  timeoutMs: number,
  createdAt: number,
  updatedAt: number,
  webhookUrl: string | null,
  webhookEvents: string | null,
];

export const insertRow = (t: NewTask): InsertRow => [
  t.id,
  t.taskType,
  t.modelName,
  JSON.stringify(t.inputData),
  JSON.stringify(t.parameters),
  t.priority,
  t.maxAttempts,
  t.timeoutMs,
  t.createdAt,
  t.createdAt,
  t.webhookUrl ?? null,
  t.webhookEvents ? JSON.stringify(t.webhookEvents) : null,
];
