import type { TaskSummary } from '../core/store.js';
import type { TaskRecord } from '../core/task.js';
import type { Estimate } from '../scheduler/task-queue.js';

const iso = (ms: number | null): string | null => (ms === null ? null : new Date(ms).toISOString());

export function taskToJson(t: TaskRecord, est: Estimate) {
  return {
    task_id: t.id,
    status: t.status,
    task_type: t.taskType,
    model_name: t.modelName,
    priority: t.priority,
    created_at: iso(t.createdAt)!,
    started_at: iso(t.startedAt),
    completed_at: iso(t.completedAt),
    cancelled_at: iso(t.cancelledAt),
    worker_id: t.workerId,
    attempts: t.attempts,
    max_attempts: t.maxAttempts,
    timeout_seconds: t.timeoutMs / 1000,
    progress: t.progress,
    estimated_completion: iso(est.estimatedCompletion),
    queue_position: est.queuePosition,
    input_data: t.inputData,
    parameters: t.parameters,
    result: t.result,
    error: t.error,
  };
}

export function summaryToJson(t: TaskSummary) {
  return {
    task_id: t.id,
    status: t.status,
    task_type: t.taskType,
    model_name: t.modelName,
    priority: t.priority,
    created_at: iso(t.createdAt)!,
    started_at: iso(t.startedAt),
    completed_at: iso(t.completedAt),
    cancelled_at: iso(t.cancelledAt),
    worker_id: t.workerId,
  };
}

export { iso };
