#!/usr/bin/env node
import { Command, Option } from 'commander';
import { ConfigError, loadConfig, SETTINGS } from '../config.js';
import { serve } from '../server/main.js';
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

program.parseAsync().catch((err) => {
  if (err instanceof ConfigError) {
    process.stderr.write(`task-manager: configuration error: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`task-manager: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
