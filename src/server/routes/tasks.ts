import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { AppError } from '../../core/errors.js';
import {
  CancelTaskResponse,
  CreateTaskBody,
  CreateTaskResponse,
  ErrorResponse,
  ListTasksQuery,
  ListTasksResponse,
  TaskIdParams,
  TaskResponse,
} from '../../core/schemas.js';
import { createHash } from 'node:crypto';
import type { FastifyReply } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { TaskRecord } from '../../core/task.js';
import { validateWebhookUrl } from '../../webhooks/url-guard.js';
import { preferWaitMs } from '../prefer.js';
import { createdJson, iso, summaryToJson, taskToJson } from '../serialize.js';

const IDEMPOTENCY_KEY_RE = /^[\x21-\x7e]{1,255}$/;

/** Canonical JSON (sorted keys), so the same request in another key order is the same request. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v as object)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v);
}

const fingerprint = (body: unknown): string => createHash('sha256').update(canonical(body)).digest('hex');

/** Aborts when the client goes away, so a waiting request stops waiting. */
function closedSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => controller.abort());
  return controller.signal;
}

const errors = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, ErrorResponse]));

export const taskRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { queue, catalog, inputValidator, config } = app.services;
  const deliveriesOf = (task: TaskRecord) => (task.webhookUrl ? queue.store.listDeliveries(task.id) : Promise.resolve([]));

  app.post(
    '/tasks',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Create task',
        description:
          'Creates a new AI inference task and queues it for execution. `Idempotency-Key` makes retries safe: the same key with the same body returns the same task (`Idempotent-Replayed: true`), with another body 409 IDEMPOTENCY_KEY_REUSED. `Prefer: wait=N` answers with the whole task once it is final or after N seconds.',
        body: CreateTaskBody,
        headers: Type.Object({
          'idempotency-key': Type.Optional(Type.String({ description: 'Makes retries of this request safe (kept 24 h)' })),
          prefer: Type.Optional(Type.String({ description: 'wait=N: answer when the task is final or after N seconds' })),
        }),
        response: { 201: CreateTaskResponse, ...errors(400, 409, 413, 415, 422, 429, 503) },
      },
    },
    async (request, reply) => {
      const body = request.body;
      const entry = catalog.get(body.model_name);
      // A model is known from the catalog, or because a live worker advertises it.
      const taskTypes = entry ? entry.taskTypes : queue.workers.liveTaskTypes(body.model_name);
      if (taskTypes.length === 0) {
        throw new AppError('MODEL_NOT_FOUND', `Model "${body.model_name}" is not in the model catalog and no live worker serves it`, {
          details: {
            field: 'model_name',
            reason: 'Model not found',
            available: [...new Set([...catalog.entries().map((e) => e.name), ...queue.workers.liveModels().map((m) => m.modelName)])].slice(0, 50),
          },
        });
      }
      if (!taskTypes.includes(body.task_type)) {
        throw new AppError('MODEL_NOT_FOUND', `Model "${body.model_name}" does not serve ${body.task_type}; it serves ${taskTypes.join(', ')}`, {
          details: { field: 'model_name', reason: `Model does not serve ${body.task_type}`, task_types: taskTypes },
        });
      }
      inputValidator.validate(body.task_type, body.input_data, body.parameters);
      if (body.webhook_url !== undefined) {
        if (!config.webhookSecret) {
          throw new AppError('VALIDATION_ERROR', 'Webhooks are not enabled on this server (TASK_MANAGER_WEBHOOK_SECRET is unset)', {
            details: { field: 'webhook_url', reason: 'Webhooks disabled' },
          });
        }
        validateWebhookUrl(body.webhook_url, { allowPrivate: config.webhookAllowPrivate });
      } else if (body.webhook_events !== undefined) {
        throw new AppError('VALIDATION_ERROR', 'webhook_events needs a webhook_url', { details: { field: 'webhook_events', reason: 'Needs webhook_url' } });
      }
      const model = { taskType: body.task_type, modelName: body.model_name };
      if (config.rejectWithoutWorker && queue.workers.slots(model) === 0) {
        throw new AppError('WORKER_UNAVAILABLE', `No worker serves ${body.model_name} right now`, {
          details: { model_name: body.model_name, task_type: body.task_type },
        });
      }
      const key = request.headers['idempotency-key'];
      if (key !== undefined && (typeof key !== 'string' || !IDEMPOTENCY_KEY_RE.test(key))) {
        throw new AppError('VALIDATION_ERROR', 'Idempotency-Key must be 1-255 visible ASCII characters', {
          details: { field: 'Idempotency-Key', reason: 'Invalid header' },
        });
      }
      const waitMs = preferWaitMs(request, reply, config.maxWaitSeconds);
      const created = await queue.create(
        {
          taskType: body.task_type,
          modelName: body.model_name,
          inputData: body.input_data,
          parameters: body.parameters ?? {},
          priority: body.priority,
          maxAttempts: body.max_attempts,
          timeoutSeconds: body.timeout_seconds,
          webhookUrl: body.webhook_url,
          webhookEvents: body.webhook_events,
        },
        key === undefined ? undefined : { key, fingerprint: fingerprint(body), ttlMs: config.idempotencyTtlSeconds * 1000 },
      );
      reply.code(201).header('location', `/tasks/${created.task.id}`);
      if (created.replayed) reply.header('idempotent-replayed', 'true');
      if (waitMs !== null) {
        const task = await queue.waitUntilFinal(created.task.id, waitMs, closedSignal(reply));
        return taskToJson(task, await queue.estimate(task), await deliveriesOf(task));
      }
      // The hot path's answer, written out: the same text the response schema's serializer gives.
      // (Typed as the schema's object; Fastify sends text with a JSON content type as it is.)
      reply.header('content-type', 'application/json; charset=utf-8');
      return reply.send(createdJson(created.task, created.estimatedCompletion, created.queuePosition) as never);
    },
  );

  app.get(
    '/tasks/:task_id',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Get task status',
        description:
          'Retrieves the current status and details of a specific task. With `Prefer: wait=N` the answer comes when the task is final or after N seconds (capped), whichever is first.',
        params: TaskIdParams,
        response: { 200: TaskResponse, ...errors(404, 429, 503) },
      },
    },
    async (request, reply) => {
      const waitMs = preferWaitMs(request, reply, config.maxWaitSeconds);
      const task =
        waitMs === null ? await queue.get(request.params.task_id) : await queue.waitUntilFinal(request.params.task_id, waitMs, closedSignal(reply));
      return taskToJson(task, await queue.estimate(task), await deliveriesOf(task));
    },
  );

  app.get(
    '/tasks',
    {
      schema: {
        tags: ['tasks'],
        summary: 'List tasks',
        description: 'Retrieves a list of tasks with optional filtering and pagination.',
        querystring: ListTasksQuery,
        response: { 200: ListTasksResponse, ...errors(422, 429, 503) },
      },
    },
    async (request) => {
      const q = request.query;
      const limit = q.limit ?? 50;
      const offset = q.offset ?? 0;
      const { tasks, total } = await queue.list({
        status: q.status,
        taskType: q.task_type,
        modelName: q.model_name,
        limit,
        offset,
        sortBy: q.sort_by ?? 'created_at',
        sortOrder: q.sort_order ?? 'desc',
      });
      return { tasks: tasks.map(summaryToJson), total, limit, offset };
    },
  );

  app.delete(
    '/tasks/:task_id',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Cancel task',
        description:
          'Cancels a pending or running task. A running task\'s engine is stopped. Cancelling a cancelled task returns it again.',
        params: TaskIdParams,
        response: { 200: CancelTaskResponse, ...errors(404, 409, 429, 503) },
      },
    },
    async (request) => {
      const task = await queue.cancel(request.params.task_id);
      return { task_id: task.id, status: task.status, cancelled_at: iso(task.cancelledAt)! };
    },
  );
};
