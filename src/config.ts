import { EMBEDDED_WORKER_PREFIX, WORKER_ID_PATTERN } from './core/worker-protocol.js';

/**
 * One validated configuration object: defaults, then environment variables (PORT, HOST,
 * DATABASE_URL and the TASK_MANAGER_ prefix), then CLI flags. Anything unknown or invalid
 * stops start-up with a message naming the setting.
 */
export interface Config {
  port: number;
  host: string;
  databaseUrl: string;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  /** Largest request body accepted, in bytes. */
  bodyLimitBytes: number;
  sqliteSynchronous: 'FULL' | 'NORMAL';
  /** Cap on the SQLite file size in bytes (0: none). */
  sqliteMaxBytes: number;
  /** PostgreSQL connections per node. */
  pgPoolSize: number;
  /** PostgreSQL schema holding this deployment's tables. */
  pgSchema: string;
  catalogPath: string;
  rateLimit: {
    enabled: boolean;
    perMinute: number;
    burst: number;
    burstWindowSeconds: number;
  };
  leaseSeconds: number;
  reaperIntervalMs: number;
  defaultMaxAttempts: number;
  defaultTimeoutSeconds: number;
  /** Run an in-process worker for the catalog's local engines. */
  embeddedWorker: boolean;
  /** The in-process worker's id; null: derived per node (see `embeddedWorkerId` in server/app.ts). */
  embeddedWorkerId: string | null;
  workerConcurrency: number;
  /** How long a worker no longer heard from stays in `GET /workers`. */
  workerRetentionHours: number;
  /** How long a finished task is kept; 0 keeps every task. */
  taskRetentionHours: number;
  shutdownGraceSeconds: number;
  trustProxy: boolean;
  /** Shared secret remote workers present; remote workers are refused while unset. */
  workerToken: string | null;
  /** Largest input image (decoded), in bytes. */
  maxImageBytes: number;
  /** Largest artifact a worker may upload, in bytes. */
  artifactLimitBytes: number;
  /** Longest `Prefer: wait=N` honoured, in seconds. */
  maxWaitSeconds: number;
  /** HMAC-SHA256 key for webhook signatures; tasks with a webhook_url are refused while unset. */
  webhookSecret: string | null;
  /** Let webhooks target loopback and private addresses (off: SSRF guard). */
  webhookAllowPrivate: boolean;
  /** How long an Idempotency-Key is remembered, in seconds. */
  idempotencyTtlSeconds: number;
  /** llama.cpp threads; null = every core. */
  llamaThreads: number | null;
  llamaParallel: number;
  llamaGpu: false | 'auto' | 'cuda' | 'vulkan';
  /** Refuse new tasks with 503 WORKER_UNAVAILABLE when no worker serves the model. */
  rejectWithoutWorker: boolean;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

export function defaultConfig(): Config {
  return {
    port: 8002,
    host: '127.0.0.1',
    databaseUrl: 'sqlite:./data/task-manager.db',
    logLevel: 'info',
    bodyLimitBytes: 16 * 1024 * 1024,
    sqliteSynchronous: 'FULL',
    sqliteMaxBytes: 0,
    pgPoolSize: 10,
    pgSchema: 'task_manager',
    catalogPath: new URL('../config/models.json', import.meta.url).pathname,
    rateLimit: { enabled: true, perMinute: 100, burst: 20, burstWindowSeconds: 10 },
    leaseSeconds: 30,
    reaperIntervalMs: 1000,
    defaultMaxAttempts: 3,
    defaultTimeoutSeconds: 600,
    embeddedWorker: true,
    embeddedWorkerId: null,
    workerConcurrency: 2,
    workerRetentionHours: 24,
    taskRetentionHours: 0,
    shutdownGraceSeconds: 10,
    trustProxy: false,
    rejectWithoutWorker: false,
    workerToken: null,
    llamaThreads: null,
    llamaParallel: 1,
    maxWaitSeconds: 60,
    webhookSecret: null,
    webhookAllowPrivate: false,
    idempotencyTtlSeconds: 86_400,
    llamaGpu: 'auto',
    artifactLimitBytes: 64 * 1024 * 1024,
    maxImageBytes: 10 * 1024 * 1024,
  };
}

type Setter = (c: Config, raw: string, name: string) => void;

const int = (min: number, max: number, set: (c: Config, v: number) => void): Setter => (c, raw, name) => {
  const v = Number(raw);
  if (!/^-?\d+$/.test(raw.trim()) || v < min || v > max) throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  set(c, v);
};
const bool = (set: (c: Config, v: boolean) => void): Setter => (c, raw, name) => {
  const v = raw.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) set(c, true);
  else if (['0', 'false', 'no', 'off'].includes(v)) set(c, false);
  else throw new ConfigError(`${name} must be true or false, got "${raw}"`);
};
const oneOf = <T extends string>(values: readonly T[], set: (c: Config, v: T) => void): Setter => (c, raw, name) => {
  if (!values.includes(raw as T)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got "${raw}"`);
  set(c, raw as T);
};
const str = (set: (c: Config, v: string) => void): Setter => (c, raw, name) => {
  if (!raw.trim()) throw new ConfigError(`${name} must not be empty`);
  set(c, raw.trim());
};

/** Every setting, by environment variable name. CLI flags use the same setters. */
export const SETTINGS: Record<string, { set: Setter; help: string }> = {
  PORT: { set: int(0, 65535, (c, v) => (c.port = v)), help: 'HTTP port (default 8002)' },
  HOST: { set: str((c, v) => (c.host = v)), help: 'Listen address (default 127.0.0.1)' },
  DATABASE_URL: {
    set: str((c, v) => (c.databaseUrl = v)),
    help: 'sqlite:PATH (default sqlite:./data/task-manager.db) or postgres://…',
  },
  TASK_MANAGER_LOG_LEVEL: {
    set: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const, (c, v) => (c.logLevel = v)),
    help: 'Log level (default info)',
  },
  TASK_MANAGER_BODY_LIMIT_BYTES: { set: int(1024, 1 << 30, (c, v) => (c.bodyLimitBytes = v)), help: 'Largest request body (default 16 MiB)' },
  TASK_MANAGER_SQLITE_SYNCHRONOUS: {
    set: oneOf(['FULL', 'NORMAL'] as const, (c, v) => (c.sqliteSynchronous = v)),
    help: 'FULL: acknowledged tasks survive power loss; NORMAL: only a process crash (default FULL)',
  },
  TASK_MANAGER_SQLITE_MAX_BYTES: {
    set: int(0, Number.MAX_SAFE_INTEGER, (c, v) => (c.sqliteMaxBytes = v)),
    help: 'Cap on the SQLite file size; past it creates get 503 as on a full disk (default 0: none)',
  },
  TASK_MANAGER_PG_POOL_SIZE: { set: int(1, 1000, (c, v) => (c.pgPoolSize = v)), help: 'PostgreSQL connections per node (default 10)' },
  TASK_MANAGER_PG_SCHEMA: {
    set: (c, raw, name) => {
      if (!/^[A-Za-z_][A-Za-z0-9_]{0,62}$/.test(raw)) throw new ConfigError(`${name} must be a plain identifier (letters, digits, _), got "${raw}"`);
      c.pgSchema = raw;
    },
    help: 'PostgreSQL schema for the tables (default task_manager)',
  },
  TASK_MANAGER_MODELS: { set: str((c, v) => (c.catalogPath = v)), help: 'Model catalog JSON file (default config/models.json)' },
  TASK_MANAGER_RATE_LIMIT: { set: bool((c, v) => (c.rateLimit.enabled = v)), help: 'Per-IP rate limiting on or off (default on)' },
  TASK_MANAGER_RATE_LIMIT_PER_MINUTE: { set: int(1, 1e9, (c, v) => (c.rateLimit.perMinute = v)), help: 'Requests per minute per IP (default 100)' },
  TASK_MANAGER_RATE_LIMIT_BURST: { set: int(1, 1e9, (c, v) => (c.rateLimit.burst = v)), help: 'Requests per burst window per IP (default 20)' },
  TASK_MANAGER_RATE_LIMIT_BURST_SECONDS: {
    set: int(1, 3600, (c, v) => (c.rateLimit.burstWindowSeconds = v)),
    help: 'Burst window in seconds (default 10)',
  },
  TASK_MANAGER_LEASE_SECONDS: { set: int(1, 3600, (c, v) => (c.leaseSeconds = v)), help: 'Lease length; a worker silent this long loses its task (default 30)' },
  TASK_MANAGER_REAPER_INTERVAL_MS: { set: int(50, 600_000, (c, v) => (c.reaperIntervalMs = v)), help: 'How often expired leases are requeued (default 1000)' },
  TASK_MANAGER_MAX_ATTEMPTS: { set: int(1, 20, (c, v) => (c.defaultMaxAttempts = v)), help: 'Default max_attempts per task (default 3)' },
  TASK_MANAGER_TASK_TIMEOUT_SECONDS: {
    set: int(1, 86_400, (c, v) => (c.defaultTimeoutSeconds = v)),
    help: 'Default timeout_seconds per task (default 600)',
  },
  TASK_MANAGER_EMBEDDED_WORKER: { set: bool((c, v) => (c.embeddedWorker = v)), help: 'Run an in-process worker (default true)' },
  TASK_MANAGER_EMBEDDED_WORKER_ID: {
    set: (c, raw, name) => {
      if (!new RegExp(WORKER_ID_PATTERN).test(raw) || !raw.startsWith(EMBEDDED_WORKER_PREFIX)) {
        throw new ConfigError(`${name} must start with ${EMBEDDED_WORKER_PREFIX} and use only letters, digits and . _ : - (at most 128), got "${raw}"`);
      }
      c.embeddedWorkerId = raw;
    },
    help: 'Id of the in-process worker, one per node; a restarted node requeues at once what this id held (default worker_embedded on SQLite, worker_embedded:<host>:<port> on PostgreSQL)',
  },
  TASK_MANAGER_WORKER_CONCURRENCY: { set: int(1, 1024, (c, v) => (c.workerConcurrency = v)), help: 'Tasks the embedded worker runs at once (default 2)' },
  TASK_MANAGER_WORKER_RETENTION_HOURS: {
    set: int(1, 24 * 365, (c, v) => (c.workerRetentionHours = v)),
    help: 'How long an offline worker holding no task stays listed in GET /workers (default 24)',
  },
  TASK_MANAGER_TASK_RETENTION_HOURS: {
    set: int(0, 24 * 3650, (c, v) => (c.taskRetentionHours = v)),
    help: 'Finished tasks older than this are deleted with their events and artifacts (default 0: kept)',
  },
  TASK_MANAGER_SHUTDOWN_GRACE_SECONDS: {
    set: int(0, 3600, (c, v) => (c.shutdownGraceSeconds = v)),
    help: 'On SIGTERM, how long running tasks may finish before they are requeued (default 10)',
  },
  TASK_MANAGER_TRUST_PROXY: { set: bool((c, v) => (c.trustProxy = v)), help: 'Take client IPs from X-Forwarded-For (default false)' },
  TASK_MANAGER_WORKER_TOKEN: {
    set: (c, raw, name) => {
      if (raw.length < 16) throw new ConfigError(`${name} must be at least 16 characters`);
      c.workerToken = raw;
    },
    help: 'Shared secret for remote workers (Authorization: Bearer …); unset refuses remote workers',
  },
  TASK_MANAGER_MAX_IMAGE_BYTES: {
    set: int(1024, 2 ** 30, (c, v) => (c.maxImageBytes = v)),
    help: 'Largest input image for image_to_text, decoded (default 10 MiB)',
  },
  TASK_MANAGER_ARTIFACT_LIMIT_BYTES: {
    set: int(1024, 2 ** 31, (c, v) => (c.artifactLimitBytes = v)),
    help: 'Largest artifact (audio, image) a worker may upload (default 64 MiB)',
  },
  TASK_MANAGER_MAX_WAIT_SECONDS: { set: int(0, 600, (c, v) => (c.maxWaitSeconds = v)), help: 'Longest Prefer: wait=N honoured (default 60)' },
  TASK_MANAGER_WEBHOOK_SECRET: {
    set: (c, raw, name) => {
      if (raw.length < 16) throw new ConfigError(`${name} must be at least 16 characters`);
      c.webhookSecret = raw;
    },
    help: 'Key for webhook HMAC-SHA256 signatures; webhooks are refused while unset',
  },
  TASK_MANAGER_WEBHOOK_ALLOW_PRIVATE: {
    set: bool((c, v) => (c.webhookAllowPrivate = v)),
    help: 'Allow webhooks to loopback/private addresses (default false)',
  },
  TASK_MANAGER_IDEMPOTENCY_TTL_SECONDS: {
    set: int(60, 30 * 86_400, (c, v) => (c.idempotencyTtlSeconds = v)),
    help: 'How long an Idempotency-Key is remembered (default 86400)',
  },
  TASK_MANAGER_LLAMA_THREADS: { set: int(1, 512, (c, v) => (c.llamaThreads = v)), help: 'llama.cpp threads (default: every core)' },
  TASK_MANAGER_LLAMA_PARALLEL: {
    set: int(1, 64, (c, v) => (c.llamaParallel = v)),
    help: 'llama.cpp generations run at once, decoded together in one context per model (default 1)',
  },
  TASK_MANAGER_LLAMA_GPU: {
    set: (c, raw, name) => {
      const v = raw.trim().toLowerCase();
      if (!['false', 'auto', 'cuda', 'vulkan'].includes(v)) throw new ConfigError(`${name} must be one of false, auto, cuda, vulkan, got "${raw}"`);
      c.llamaGpu = v === 'false' ? false : (v as 'auto' | 'cuda' | 'vulkan');
    },
    help: 'llama.cpp GPU backend: auto (use a GPU when one works, else CPU), cuda, vulkan or false (default auto)',
  },
  TASK_MANAGER_REJECT_WITHOUT_WORKER: {
    set: bool((c, v) => (c.rejectWithoutWorker = v)),
    help: 'Answer 503 WORKER_UNAVAILABLE instead of queueing when no worker serves the model (default false)',
  },
};

/** Read by the client commands (`submit`, `get`, …), not by the server: known, so not refused here. */
const CLIENT_SETTINGS = new Set(['TASK_MANAGER_URL']);

/** Builds the config from the environment, then `overrides` (CLI flags, by setting name). */
export function loadConfig(env: NodeJS.ProcessEnv = process.env, overrides: Record<string, string | undefined> = {}): Config {
  const config = defaultConfig();
  for (const name of Object.keys(env)) {
    if (name.startsWith('TASK_MANAGER_') && !(name in SETTINGS) && !CLIENT_SETTINGS.has(name)) {
      throw new ConfigError(`Unknown setting ${name}; known: ${Object.keys(SETTINGS).filter((k) => k.startsWith('TASK_MANAGER_')).join(', ')}`);
    }
  }
  for (const [name, { set }] of Object.entries(SETTINGS)) {
    const raw = env[name];
    if (raw !== undefined && raw !== '') set(config, raw, name);
  }
  for (const [name, raw] of Object.entries(overrides)) {
    if (raw === undefined) continue;
    const setting = SETTINGS[name];
    if (!setting) throw new ConfigError(`Unknown setting ${name}`);
    setting.set(config, raw, name);
  }
  parseDatabaseUrl(config.databaseUrl);
  return config;
}

export type DatabaseTarget = { kind: 'sqlite'; path: string } | { kind: 'postgres'; url: string };

export function parseDatabaseUrl(url: string): DatabaseTarget {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) return { kind: 'postgres', url };
  if (url.startsWith('sqlite:')) {
    const path = url.slice('sqlite:'.length).replace(/^\/\/(?=\/)/, '');
    if (!path) throw new ConfigError('DATABASE_URL sqlite: needs a path, e.g. sqlite:./data/task-manager.db');
    return { kind: 'sqlite', path };
  }
  throw new ConfigError(`DATABASE_URL must start with sqlite: or postgres://, got "${url}"`);
}
