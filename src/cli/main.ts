#!/usr/bin/env node
import { Command, Option } from 'commander';
import { ConfigError, loadConfig, SETTINGS } from '../config.js';
import { serve } from '../server/main.js';
import { runRemoteWorker } from '../worker/main.js';
import { VERSION } from '../server/version.js';

const program = new Command();
program.name('task-manager').description('Durable task manager for AI inference').version(VERSION);

program
  .command('serve')
  .description('Start the API server (with an in-process worker for local engines)')
  .option('-p, --port <port>', SETTINGS.PORT.help)
  .option('-H, --host <host>', SETTINGS.HOST.help)
  .option('-d, --database-url <url>', SETTINGS.DATABASE_URL.help)
  .option('--models <file>', SETTINGS.TASK_MANAGER_MODELS.help)
  .option('--log-level <level>', SETTINGS.TASK_MANAGER_LOG_LEVEL.help)
  .addOption(new Option('--no-worker', 'Do not run the in-process worker'))
  .option('--worker-concurrency <n>', SETTINGS.TASK_MANAGER_WORKER_CONCURRENCY.help)
  .action(async (opts) => {
    const config = loadConfig(process.env, {
      PORT: opts.port,
      HOST: opts.host,
      DATABASE_URL: opts.databaseUrl,
      TASK_MANAGER_MODELS: opts.models,
      TASK_MANAGER_LOG_LEVEL: opts.logLevel,
      TASK_MANAGER_EMBEDDED_WORKER: opts.worker === false ? 'false' : undefined,
      TASK_MANAGER_WORKER_CONCURRENCY: opts.workerConcurrency,
    });
    await serve(config);
  });

program
  .command('worker')
  .description('Run a remote worker: lease tasks from a Task Manager over HTTP and run them on local engines')
  .requiredOption('-s, --server <url>', 'Task Manager base URL, e.g. http://gpu-gateway:8002')
  .option('-t, --token <token>', 'Worker token (default: TASK_MANAGER_WORKER_TOKEN)')
  .option('-m, --models <names>', 'Comma-separated catalog model names to serve (default: every entry with an engine here)')
  .option('--models-file <file>', SETTINGS.TASK_MANAGER_MODELS.help)
  .option('-c, --concurrency <n>', 'Tasks run at once', '1')
  .option('--id <id>', 'Worker id (default: worker_<host>_<random>)')
  .option('--log-level <level>', SETTINGS.TASK_MANAGER_LOG_LEVEL.help)
  .action(async (opts) => {
    const token = opts.token ?? process.env.TASK_MANAGER_WORKER_TOKEN;
    if (!token) throw new ConfigError('a worker token is required: --token or TASK_MANAGER_WORKER_TOKEN');
    const { TASK_MANAGER_WORKER_TOKEN: _omit, ...env } = process.env;
    const config = loadConfig(env, { TASK_MANAGER_MODELS: opts.modelsFile, TASK_MANAGER_LOG_LEVEL: opts.logLevel });
    const concurrency = Number(opts.concurrency);
    if (!Number.isInteger(concurrency) || concurrency < 1) throw new ConfigError(`--concurrency must be a positive integer, got "${opts.concurrency}"`);
    await runRemoteWorker({ config, serverUrl: opts.server, token, models: opts.models?.split(',').map((m: string) => m.trim()).filter(Boolean), concurrency, id: opts.id });
  });

program.parseAsync().catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`task-manager: configuration error: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`task-manager: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
