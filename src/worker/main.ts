import pino from 'pino';
import type { Config } from '../config.js';
import { ConfigError } from '../config.js';
import { closeEngines, createEngines } from '../engines/index.js';
import { loadCatalog } from '../server/app.js';
import { detectHardware } from './hardware.js';
import { HttpError, HttpTransport } from './http-transport.js';
import { defaultWorkerId, Worker, type ServedModel } from './worker.js';

export interface RemoteWorkerOptions {
  config: Config;
  serverUrl: string;
  token: string;
  /** Catalog model names to serve; default every entry whose engine this build has. */
  models?: string[];
  concurrency: number;
  id?: string;
}

/** Runs a worker process against a Task Manager over HTTP until SIGTERM/SIGINT. */
export async function runRemoteWorker(opts: RemoteWorkerOptions): Promise<Worker> {
  const { config } = opts;
  const log = pino({ level: config.logLevel });
  const catalog = loadCatalog(config.catalogPath);
  const engines = createEngines({ llamaThreads: config.llamaThreads ?? undefined, llamaGpu: config.llamaGpu, llamaParallel: config.llamaParallel });
  const wanted = opts.models ?? catalog.entries().map((e) => e.name);
  const served: ServedModel[] = [];
  for (const name of wanted) {
    const entry = catalog.get(name);
    if (!entry) throw new ConfigError(`model "${name}" is not in the catalog ${config.catalogPath}`);
    const engine = engines[entry.engine];
    if (!engine) throw new ConfigError(`model "${name}" needs engine "${entry.engine}", which this build does not have`);
    for (const taskType of entry.taskTypes) {
      if (engine.taskTypes.includes(taskType)) served.push({ taskType, modelName: name, engine, modelOptions: entry.options });
    }
  }
  if (!served.length) throw new ConfigError('this worker would serve no model');

  const id = opts.id ?? defaultWorkerId();
  const worker = new Worker({
    id,
    transport: new HttpTransport({ serverUrl: opts.serverUrl, token: opts.token }),
    models: served,
    concurrency: opts.concurrency,
    heartbeatMs: Math.max(250, Math.floor((config.leaseSeconds * 1000) / 3)),
    leaseWaitMs: Math.max(500, Math.floor((config.leaseSeconds * 1000) / 2)),
    hardware: await detectHardware(),
    log: log.child({ worker_id: id }),
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'worker stopping');
    worker
      .stop(config.shutdownGraceSeconds * 1000)
      .then(() => closeEngines(engines))
      .then(
        () => process.exit(0),
        (err) => {
          log.error({ err }, 'error while stopping');
          process.exit(1);
        },
      );
  };
  // Kept for the whole stop: signal-exit (loaded by node-llama-cpp) re-raises a signal that
  // has no other listener, which would kill the worker before its tasks are handed back.
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  // The server may not be up yet: keep trying to register.
  for (let delay = 250; ; delay = Math.min(delay * 2, 5_000)) {
    try {
      await worker.start();
      break;
    } catch (err) {
      // A refusal (bad token, bad registration) will not get better by retrying.
      if (err instanceof HttpError && err.status < 500 && err.status !== 429) throw new ConfigError(`the server refused this worker: ${err.message}`);
      log.warn({ err: (err as Error).message, server: opts.serverUrl }, 'cannot register yet; retrying');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
  log.info({ worker_id: worker.id, models: served.map((m) => m.modelName), server: opts.serverUrl }, 'worker ready');
  return worker;
}
