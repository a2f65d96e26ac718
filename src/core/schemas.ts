/** TypeBox schemas: written once, used by routes, the OpenAPI document, the client and tests. */
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { TASK_STATUSES, TASK_TYPES, type TaskStatus, type TaskType } from './task.js';
import { ERROR_CODES } from './errors.js';

const StringEnum = <T extends string>(values: readonly T[], opts: Record<string, unknown> = {}) =>
  Type.Unsafe<T>({ type: 'string', enum: [...values], ...opts });

const Nullable = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()]);

const Timestamp = Type.String({ format: 'date-time', examples: ['2025-05-30T12:00:00.000Z'] });
/** A type array rather than anyOf, so serializing a null-or-time never runs a schema check. */
const NullableTimestamp = Type.Unsafe<string | null>({ type: ['string', 'null'], format: 'date-time', examples: ['2025-05-30T12:00:00.000Z'] });

export const TaskStatusSchema = StringEnum<TaskStatus>(TASK_STATUSES, { description: 'Task status' });
export const TaskTypeSchema = StringEnum<TaskType>(TASK_TYPES, { description: 'Type of AI task' });

export const ModelName = Type.String({
  minLength: 1,
  maxLength: 200,
  pattern: '^[^\\u0000-\\u001f\\u007f]+$',
  description: 'Model identifier (a model catalog entry)',
  examples: ['microsoft/DialoGPT-medium'],
});

export const CreateTaskBody = Type.Object(
  {
    task_type: TaskTypeSchema,
    model_name: ModelName,
    input_data: Type.Object({}, { additionalProperties: true, description: 'Task-specific input data' }),
    parameters: Type.Optional(
      Type.Object({}, { additionalProperties: true, description: 'Model inference parameters' }),
    ),
    priority: Type.Optional(
      Type.Integer({ minimum: -100, maximum: 100, default: 0, description: 'Higher runs first' }),
    ),
    max_attempts: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 20, description: 'Leases before the task fails' }),
    ),
    timeout_seconds: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 86_400, description: 'Run-time limit once started' }),
    ),
    webhook_url: Type.Optional(
      Type.String({ minLength: 1, maxLength: 2048, description: 'http(s) URL that receives a signed POST on status changes' }),
    ),
    webhook_events: Type.Optional(
      Type.Array(TaskStatusSchema, {
        minItems: 1,
        maxItems: 5,
        uniqueItems: true,
        description: 'Statuses that trigger a delivery (default: completed, failed, cancelled)',
      }),
    ),
  },
  { additionalProperties: false },
);
export type CreateTaskBody = Static<typeof CreateTaskBody>;

export const TaskErrorSchema = Type.Object({ code: Type.String(), message: Type.String() });


export const TaskSummaryResponse = Type.Object({
  task_id: Type.String(),
  status: TaskStatusSchema,
  task_type: TaskTypeSchema,
  model_name: Type.String(),
  priority: Type.Integer(),
  created_at: Timestamp,
  started_at: NullableTimestamp,
  completed_at: NullableTimestamp,
  cancelled_at: NullableTimestamp,
  worker_id: Nullable(Type.String()),
});

/** A whole task: the summary plus attempts, progress, estimates, inputs, result and webhook. */
export const TaskResponse = Type.Composite([TaskSummaryResponse, Type.Object({
  attempts: Type.Integer(),
  max_attempts: Type.Integer(),
  timeout_seconds: Type.Number(),
  progress: Nullable(Type.Number()),
  estimated_completion: NullableTimestamp,
  queue_position: Nullable(Type.Integer()),
  input_data: Type.Any(),
  parameters: Type.Any(),
  result: Type.Any({ description: 'Engine output once completed, else null' }),
  error: Nullable(TaskErrorSchema),
  webhook: Nullable(
    Type.Object({
      url: Type.String(),
      events: Type.Array(Type.String()),
      deliveries: Type.Array(
        Type.Object({
          event: Type.String(),
          state: Type.String({ description: 'pending, delivered or failed' }),
          attempts: Type.Integer(),
          last_status_code: Nullable(Type.Integer()),
          last_error: Nullable(Type.String()),
          next_attempt_at: NullableTimestamp,
          delivered_at: NullableTimestamp,
        }),
      ),
    }),
  ),
})]);

/** The reference's create response; with `Prefer: wait=N` the whole task, as GET returns it. */
export const CreateTaskResponse = Type.Composite([
  Type.Object({
    task_id: Type.String(),
    status: TaskStatusSchema,
    task_type: TaskTypeSchema,
    model_name: Type.String(),
    priority: Type.Integer(),
    created_at: Timestamp,
    estimated_completion: NullableTimestamp,
    queue_position: Nullable(Type.Integer({ description: 'Tasks of this model ahead of this one' })),
  }),
  Type.Partial(Type.Omit(TaskResponse, ['task_id', 'status', 'task_type', 'model_name', 'priority', 'created_at', 'estimated_completion', 'queue_position'])),
]);


export const ListTasksQuery = Type.Object(
  {
    status: Type.Optional(TaskStatusSchema),
    task_type: Type.Optional(TaskTypeSchema),
    model_name: Type.Optional(ModelName),
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, default: 50 })),
    offset: Type.Optional(Type.Integer({ minimum: 0, maximum: 10_000_000, default: 0 })),
    sort_by: Type.Optional(StringEnum(['created_at', 'status', 'task_type'] as const, { default: 'created_at' })),
    sort_order: Type.Optional(StringEnum(['asc', 'desc'] as const, { default: 'desc' })),
  },
  { additionalProperties: false },
);
export type ListTasksQuery = Static<typeof ListTasksQuery>;

export const ListTasksResponse = Type.Object({
  tasks: Type.Array(TaskSummaryResponse),
  total: Type.Integer(),
  limit: Type.Integer(),
  offset: Type.Integer(),
});

export const TaskIdParams = Type.Object({
  // No minimum: an empty id (`/tasks/`) is a task that does not exist, like any malformed one.
  task_id: Type.String({ maxLength: 200, description: 'Unique task identifier' }),
});
export type TaskIdParams = Static<typeof TaskIdParams>;

export const CancelTaskResponse = Type.Object({
  task_id: Type.String(),
  status: TaskStatusSchema,
  cancelled_at: Timestamp,
});

export const HealthResponse = Type.Object({
  status: StringEnum(['healthy', 'unhealthy'] as const),
  timestamp: Timestamp,
  version: Type.String(),
  uptime: Type.Integer({ description: 'Seconds since start' }),
  active_tasks: Type.Integer(),
  pending_tasks: Type.Integer(),
  completed_tasks: Type.Integer(),
  failed_tasks: Type.Integer(),
  cancelled_tasks: Type.Integer(),
  store: Type.Object({ kind: Type.String(), ok: Type.Boolean(), error: Type.Optional(Type.String()) }),
});

export const ErrorResponse = Type.Object(
  {
    error: Type.Object({
      code: StringEnum(Object.keys(ERROR_CODES)),
      message: Type.String(),
      details: Type.Record(Type.String(), Type.Any()),
    }),
    timestamp: Timestamp,
    request_id: Type.String(),
  },
);
export type ErrorResponse = Static<typeof ErrorResponse>;
