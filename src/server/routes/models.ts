import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { AppError } from '../../core/errors.js';
import { ErrorResponse } from '../../core/schemas.js';
import type { TaskType } from '../../core/task.js';
import { ARTIFACT_NAME_PATTERN, ModelsResponse } from '../../core/worker-protocol.js';

export const modelAndArtifactRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { queue, catalog } = app.services;

  app.get(
    '/models',
    {
      schema: {
        tags: ['models'],
        summary: 'List models',
        description: 'Catalog entries and models advertised by live workers, with the workers serving each.',
        response: { 200: ModelsResponse, 429: ErrorResponse },
      },
    },
    async () => {
      await queue.workers.refresh();
      const names = new Map<string, { taskTypes: Set<TaskType>; engine: string; description: string | null; inCatalog: boolean }>();
      for (const e of catalog.entries()) names.set(e.name, { taskTypes: new Set(e.taskTypes), engine: e.engine, description: e.description ?? null, inCatalog: true });
      for (const m of queue.workers.liveModels()) {
        const entry = names.get(m.modelName) ?? { taskTypes: new Set<TaskType>(), engine: 'remote', description: null, inCatalog: false };
        entry.taskTypes.add(m.taskType);
        names.set(m.modelName, entry);
      }
      const models = [...names.entries()].map(([name, e]) => {
        const taskTypes = [...e.taskTypes];
        const workers = [...new Set(taskTypes.flatMap((t) => queue.workers.serving({ taskType: t, modelName: name })))];
        return {
          model_name: name,
          task_types: taskTypes,
          engine: e.engine,
          description: e.description,
          in_catalog: e.inCatalog,
          available: workers.length > 0,
          workers,
          mean_run_seconds: Object.fromEntries(taskTypes.map((t) => [t, queue.eta.meanRunMs({ taskType: t, modelName: name }) / 1000])),
        };
      });
      return { models };
    },
  );

  app.get(
    '/tasks/:task_id/artifacts/:name',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Download an artifact',
        description: 'A binary output of a task (audio, image), with its content type.',
        params: Type.Object({ task_id: Type.String({ minLength: 1, maxLength: 200 }), name: Type.String({ pattern: ARTIFACT_NAME_PATTERN }) }),
        response: { 404: ErrorResponse, 422: ErrorResponse, 429: ErrorResponse },
      },
    },
    async (request, reply) => {
      const { task_id: id, name } = request.params;
      const artifact = await queue.store.getArtifact(id, name);
      if (!artifact) throw new AppError('ARTIFACT_NOT_FOUND', `Task ${id} has no artifact named ${name}`, { details: { task_id: id, name } });
      reply
        .header('content-type', artifact.contentType)
        .header('content-length', artifact.size)
        .header('cache-control', 'private, max-age=31536000, immutable')
        .header('content-disposition', `inline; filename="${name}"`);
      return reply.send(artifact.data as never);
    },
  );
};
