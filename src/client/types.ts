/**
 * The API's JSON shapes, as TypeScript types. Derived from the server's TypeBox schemas
 * (type-only imports: nothing of the server is loaded at run time), so they cannot drift.
 */
import type { Static } from '@sinclair/typebox';
import type {
  CancelTaskResponse,
  CreateTaskBody,
  CreateTaskResponse,
  HealthResponse,
  ListTasksQuery,
  ListTasksResponse,
  TaskResponse,
  TaskSummaryResponse,
} from '../core/schemas.js';
import type { TaskStatus, TaskType } from '../core/task.js';

export type { TaskStatus, TaskType };

/** Every status; final ones are `completed`, `failed` and `cancelled`. */
export const TASK_STATUSES: readonly TaskStatus[] = ['pending', 'running', 'completed', 'failed', 'cancelled'];
export const FINAL_STATUSES: readonly TaskStatus[] = ['completed', 'failed', 'cancelled'];
export const isFinalStatus = (s: string): s is 'completed' | 'failed' | 'cancelled' => (FINAL_STATUSES as readonly string[]).includes(s);

/** `POST /tasks` body. */
export interface CreateTaskInput {
  task_type: TaskType;
  model_name: string;
  input_data: Record<string, unknown>;
  parameters?: Record<string, unknown>;
  /** −100…100, higher runs first. */
  priority?: number;
  /** 1…20 leases before the task fails. */
  max_attempts?: number;
  /** 1…86400 seconds of run time once started. */
  timeout_seconds?: number;
  webhook_url?: string;
  webhook_events?: TaskStatus[];
}
// Compile-time check: the hand-written input is exactly what the server's schema accepts.
type Assert<T extends true> = T;
type _InputMatchesSchema = Assert<CreateTaskInput extends Static<typeof CreateTaskBody> ? true : false>;

/** The whole task, as `GET /tasks/{id}` returns it. */
export type Task = Static<typeof TaskResponse>;
/** `POST /tasks`'s answer (with `wait`, the whole task). */
export type CreatedTask = Static<typeof CreateTaskResponse>;
/** A task as lists and WebSocket snapshots of filters show it. */
export type TaskSummary = Static<typeof TaskSummaryResponse>;
export type TaskList = Static<typeof ListTasksResponse>;
export type CancelledTask = Static<typeof CancelTaskResponse>;
export type Health = Static<typeof HealthResponse>;
export type ListTasksQueryParams = Static<typeof ListTasksQuery>;

/** `GET /tasks` filters and paging. */
export type ListTasksOptions = Partial<ListTasksQueryParams>;

/** One event of `GET /tasks/{id}/events` (SSE), in order, each with a growing `event_id`. */
export interface TaskStreamEventBase {
  /** The event's id: resume after it with `stream(id, { lastEventId })`. */
  event_id: number;
  task_id: string;
  /** The task's status when the event happened. */
  status: TaskStatus;
  progress: number | null;
  at: string;
}
export interface TaskStatusEvent extends TaskStreamEventBase {
  type: 'status';
  /** On the final status (completed, failed, cancelled): the whole task, result included. */
  task?: Task;
}
export interface TaskProgressEvent extends TaskStreamEventBase {
  type: 'progress';
}
export interface TaskOutputEvent extends TaskStreamEventBase {
  type: 'output';
  /** Streamed output (generated text) as it was produced. */
  text: string;
}
export type TaskStreamEvent = TaskStatusEvent | TaskProgressEvent | TaskOutputEvent;

// --- WebSocket (/ws/tasks) messages --------------------------------------------------------

/** A task as a WebSocket update shows it: the summary, progress, and result/error once final. */
export type TaskUpdateTask = TaskSummary & {
  progress: number | null;
  result?: Record<string, unknown> | null;
  error?: { code: string; message: string } | null;
};

export interface TaskFilter {
  status?: TaskStatus;
  task_type?: TaskType;
  model_name?: string;
}

export type TaskUpdateEventName = 'created' | 'leased' | 'completed' | 'failed' | 'cancelled' | 'requeued';

export interface WsTaskUpdate {
  type: 'task.update';
  event: TaskUpdateEventName;
  task_id: string;
  status: TaskStatus;
  progress: number | null;
  task: TaskUpdateTask;
  at: string;
}
export interface WsTaskProgress {
  type: 'task.progress';
  task_id: string;
  status: TaskStatus;
  progress: number | null;
  at: string;
}
export interface WsOutputEvent {
  event_id: number;
  task_id: string;
  type: 'status' | 'progress' | 'output';
  status: TaskStatus;
  progress: number | null;
  text: string | null;
  at: string;
}
export interface WsTaskOutput {
  type: 'task.output';
  task_id: string;
  status: TaskStatus;
  progress: number | null;
  events: WsOutputEvent[];
}
export interface WsSubscribed {
  type: 'subscribed';
  subscription_id: string;
  task_id?: string;
  status?: TaskStatus;
  filter?: TaskFilter;
}
export interface WsTaskSnapshot {
  type: 'snapshot';
  subscription_id: string;
  task_id: string;
  status: TaskStatus;
  task: Task;
}
export interface WsFilterSnapshot {
  type: 'snapshot';
  subscription_id: string;
  filter: TaskFilter;
  tasks: TaskSummary[];
  total: number;
}
export interface WsUnsubscribed {
  type: 'unsubscribed';
  subscription_id: string;
}
export interface WsPong {
  type: 'pong';
  timestamp: string;
}
export interface WsError {
  type: 'error';
  error: { code: string; message: string; details?: Record<string, unknown> };
  timestamp: string;
  request_id: string;
}
/** Live task events: what subscription listeners receive. */
export type TaskEvent = WsTaskUpdate | WsTaskProgress | WsTaskOutput;
/** Every message the server sends on /ws/tasks. */
export type ServerMessage = TaskEvent | WsSubscribed | WsTaskSnapshot | WsFilterSnapshot | WsUnsubscribed | WsPong | WsError;
