/** The remote worker protocol's schemas, shared by the server routes and the HTTP transport. */
import { Type, type Static } from '@sinclair/typebox';
import { ModelName, TaskErrorSchema, TaskTypeSchema } from './schemas.js';
import type { RegisteredModel } from './store.js';
import type { TaskType } from './task.js';

export const WORKER_ID_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$';
/** Ids starting with this are in-process workers'; remote workers may not register under them. */
export const EMBEDDED_WORKER_PREFIX = 'worker_embedded';
export const ARTIFACT_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$';

const WorkerId = Type.String({ pattern: WORKER_ID_PATTERN, description: 'Worker identifier' });
const LeaseToken = Type.String({ minLength: 1, maxLength: 128, description: 'Fencing token from the lease' });

export const ModelRefSchema = Type.Object({ task_type: TaskTypeSchema, model_name: ModelName }, { additionalProperties: false });

const RegisteredModelSchema = Type.Object(
  {
    task_type: TaskTypeSchema,
    model_name: ModelName,
    concurrency: Type.Optional(
      Type.Integer({ minimum: 1, maximum: 1024, description: "Tasks of this model the worker runs at once, where fewer than its concurrency (its engine's capacity)" }),
    ),
  },
  { additionalProperties: false },
);

export const RegisterWorkerBody = Type.Object(
  {
    worker_id: Type.Optional(WorkerId),
    models: Type.Array(RegisteredModelSchema, { minItems: 1, maxItems: 256 }),
    concurrency: Type.Integer({ minimum: 1, maximum: 1024 }),
    hardware: Type.Optional(
      Type.Record(Type.String(), Type.Any(), { description: 'Facts such as gpu_name, gpu_memory_mb, cpu_cores' }),
    ),
    running_task_ids: Type.Optional(
      Type.Array(Type.String({ maxLength: 200 }), {
        maxItems: 1024,
        description:
          'Tasks this worker process is running now ([] when it has just started). When given, every other task still leased to this worker id, left by an earlier process under the same id, is requeued at once (its attempt spent, as on a lease expiry) instead of when its lease runs out.',
      }),
    ),
  },
  { additionalProperties: false },
);
export type RegisterWorkerBody = Static<typeof RegisterWorkerBody>;

export const RegisterWorkerResponse = Type.Object({
  worker_id: Type.String(),
  lease_seconds: Type.Number({ description: 'A lease not extended this long is lost' }),
  heartbeat_seconds: Type.Number({ description: 'How often to heartbeat running tasks' }),
  max_wait_seconds: Type.Number({ description: 'Longest lease long-poll the server holds' }),
});

export const WorkerIdParams = Type.Object({ worker_id: WorkerId });
export const WorkerTaskParams = Type.Object({ worker_id: WorkerId, task_id: Type.String({ minLength: 1, maxLength: 200 }) });
export const ArtifactUploadParams = Type.Object({
  worker_id: WorkerId,
  task_id: Type.String({ minLength: 1, maxLength: 200 }),
  name: Type.String({ pattern: ARTIFACT_NAME_PATTERN }),
});
export const ArtifactUploadQuery = Type.Object({ lease_token: LeaseToken }, { additionalProperties: false });

export const LeaseBody = Type.Object(
  {
    max_tasks: Type.Integer({ minimum: 0, maximum: 256, description: '0 waits only for cancellations of running tasks' }),
    wait_seconds: Type.Optional(Type.Number({ minimum: 0, maximum: 300 })),
    running: Type.Optional(Type.Array(Type.String({ maxLength: 200 }), { maxItems: 1024, description: 'Tasks the worker is running now' })),
    models: Type.Optional(
      Type.Array(ModelRefSchema, {
        minItems: 1,
        maxItems: 256,
        description: 'Lease only for these of the registered models (those whose engines have room now); default all',
      }),
    ),
    wake: Type.Optional(
      Type.Boolean({
        description:
          "Answer this worker's waiting lease poll now, with what it has leased (or, if none is waiting yet, its next poll at once), on whichever node of the deployment it waits; sent with max_tasks 0 and wait_seconds 0 when a full engine frees",
      }),
    ),
  },
  { additionalProperties: false },
);
export type LeaseBody = Static<typeof LeaseBody>;

export const LeasedTaskSchema = Type.Object({
  task_id: Type.String(),
  lease_token: Type.String(),
  task_type: TaskTypeSchema,
  model_name: Type.String(),
  input_data: Type.Any(),
  parameters: Type.Any(),
  priority: Type.Integer(),
  attempts: Type.Integer(),
  timeout_seconds: Type.Number(),
  started_at: Type.String({ format: 'date-time' }),
});

export const LeaseResponse = Type.Object({
  tasks: Type.Array(LeasedTaskSchema),
  cancelled: Type.Array(Type.String(), { description: 'Running tasks of this worker that were cancelled: stop them' }),
});

export const HeartbeatBody = Type.Object(
  {
    tasks: Type.Array(
      Type.Object(
        { task_id: Type.String({ maxLength: 200 }), lease_token: LeaseToken, progress: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })) },
        { additionalProperties: false },
      ),
      { maxItems: 1024 },
    ),
  },
  { additionalProperties: false },
);
export type HeartbeatBody = Static<typeof HeartbeatBody>;

export const HeartbeatResponse = Type.Object({
  cancelled: Type.Array(Type.String(), { description: 'Stop these: the task was cancelled' }),
  lost: Type.Array(Type.String(), { description: 'Stop these: the lease is no longer yours' }),
});

export const CompleteBody = Type.Object(
  { lease_token: LeaseToken, result: Type.Record(Type.String(), Type.Any()) },
  { additionalProperties: false },
);
/** Completions of several tasks in one request: each one as the single-task endpoint would do it. */
export const CompleteManyBody = Type.Object(
  {
    tasks: Type.Array(
      Type.Object(
        { task_id: Type.String({ maxLength: 200 }), lease_token: LeaseToken, result: Type.Record(Type.String(), Type.Any()) },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 1024 },
    ),
  },
  { additionalProperties: false },
);
export type CompleteManyBody = Static<typeof CompleteManyBody>;

export const CompleteManyResponse = Type.Object({
  results: Type.Array(
    Type.Object({
      task_id: Type.String(),
      outcome: Type.Union([Type.Literal('completed'), Type.Literal('cancelled'), Type.Literal('stale')], {
        description: 'completed: recorded; cancelled or stale: the lease was no longer held and nothing changed',
      }),
      status: Type.Union([Type.String(), Type.Null()], { description: "The task's status now (null if it no longer exists)" }),
    }),
    { description: 'One per task, in request order' },
  ),
});

export const FailBody = Type.Object(
  {
    lease_token: LeaseToken,
    error: TaskErrorSchema,
    retryable: Type.Optional(Type.Boolean({ description: 'Requeue while attempts remain' })),
  },
  { additionalProperties: false },
);
export const EventsBody = Type.Object(
  {
    lease_token: LeaseToken,
    events: Type.Array(
      Type.Object(
        { text: Type.Optional(Type.String({ maxLength: 65_536 })), progress: Type.Optional(Type.Number({ minimum: 0, maximum: 1 })) },
        { additionalProperties: false },
      ),
      { minItems: 1, maxItems: 1000 },
    ),
  },
  { additionalProperties: false },
);
export const ReleaseBody = Type.Object({ lease_token: LeaseToken }, { additionalProperties: false });

export const LeaseWriteResponse = Type.Object({ task_id: Type.String(), status: Type.String() });

export const ArtifactMetaSchema = Type.Object({
  name: Type.String(),
  url: Type.String(),
  content_type: Type.String(),
  size: Type.Integer(),
});

export const WorkerViewSchema = Type.Object({
  worker_id: Type.String(),
  status: Type.Unsafe<'idle' | 'busy' | 'offline'>({ type: 'string', enum: ['idle', 'busy', 'offline'] }),
  models: Type.Array(Type.Object({ task_type: Type.String(), model_name: Type.String(), concurrency: Type.Optional(Type.Integer()) })),
  concurrency: Type.Integer(),
  current_tasks: Type.Array(Type.String()),
  hardware: Type.Record(Type.String(), Type.Any()),
  registered_at: Type.String({ format: 'date-time' }),
  last_heartbeat: Type.String({ format: 'date-time' }),
});
export const WorkersResponse = Type.Object({ workers: Type.Array(WorkerViewSchema), total: Type.Integer() });

export const ModelViewSchema = Type.Object({
  model_name: Type.String(),
  task_types: Type.Array(Type.String()),
  engine: Type.String(),
  description: Type.Union([Type.String(), Type.Null()]),
  in_catalog: Type.Boolean(),
  available: Type.Boolean({ description: 'A live worker serves it' }),
  workers: Type.Array(Type.String()),
  mean_run_seconds: Type.Record(Type.String(), Type.Number()),
});
export const ModelsResponse = Type.Object({ models: Type.Array(ModelViewSchema) });

export type WireModel = { task_type: string; model_name: string; concurrency?: number };

/** A registered model as stored and sent: snake_case, `concurrency` only where set. */
export const modelToWire = (m: RegisteredModel): WireModel =>
  m.concurrency === undefined ? { task_type: m.taskType, model_name: m.modelName } : { task_type: m.taskType, model_name: m.modelName, concurrency: m.concurrency };

export const modelFromWire = (m: WireModel): RegisteredModel =>
  m.concurrency === undefined ? { taskType: m.task_type as TaskType, modelName: m.model_name } : { taskType: m.task_type as TaskType, modelName: m.model_name, concurrency: m.concurrency };
