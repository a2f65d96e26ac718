import type { TaskSummary, WebhookDelivery } from '../core/store.js';
import type { TaskRecord } from '../core/task.js';
import type { Estimate } from '../scheduler/task-queue.js';
import { isoTime } from '../core/iso-time.js';

const iso = (ms: number | null): string | null => (ms === null ? null : isoTime(ms));

export function taskToJson(t: TaskRecord, est: Estimate, deliveries: WebhookDelivery[] = []) {
  return {
    ...summaryToJson(t),
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
    webhook: t.webhookUrl
      ? {
          url: t.webhookUrl,
          events: t.webhookEvents ?? [],
          deliveries: deliveries.map((d) => ({
            event: d.event,
            state: d.state,
            attempts: d.attempts,
            last_status_code: d.lastStatusCode,
            last_error: d.lastError,
            next_attempt_at: d.state === 'pending' ? iso(d.nextAttemptAt) : null,
            delivered_at: iso(d.deliveredAt),
          })),
        }
      : null,
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

/**
 * The 201 body of a create, as text. Ids, statuses, task types and timestamps are ours and
 * need no escaping; the model name is escaped by JSON.stringify.
 */
export function createdJson(t: TaskRecord, estimatedCompletion: number | null, queuePosition: number | null): string {
  const eta = estimatedCompletion === null ? 'null' : `"${isoTime(estimatedCompletion)}"`;
  return (
    `{"task_id":"${t.id}","status":"${t.status}","task_type":"${t.taskType}","model_name":${JSON.stringify(t.modelName)},` +
    `"priority":${t.priority},"created_at":"${isoTime(t.createdAt)}","estimated_completion":${eta},"queue_position":${queuePosition}}`
  );
}

export { iso };
