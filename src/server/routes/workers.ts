import { timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsyncTypebox, TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyRequest } from 'fastify';
import { AppError } from '../../core/errors.js';
import { ErrorResponse } from '../../core/schemas.js';
import type { LeaseOutcome } from '../../core/store.js';
import type { ModelRef, TaskType } from '../../core/task.js';
import {
  ArtifactMetaSchema,
  ArtifactUploadParams,
  ArtifactUploadQuery,
  CompleteBody,
  CompleteManyBody,
  CompleteManyResponse,
  EMBEDDED_WORKER_PREFIX,
  EventsBody,
  FailBody,
  HeartbeatBody,
  HeartbeatResponse,
  LeaseBody,
  LeaseResponse,
  LeaseWriteResponse,
  modelFromWire,
  modelToWire,
  RegisterWorkerBody,
  RegisterWorkerResponse,
  ReleaseBody,
  WorkerIdParams,
  WorkersResponse,
  WorkerTaskParams,
} from '../../core/worker-protocol.js';
import { artifactUrl } from '../../worker/in-process-transport.js';
import { defaultWorkerId } from '../../worker/worker.js';
import { iso } from '../serialize.js';

const errors = (...codes: number[]) => Object.fromEntries(codes.map((c) => [c, ErrorResponse]));

/** The registered models a lease asks for: each must be one of them. */
function scopeModels(registered: ModelRef[], asked: Array<{ task_type: TaskType; model_name: string }>): ModelRef[] {
  const out: ModelRef[] = [];
  for (const [i, a] of asked.entries()) {
    const m = registered.find((r) => r.taskType === a.task_type && r.modelName === a.model_name);
    if (!m) {
      throw new AppError('VALIDATION_ERROR', `models[${i}] (${a.task_type} ${a.model_name}) is not one of the models this worker registered`, {
        details: { field: `models[${i}]`, reason: 'Not registered by this worker' },
      });
    }
    if (!out.includes(m)) out.push(m);
  }
  return out;
}

/** How long a wake that found no waiting poll applies to the worker's next one. */
const WAKE_KEPT_MS = 5_000;

function leaseResult(out: LeaseOutcome, id: string) {
  if (out.kind === 'ok') return { task_id: id, status: out.task.status };
  throw new AppError('LEASE_CONFLICT', out.kind === 'cancelled' ? `Task ${id} was cancelled` : `Lease on task ${id} is no longer held`, {
    details: { task_id: id, reason: out.kind, status: out.task?.status ?? null },
  });
}

/** The remote worker protocol: register, long-poll leases, heartbeat, report, upload artifacts. */
export const workerRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { queue, config } = app.services;
  const leaseMs = config.leaseSeconds * 1000;
  const maxWaitMs = Math.max(1000, Math.floor(leaseMs / 2));
  const token = config.workerToken ? Buffer.from(config.workerToken) : null;

  const authenticate = async (request: FastifyRequest) => {
    if (!token) throw new AppError('UNAUTHORIZED', 'Remote workers are disabled: set TASK_MANAGER_WORKER_TOKEN on the server');
    const header = request.headers.authorization ?? '';
    const given = Buffer.from(header.startsWith('Bearer ') ? header.slice(7) : '');
    if (given.length !== token.length || !timingSafeEqual(given, token)) {
      throw new AppError('UNAUTHORIZED', 'Missing or invalid worker token', { headers: { 'www-authenticate': 'Bearer' } });
    }
  };

  /** Each worker's lease poll waiting on this node, so a `wake` can answer it early. */
  const waitingPolls = new Map<string, AbortController>();
  /** Wakes that found no poll waiting: the worker's next poll answers at once. */
  const wokenAt = new Map<string, number>();
  /** Answers the worker's poll waiting on this node, or else makes its next poll here answer at once. */
  const wake = (workerId: string): boolean => {
    const waiting = waitingPolls.get(workerId);
    if (waiting) waiting.abort();
    else wokenAt.set(workerId, Date.now());
    return waiting !== undefined;
  };
  // Behind a load balancer the wake and the poll it is for may reach different nodes.
  const offWake = queue.bus.onWorkerWake(wake);
  app.addHook('onClose', async () => offWake());

  const known = async (workerId: string) => {
    const worker = await queue.workers.get(workerId);
    if (!worker) throw new AppError('WORKER_NOT_FOUND', `Worker ${workerId} is not registered (or went offline): register again`);
    await queue.workers.touch(workerId);
    return worker;
  };

  app.get(
    '/workers',
    {
      schema: {
        tags: ['workers'],
        summary: 'List workers',
        description: 'Registered workers with their status (idle, busy, offline), models, current tasks and last heartbeat.',
        response: { 200: WorkersResponse, ...errors(429, 503) },
      },
    },
    async () => {
      const workers = (await queue.workers.list()).map((w) => ({
        worker_id: w.id,
        status: w.status,
        models: w.models.map(modelToWire),
        concurrency: w.concurrency,
        current_tasks: w.currentTasks,
        hardware: w.hardware,
        registered_at: iso(w.registeredAt)!,
        last_heartbeat: iso(w.lastSeenAt)!,
      }));
      return { workers, total: workers.length };
    },
  );

  await app.register(async (scope) => {
    const protocol = scope.withTypeProvider<TypeBoxTypeProvider>();
    protocol.addHook('onRequest', authenticate);
    // Artifacts arrive as raw bytes of any media type.
    protocol.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: config.artifactLimitBytes }, (_req, body, done) => done(null, body));

    protocol.post(
      '/workers/register',
      {
        schema: {
          tags: ['workers'],
          summary: 'Register a worker',
          description: 'Announces a worker, the models it serves, its concurrency and hardware. Registering again updates it.',
          body: RegisterWorkerBody,
          response: { 200: RegisterWorkerResponse, ...errors(401, 422, 503) },
        },
      },
      async (request) => {
        const b = request.body;
        if (b.worker_id?.startsWith(EMBEDDED_WORKER_PREFIX)) {
          throw new AppError('VALIDATION_ERROR', `Worker ids starting with ${EMBEDDED_WORKER_PREFIX} belong to the servers' in-process workers`, {
            details: { field: 'worker_id', reason: 'Reserved prefix' },
          });
        }
        const seen = new Set<string>();
        for (const [i, m] of b.models.entries()) {
          const k = `${m.task_type}\u0000${m.model_name}`;
          if (seen.has(k)) {
            throw new AppError('VALIDATION_ERROR', `models[${i}] (${m.task_type} ${m.model_name}) is listed twice`, {
              details: { field: `models[${i}]`, reason: 'Duplicate model' },
            });
          }
          seen.add(k);
        }
        const w = await queue.workers.register({
          id: b.worker_id ?? defaultWorkerId(),
          models: b.models.map(modelFromWire),
          concurrency: b.concurrency,
          hardware: b.hardware ?? {},
        });
        if (b.running_task_ids) {
          const taken = await queue.recoverLeasesOf(w.id, b.running_task_ids);
          if (taken.requeued || taken.failed) request.log.info({ ...taken, worker_id: w.id }, 'requeued the tasks an earlier process of this worker held');
        }
        return {
          worker_id: w.id,
          lease_seconds: config.leaseSeconds,
          heartbeat_seconds: Math.max(1, Math.floor(config.leaseSeconds / 3)),
          max_wait_seconds: maxWaitMs / 1000,
        };
      },
    );

    protocol.delete(
      '/workers/:worker_id',
      { schema: { tags: ['workers'], summary: 'Unregister a worker', params: WorkerIdParams, response: { 204: { type: 'null' }, ...errors(401, 503) } } },
      async (request, reply) => {
        await queue.workers.unregister(request.params.worker_id);
        wokenAt.delete(request.params.worker_id);
        return reply.code(204).send();
      },
    );

    protocol.post(
      '/workers/:worker_id/lease',
      {
        schema: {
          tags: ['workers'],
          summary: 'Lease tasks (long-poll)',
          description:
            'Returns as soon as a task for one of the worker\'s models is leased to it, or a task it is running is cancelled, or after wait_seconds (capped at max_wait_seconds). A lease that cannot be delivered because the worker disconnected is given back.',
          params: WorkerIdParams,
          body: LeaseBody,
          response: { 200: LeaseResponse, ...errors(401, 404, 422, 503) },
        },
      },
      async (request, reply) => {
        const workerId = request.params.worker_id;
        const worker = await known(workerId);
        const { max_tasks: maxTasks, wait_seconds: waitSeconds, running = [], wake: wakeAsked = false } = request.body;
        if (wakeAsked && !wake(workerId)) queue.bus.wakeWorker(workerId);
        const models = request.body.models === undefined ? worker.models : scopeModels(worker.models, request.body.models);
        const waitMs = Math.min(maxWaitMs, waitSeconds === undefined ? maxWaitMs : waitSeconds * 1000);

        const controller = new AbortController();
        let gone = false;
        reply.raw.once('close', () => {
          if (!reply.raw.writableFinished) {
            gone = true;
            controller.abort();
          }
        });
        const cancelled = new Set<string>();
        const off = queue.bus.subscribe((e) => {
          if (e.type === 'cancelled' && e.task.workerId === workerId) {
            cancelled.add(e.task.id);
            controller.abort();
          }
        });
        try {
          // Cancels that happened since the worker last asked.
          for (const id of await queue.store.cancelledAmong(workerId, running)) cancelled.add(id);
          let leased: Awaited<ReturnType<typeof queue.leaseWait>> = [];
          if (cancelled.size > 0) {
            // Answer at once with the cancels, and with whatever work is ready now.
            if (maxTasks > 0) leased = await queue.lease(workerId, models, maxTasks);
          } else {
            // A wake that came before this poll: answer with what there is now, without waiting.
            const woken = wakeAsked ? undefined : wokenAt.get(workerId);
            if (woken !== undefined) wokenAt.delete(workerId);
            if (waitMs > 0 && !wakeAsked) waitingPolls.set(workerId, controller);
            if (maxTasks > 0 && woken !== undefined && Date.now() - woken < WAKE_KEPT_MS) {
              leased = await queue.lease(workerId, models, maxTasks);
            } else if (maxTasks > 0) {
              leased = await queue.leaseWait(workerId, models, maxTasks, waitMs, controller.signal);
            } else {
              await new Promise<void>((resolve) => {
                const t = setTimeout(resolve, waitMs);
                controller.signal.addEventListener('abort', () => (clearTimeout(t), resolve()), { once: true });
              });
            }
          }
          if (gone) {
            for (const l of leased) await queue.release(l.task.id, l.leaseToken);
            return reply;
          }
          return {
            tasks: leased.map(({ task, leaseToken }) => ({
              task_id: task.id,
              lease_token: leaseToken,
              task_type: task.taskType,
              model_name: task.modelName,
              input_data: task.inputData,
              parameters: task.parameters,
              priority: task.priority,
              attempts: task.attempts,
              timeout_seconds: task.timeoutMs / 1000,
              started_at: iso(task.startedAt)!,
            })),
            cancelled: [...cancelled],
          };
        } finally {
          off();
          if (waitingPolls.get(workerId) === controller) waitingPolls.delete(workerId);
        }
      },
    );

    protocol.post(
      '/workers/:worker_id/heartbeat',
      {
        schema: {
          tags: ['workers'],
          summary: 'Heartbeat running tasks',
          description: 'Extends the leases of the listed tasks and records their progress. The reply names tasks to stop.',
          params: WorkerIdParams,
          body: HeartbeatBody,
          response: { 200: HeartbeatResponse, ...errors(401, 404, 422, 503) },
        },
      },
      async (request) => {
        await known(request.params.worker_id);
        const cancelled: string[] = [];
        const lost: string[] = [];
        // Started together, they join one group commit.
        const outs = await Promise.all(request.body.tasks.map((t) => queue.heartbeat(t.task_id, t.lease_token, t.progress)));
        outs.forEach((out, i) => {
          if (out.kind === 'cancelled') cancelled.push(request.body.tasks[i].task_id);
          else if (out.kind === 'stale') lost.push(request.body.tasks[i].task_id);
        });
        return { cancelled, lost };
      },
    );

    protocol.post(
      '/workers/:worker_id/tasks/:task_id/complete',
      {
        schema: {
          tags: ['workers'],
          summary: 'Complete a task',
          description: 'Records the result under the lease token. A stale or cancelled lease gets 409 LEASE_CONFLICT and changes nothing.',
          params: WorkerTaskParams,
          body: CompleteBody,
          response: { 200: LeaseWriteResponse, ...errors(401, 404, 409, 422, 503) },
        },
      },
      async (request) => {
        await known(request.params.worker_id);
        const { task_id: id } = request.params;
        return leaseResult(await queue.complete(id, request.body.lease_token, request.body.result), id);
      },
    );

    protocol.post(
      '/workers/:worker_id/complete',
      {
        schema: {
          tags: ['workers'],
          summary: 'Complete several tasks',
          description:
            'Records the results of up to 1,024 tasks, each under its lease token, in one request (they commit together). Each gets its own outcome: a stale or cancelled lease changes nothing for that task and does not fail the others.',
          params: WorkerIdParams,
          body: CompleteManyBody,
          response: { 200: CompleteManyResponse, ...errors(401, 404, 422, 503) },
        },
      },
      async (request) => {
        await known(request.params.worker_id);
        // Started together, they join one group commit.
        const outs = await Promise.all(request.body.tasks.map((t) => queue.complete(t.task_id, t.lease_token, t.result)));
        return {
          results: outs.map((out, i) => ({
            task_id: request.body.tasks[i].task_id,
            outcome: out.kind === 'ok' ? ('completed' as const) : out.kind,
            status: out.task?.status ?? null,
          })),
        };
      },
    );

    protocol.post(
      '/workers/:worker_id/tasks/:task_id/fail',
      {
        schema: {
          tags: ['workers'],
          summary: 'Fail a task',
          description: 'Records an error under the lease token. retryable=true requeues the task while attempts remain.',
          params: WorkerTaskParams,
          body: FailBody,
          response: { 200: LeaseWriteResponse, ...errors(401, 404, 409, 422, 503) },
        },
      },
      async (request) => {
        await known(request.params.worker_id);
        const { task_id: id } = request.params;
        const b = request.body;
        return leaseResult(await queue.fail(id, b.lease_token, b.error, b.retryable ?? false), id);
      },
    );

    protocol.post(
      '/workers/:worker_id/tasks/:task_id/events',
      {
        schema: {
          tags: ['workers'],
          summary: 'Stream output and progress',
          description: 'Appends generated text and progress of a running task to its event log; subscribers (WebSocket, SSE) receive them in order.',
          params: WorkerTaskParams,
          body: EventsBody,
          response: { 200: LeaseWriteResponse, ...errors(401, 404, 409, 422, 503) },
        },
      },
      async (request) => {
        await known(request.params.worker_id);
        const { task_id: id } = request.params;
        const kind = await queue.appendEvents(id, request.body.lease_token, request.body.events);
        if (kind === 'ok') return { task_id: id, status: 'running' };
        throw new AppError('LEASE_CONFLICT', kind === 'cancelled' ? `Task ${id} was cancelled` : `Lease on task ${id} is no longer held`, {
          details: { task_id: id, reason: kind },
        });
      },
    );

    protocol.post(
      '/workers/:worker_id/tasks/:task_id/release',
      {
        schema: {
          tags: ['workers'],
          summary: 'Give a task back',
          description: 'Returns a leased task to the queue without spending an attempt (worker shutting down).',
          params: WorkerTaskParams,
          body: ReleaseBody,
          response: { 200: LeaseWriteResponse, ...errors(401, 404, 409, 422, 503) },
        },
      },
      async (request) => {
        await known(request.params.worker_id);
        const { task_id: id } = request.params;
        return leaseResult(await queue.release(id, request.body.lease_token), id);
      },
    );

    protocol.put(
      '/workers/:worker_id/tasks/:task_id/artifacts/:name',
      {
        schema: {
          tags: ['workers'],
          summary: 'Upload an artifact',
          description: 'Stores a binary output (audio, image) of a task the worker holds; the body is the raw bytes with their Content-Type.',
          params: ArtifactUploadParams,
          querystring: ArtifactUploadQuery,
          response: { 201: ArtifactMetaSchema, ...errors(401, 404, 409, 413, 422, 503) },
        },
      },
      async (request, reply) => {
        await known(request.params.worker_id);
        const { task_id: id, name } = request.params;
        const task = await queue.store.getTask(id);
        if (!task) throw new AppError('TASK_NOT_FOUND', `Task ${id} not found`);
        if (task.status !== 'running' || task.leaseToken !== request.query.lease_token) {
          throw new AppError('LEASE_CONFLICT', `Lease on task ${id} is no longer held`, { details: { task_id: id, reason: 'stale', status: task.status } });
        }
        const data = Buffer.isBuffer(request.body) ? request.body : Buffer.from(JSON.stringify(request.body ?? ''));
        const contentType = (request.headers['content-type'] ?? 'application/octet-stream').split(';')[0].trim();
        const meta = await queue.store.putArtifact({ taskId: id, name, contentType, data }, Date.now());
        reply.code(201);
        return { name: meta.name, url: artifactUrl(id, meta.name), content_type: meta.contentType, size: meta.size };
      },
    );
  });
};
