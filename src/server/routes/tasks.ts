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
import { iso, summaryToJson, taskToJson } from '../serialize.js';

const errors = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, ErrorResponse]));

export const taskRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { queue, catalog, inputValidator, config } = app.services;

  app.post(
    '/tasks',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Create task',
        description: 'Creates a new AI inference task and queues it for execution.',
        body: CreateTaskBody,
        response: { 201: CreateTaskResponse, ...errors(400, 413, 415, 422, 429, 503) },
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
      const model = { taskType: body.task_type, modelName: body.model_name };
      if (config.rejectWithoutWorker && queue.workers.slots(model) === 0) {
        throw new AppError('WORKER_UNAVAILABLE', `No worker serves ${body.model_name} right now`, {
          details: { model_name: body.model_name, task_type: body.task_type },
        });
      }
      const { task, estimatedCompletion, queuePosition } = await queue.create({
        taskType: body.task_type,
        modelName: body.model_name,
        inputData: body.input_data,
        parameters: body.parameters ?? {},
        priority: body.priority,
        maxAttempts: body.max_attempts,
        timeoutSeconds: body.timeout_seconds,
      });
      reply.code(201).header('location', `/tasks/${task.id}`);
      return {
        task_id: task.id,
        status: task.status,
        task_type: task.taskType,
        model_name: task.modelName,
        priority: task.priority,
        created_at: iso(task.createdAt)!,
        estimated_completion: iso(estimatedCompletion),
        queue_position: queuePosition,
      };
    },
  );

  app.get(
    '/tasks/:task_id',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Get task status',
        description: 'Retrieves the current status and details of a specific task.',
        params: TaskIdParams,
        response: { 200: TaskResponse, ...errors(404, 429, 503) },
      },
    },
    async (request) => {
      const task = await queue.get(request.params.task_id);
      return taskToJson(task, await queue.estimate(task));
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
