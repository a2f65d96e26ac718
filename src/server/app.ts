import type { Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, isAbsolute, resolve } from 'node:path';
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { Ajv } from 'ajv';
import { ModelCatalog } from '../core/catalog.js';
import type { Engine } from '../core/engine.js';
import { LocalEventBus, type EventBus } from '../core/events.js';
import { newRequestId } from '../core/ids.js';
import { InputValidator } from '../core/inputs.js';
import type { TaskStore } from '../core/store.js';
import { parseDatabaseUrl, type Config } from '../config.js';
import { LeaseReaper } from '../scheduler/lease-reaper.js';
import { TaskQueue } from '../scheduler/task-queue.js';
import { lockDatabase } from '../store/sqlite/server-lock.js';
import { SqliteTaskStore } from '../store/sqlite/sqlite-store.js';
import { PgEventBus } from '../store/postgres/pg-event-bus.js';
import { PgRateLimitStore } from '../store/postgres/pg-rate-limit-store.js';
import { poolConfig, PostgresTaskStore } from '../store/postgres/postgres-store.js';
import { EMBEDDED_WORKER_PREFIX } from '../core/worker-protocol.js';
import { InProcessTransport } from '../worker/in-process-transport.js';
import { Worker, type ServedModel } from '../worker/worker.js';
import { closeEngines, createEngines } from '../engines/index.js';
import { WebhookDispatcher } from '../webhooks/dispatcher.js';
import { clientError, frameworkError, installErrorHandling, MAX_PARAM_LENGTH } from './error-handling.js';
import { taskToJson } from './serialize.js';
import { Metrics } from './metrics.js';
import { requestLogger } from './request-log.js';
import { installRateLimit, MemoryRateLimitStore, type RateLimitStore } from './rate-limit.js';
import { systemRoutes } from './routes/system.js';
import { modelAndArtifactRoutes } from './routes/models.js';
import { streamRoutes } from './routes/stream.js';
import { taskRoutes } from './routes/tasks.js';
import { workerRoutes } from './routes/workers.js';
import { VERSION } from './version.js';

export interface Services {
  config: Config;
  queue: TaskQueue;
  catalog: ModelCatalog;
  inputValidator: InputValidator;
  metrics: Metrics;
  worker: Worker | null;
}

declare module 'fastify' {
  interface FastifyInstance {
    services: Services;
  }
}

export interface AppOptions {
  config: Config;
  /** Defaults to the store named by config.databaseUrl. */
  store?: TaskStore;
  bus?: EventBus;
  /** Defaults to the catalog file at config.catalogPath. */
  catalog?: ModelCatalog;
  /** Engines by name, for the embedded worker; catalog entries whose engine is missing are not served here. */
  engines?: Record<string, Engine>;
  rateLimitStore?: RateLimitStore;
  logger?: boolean | Record<string, unknown>;
}

const REQUEST_ID_RE = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Observes each finished request's latency where Fastify already reports it, instead of in
 * an `onResponse` hook (running a hook cost more than the observation).
 */
class MetricsLogController extends LogController {
  constructor(private readonly metrics: Metrics) {
    super();
  }

  override requestCompleted(error: Error | null | undefined, request: FastifyRequest, reply: FastifyReply): void {
    this.metrics.observeHttp(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
    super.requestCompleted(error, request, reply);
  }
}

const RATE_LIMIT_EXEMPT = new Set(['/health', '/metrics']);

export interface Backend {
  store: TaskStore;
  bus: EventBus;
  /** Shared across nodes where the store can hold it; else the app keeps counts in memory. */
  rateLimitStore?: RateLimitStore;
  /** Called after the store has closed. */
  release?: () => void;
}

/** Opens the store named by DATABASE_URL with the event bus and rate-limit counters that go with it. */
export async function openBackend(config: Config): Promise<Backend> {
  const target = parseDatabaseUrl(config.databaseUrl);
  if (target.kind === 'sqlite') {
    const lock = target.path === ':memory:' ? null : lockDatabase(target.path);
    try {
      return {
        store: SqliteTaskStore.open({ path: target.path, synchronous: config.sqliteSynchronous, maxBytes: config.sqliteMaxBytes }),
        bus: new LocalEventBus(),
        release: () => lock?.release(),
      };
    } catch (err) {
      lock?.release();
      throw err;
    }
  }
  const opts = { url: target.url, schema: config.pgSchema, poolSize: config.pgPoolSize };
  const store = await PostgresTaskStore.open(opts);
  const bus = new PgEventBus({
    pool: store.pool,
    clientConfig: poolConfig(opts),
    channel: `task_manager_events_${config.pgSchema}`.toLowerCase(),
    hydrate: (id) => store.getTask(id),
    loadLog: (id, afterId, limit) => store.listEvents(id, afterId, limit),
  });
  await bus.whenListening();
  return { store, bus, rateLimitStore: new PgRateLimitStore(store.pool) };
}

/**
 * The in-process worker's id: one per node, and the same after the node restarts, so that
 * the restarted node can take back at once the tasks it held (`TaskQueue.recoverLeasesOf`).
 * A SQLite file has one server; on PostgreSQL the host name and port tell the nodes apart.
 */
export function embeddedWorkerId(config: Config, shared: boolean): string {
  if (config.embeddedWorkerId) return config.embeddedWorkerId;
  if (!shared) return EMBEDDED_WORKER_PREFIX;
  const host = hostname().replace(/[^A-Za-z0-9.-]/g, '-').slice(0, 80) || 'host';
  // Port 0 (chosen at listen) is no name: such a node's old leases expire as a dead worker's do.
  return `${EMBEDDED_WORKER_PREFIX}:${host}:${config.port || randomBytes(4).toString('hex')}`;
}

export function loadCatalog(path: string): ModelCatalog {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new Error(`Cannot read model catalog ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new Error(`Model catalog ${path} is not valid JSON: ${(err as Error).message}`);
  }
  const catalog = ModelCatalog.parse(doc, path);
  // A relative model file is the catalog's neighbour, wherever the server was started from.
  for (const entry of catalog.entries()) {
    const file = entry.options.model_path;
    if (typeof file === 'string' && file.trim() !== '' && !isAbsolute(file)) entry.options.model_path = resolve(dirname(resolve(path)), file);
  }
  return catalog;
}

/** Builds the whole service from a config object. `listen` is the caller's business. */
export async function buildApp(opts: AppOptions): Promise<FastifyInstance> {
  const { config } = opts;
  const catalog = opts.catalog ?? loadCatalog(config.catalogPath);
  const backend: Backend = opts.store ? { store: opts.store, bus: opts.bus ?? new LocalEventBus() } : await openBackend(config);
  const { store, bus } = backend;
  const queue = new TaskQueue(store, bus, {
    defaultMaxAttempts: config.defaultMaxAttempts,
    defaultTimeoutMs: config.defaultTimeoutSeconds * 1000,
    leaseMs: config.leaseSeconds * 1000,
    workerRetentionMs: config.workerRetentionHours * 3_600_000,
    taskRetentionMs: config.taskRetentionHours * 3_600_000,
    idempotencyTtlMs: config.idempotencyTtlSeconds * 1000,
  });
  const metrics = new Metrics();
  // base64 is 4 chars per 3 bytes; allow a data-URL prefix and line breaks on top.
  const inputValidator = new InputValidator(Math.ceil((config.maxImageBytes / 3) * 4 * 1.03) + 128);

  const app = Fastify({
    logger: opts.logger ?? { level: config.logLevel },
    // Fastify reports finished requests to its log controller only when it has a logger.
    logController: opts.logger === false ? undefined : new MetricsLogController(metrics),
    childLoggerFactory: requestLogger,
    bodyLimit: config.bodyLimitBytes,
    trustProxy: config.trustProxy,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID_RE.test(given) ? given : newRequestId();
    },
    forceCloseConnections: 'idle',
    // Longer path parameters reach their route and its schema (422); past this, 400.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    // What fails before routing or in Node's HTTP parser is answered in the API's error format too.
    frameworkErrors: frameworkError,
    clientErrorHandler: clientError,
    // Requests that arrive while closing are served (or get our 503) in the API's error format.
    return503OnClosing: false,
  }).withTypeProvider<TypeBoxTypeProvider>();

  // JSON is the only body this API takes; anything else is 415, not a string to validate.
  app.removeContentTypeParser('text/plain');

  // Bodies are taken as sent; query strings are text, so they are coerced.
  const bodyAjv = new Ajv({ removeAdditional: false, useDefaults: true, coerceTypes: false, allErrors: false, strict: false });
  const queryAjv = new Ajv({ removeAdditional: false, useDefaults: true, coerceTypes: 'array', allErrors: false, strict: false });
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? bodyAjv : queryAjv).compile(schema));

  // The embedded worker runs the engines this build ships unless the caller brings its own.
  const ownEngines = config.embeddedWorker && !opts.engines ? createEngines({ llamaThreads: config.llamaThreads ?? undefined, llamaGpu: config.llamaGpu, llamaParallel: config.llamaParallel }) : null;
  const engines = opts.engines ?? ownEngines;
  let worker: Worker | null = null;
  if (config.embeddedWorker && engines) {
    const served: ServedModel[] = [];
    for (const entry of catalog.entries()) {
      const engine = engines[entry.engine];
      if (!engine) continue;
      for (const taskType of entry.taskTypes) {
        if (engine.taskTypes.includes(taskType)) served.push({ taskType, modelName: entry.name, engine, modelOptions: entry.options });
      }
    }
    if (served.length) {
      const id = embeddedWorkerId(config, store.kind !== 'sqlite');
      worker = new Worker({
        id,
        transport: new InProcessTransport(queue),
        models: served,
        concurrency: config.workerConcurrency,
        heartbeatMs: Math.max(250, Math.floor((config.leaseSeconds * 1000) / 3)),
        leaseWaitMs: Math.max(500, Math.floor((config.leaseSeconds * 1000) / 2)),
        log: app.log.child({ worker_id: id }),
      });
    }
  }

  app.decorate('services', { config, queue, catalog, inputValidator, metrics, worker });
  // Other nodes miss what a failed NOTIFY carried: say so.
  if (bus instanceof PgEventBus && !bus.onError) bus.onError = (err) => app.log.warn({ err }, 'task events could not be sent to or read for other nodes');

  const routes: Array<{ method: string; url: string }> = [];
  app.addHook('onRoute', (r) => {
    for (const m of [r.method].flat()) if (m !== 'HEAD') routes.push({ method: m, url: r.url });
  });
  installErrorHandling(app, () => routes);

  // A connection that never sent a request is not idle to Node: it would hold close() open
  // until the headers timeout (a minute). Nothing is lost by dropping it.
  const unused = new Set<Socket>();
  app.server.on('connection', (s: Socket) => {
    unused.add(s);
    s.once('close', () => unused.delete(s));
  });
  // Callback hooks: an async hook costs a promise and extra ticks on every request.
  app.addHook('onRequest', (request, reply, done) => {
    reply.header('x-request-id', request.id);
    unused.delete(request.raw.socket);
    done();
  });
  if (opts.logger === false) {
    app.addHook('onResponse', (request, reply, done) => {
      metrics.observeHttp(request.method, request.routeOptions.url ?? 'unmatched', reply.statusCode, reply.elapsedTime / 1000);
      done();
    });
  }
  queue.onFinished.add((t) => {
    if (t.startedAt !== null && t.completedAt !== null) metrics.observeProcessing((t.completedAt - t.startedAt) / 1000);
  });

  let rateLimitStore: RateLimitStore | null = null;
  if (config.rateLimit.enabled) {
    rateLimitStore = opts.rateLimitStore ?? backend.rateLimitStore ?? new MemoryRateLimitStore();
    installRateLimit(app, {
      ...config.rateLimit,
      store: rateLimitStore,
      // Workers authenticate with the worker token and poll by design; they are not rate limited.
      exempt: (url, method) => RATE_LIMIT_EXEMPT.has(url.split('?')[0]) || (method !== 'GET' && url.startsWith('/workers/')),
    });
  }

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Task Manager API',
        version: VERSION,
        description: 'Durable task manager for AI inference: create tasks, follow them, cancel them.',
      },
      servers: [{ url: `http://localhost:${config.port}` }],
      tags: [
        { name: 'tasks', description: 'Task management' },
        { name: 'models', description: 'Model catalog and availability' },
        { name: 'workers', description: 'Workers, and the protocol remote workers speak (Bearer worker token)' },
        { name: 'system', description: 'Health and metrics' },
      ],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  await app.register(taskRoutes);
  await app.register(modelAndArtifactRoutes);
  await app.register(workerRoutes);
  await app.register(streamRoutes);
  await app.register(systemRoutes);

  const reaper = new LeaseReaper(queue, { intervalMs: config.reaperIntervalMs, timeoutGraceMs: 5_000 }, app.log);
  // Every node dispatches webhooks; each delivery is claimed by one node at a time.
  const webhooks = config.webhookSecret
    ? new WebhookDispatcher({
        store,
        bus,
        secret: config.webhookSecret,
        allowPrivate: config.webhookAllowPrivate,
        serialize: async (t) => taskToJson(t, await queue.estimate(t)),
        log: app.log,
      })
    : null;

  app.addHook('onReady', async () => {
    await queue.seedEstimates();
    queue.workers.start();
    reaper.start();
    webhooks?.start();
    if (worker) {
      // Whatever this worker id held was running in a process that is gone.
      const taken = await queue.recoverLeasesOf(worker.id);
      if (taken.requeued || taken.failed) app.log.info({ ...taken, worker_id: worker.id }, 'took back the tasks this node held before it restarted');
      await worker.start();
    }
  });
  app.addHook('preClose', async () => {
    for (const s of unused) s.destroy();
  });
  app.addHook('onClose', async () => {
    // Order matters: running work finishes or is requeued before the store closes.
    await worker?.stop(config.shutdownGraceSeconds * 1000);
    if (ownEngines) await closeEngines(ownEngines);
    await reaper.stop();
    await webhooks?.stop();
    queue.close();
    await rateLimitStore?.close();
    await bus.close();
    await store.close();
    backend.release?.();
  });

  return app;
}
