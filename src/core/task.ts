/** Task model and lifecycle. Imports nothing else of ours. */

export const TaskStatus = {
  pending: 'pending',
  running: 'running',
  completed: 'completed',
  failed: 'failed',
  cancelled: 'cancelled',
} as const;
export type TaskStatus = (typeof TaskStatus)[keyof typeof TaskStatus];
export const TASK_STATUSES = Object.values(TaskStatus);
export const FINAL_STATUSES: readonly TaskStatus[] = ['completed', 'failed', 'cancelled'];

export const TaskType = {
  textGeneration: 'text_generation',
  imageGeneration: 'image_generation',
  textToSpeech: 'text_to_speech',
  imageToText: 'image_to_text',
} as const;
export type TaskType = (typeof TaskType)[keyof typeof TaskType];
export const TASK_TYPES = Object.values(TaskType);

export interface TaskError {
  code: string;
  message: string;
}

/** A task as the store keeps it. Times are epoch milliseconds. */
export interface TaskRecord {
  id: string;
  status: TaskStatus;
  taskType: TaskType;
  modelName: string;
  inputData: Record<string, unknown>;
  parameters: Record<string, unknown>;
  priority: number;
  attempts: number;
  maxAttempts: number;
  timeoutMs: number;
  createdAt: number;
  startedAt: number | null;
  completedAt: number | null;
  cancelledAt: number | null;
  updatedAt: number;
  workerId: string | null;
  leaseToken: string | null;
  leaseExpiresAt: number | null;
  progress: number | null;
  result: Record<string, unknown> | null;
  error: TaskError | null;
  /** Where status changes are POSTed, and which statuses trigger a delivery. */
  webhookUrl: string | null;
  webhookEvents: TaskStatus[] | null;
}

export interface NewTask {
  id: string;
  taskType: TaskType;
  modelName: string;
  inputData: Record<string, unknown>;
  parameters: Record<string, unknown>;
  priority: number;
  maxAttempts: number;
  timeoutMs: number;
  createdAt: number;
  webhookUrl?: string | null;
  webhookEvents?: TaskStatus[] | null;
  /**
   * Set when a worker is already waiting for this model: the task is inserted leased to it
   * (pending, then running, both logged) in the create's own transaction.
   */
  lease?: NewLease;
}

/** A lease taken out at creation. */
export interface NewLease {
  workerId: string;
  token: string;
  expiresAt: number;
}

/** The (task_type, model_name) pair a worker serves. */
export interface ModelRef {
  taskType: TaskType;
  modelName: string;
}

export function isFinal(status: TaskStatus): boolean {
  return FINAL_STATUSES.includes(status);
}

/** Allowed transitions; every store enforces these in its statements. */
export const TRANSITIONS: Record<TaskStatus, readonly TaskStatus[]> = {
  pending: ['running', 'cancelled'],
  running: ['completed', 'failed', 'cancelled', 'pending'],
  completed: [],
  failed: [],
  cancelled: [],
};

export function canTransition(from: TaskStatus, to: TaskStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** The record of a task just inserted (leased to a waiting worker with `lease`): known from its input, so nothing is read back. */
export function newTaskRecord(t: NewTask, lease?: NewLease): TaskRecord {
  return {
    id: t.id,
    status: lease ? 'running' : 'pending',
    taskType: t.taskType,
    modelName: t.modelName,
    inputData: t.inputData,
    parameters: t.parameters,
    priority: t.priority,
    attempts: lease ? 1 : 0,
    maxAttempts: t.maxAttempts,
    timeoutMs: t.timeoutMs,
    createdAt: t.createdAt,
    startedAt: lease ? t.createdAt : null,
    completedAt: null,
    cancelledAt: null,
    updatedAt: t.createdAt,
    workerId: lease?.workerId ?? null,
    leaseToken: lease?.token ?? null,
    leaseExpiresAt: lease?.expiresAt ?? null,
    progress: null,
    result: null,
    error: null,
    webhookUrl: t.webhookUrl ?? null,
    webhookEvents: t.webhookEvents ?? null,
  };
}
