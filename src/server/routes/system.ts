import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { HealthResponse } from '../../core/schemas.js';
import type { CountRow } from '../../core/store.js';
import { VERSION } from '../version.js';

export const systemRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { queue, metrics } = app.services;
  const startedAt = Date.now();

  app.get(
    '/health',
    {
      schema: {
        tags: ['system'],
        summary: 'Health check',
        description: 'Service health and task counts. 503 when the task store cannot serve requests.',
        response: { 200: HealthResponse, 503: HealthResponse },
      },
    },
    async (_request, reply) => {
      let counts: CountRow[] = [];
      let error: string | undefined;
      try {
        await queue.store.ping();
        counts = await queue.store.counts();
      } catch (err) {
        error = err instanceof Error ? err.message : String(err);
      }
      const sum = (status: string) => counts.filter((r) => r.status === status).reduce((n, r) => n + r.current, 0);
      reply.code(error ? 503 : 200);
      return {
        status: error ? ('unhealthy' as const) : ('healthy' as const),
        timestamp: new Date().toISOString(),
        version: VERSION,
        uptime: Math.floor((Date.now() - startedAt) / 1000),
        active_tasks: sum('running'),
        pending_tasks: sum('pending'),
        completed_tasks: sum('completed'),
        failed_tasks: sum('failed'),
        cancelled_tasks: sum('cancelled'),
        store: { kind: queue.store.kind, ok: !error, ...(error ? { error } : {}) },
      };
    },
  );

  app.get(
    '/metrics',
    {
      schema: {
        tags: ['system'],
        summary: 'Prometheus metrics',
        description: 'Prometheus text exposition format.',
        produces: ['text/plain'],
      },
    },
    async (_request, reply) => {
      const counts = await queue.store.counts();
      reply.header('content-type', 'text/plain; version=0.0.4; charset=utf-8');
      return metrics.render(counts, queue.store.commitStats());
    },
  );

  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());
};
