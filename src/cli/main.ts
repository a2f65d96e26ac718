#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { extname } from 'node:path';
import { Command, CommanderError, Option } from 'commander';
import { ConfigError, loadConfig, SETTINGS } from '../config.js';
import { VERSION } from '../server/version.js';
import {
  isFinalStatus,
  TASK_STATUSES,
  TaskManagerClient,
  TaskManagerError,
  type CreatedTask,
  type CreateTaskInput,
  type Task,
  type TaskStreamEvent,
  type TaskSummary,
  type TaskType,
} from '../client/index.js';

// The server and worker runtimes are loaded only by the commands that run them, so client
// commands (submit, get, list, …) start fast and never load engines or database drivers.

const program = new Command();
program
  .name('task-manager')
  .description('Durable task manager for AI inference')
  .version(VERSION)
  // Program options only before the command, so `worker --server` stays the worker's own.
  .enablePositionalOptions()
  .exitOverride()
  .option('--server <url>', 'Task Manager URL for client commands (default: $TASK_MANAGER_URL or http://127.0.0.1:8002)')
  .option('--json', 'Machine-readable output: one JSON document (watch: one JSON event per line)');

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
  .option('--worker-id <id>', SETTINGS.TASK_MANAGER_EMBEDDED_WORKER_ID.help)
  .action(async (opts) => {
    const config = loadConfig(process.env, {
      PORT: opts.port,
      HOST: opts.host,
      DATABASE_URL: opts.databaseUrl,
      TASK_MANAGER_MODELS: opts.models,
      TASK_MANAGER_LOG_LEVEL: opts.logLevel,
      TASK_MANAGER_EMBEDDED_WORKER: opts.worker === false ? 'false' : undefined,
      TASK_MANAGER_WORKER_CONCURRENCY: opts.workerConcurrency,
      TASK_MANAGER_EMBEDDED_WORKER_ID: opts.workerId,
    });
    const { serve } = await import('../server/main.js');
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
    const { runRemoteWorker } = await import('../worker/main.js');
    await runRemoteWorker({ config, serverUrl: opts.server, token, models: opts.models?.split(',').map((m: string) => m.trim()).filter(Boolean), concurrency, id: opts.id });
  });

// --- client commands -------------------------------------------------------------------------

/** A wrong invocation found after parsing (bad JSON, missing input): exit 2. */
class UsageError extends Error {}

interface ClientContext {
  client: TaskManagerClient;
  json: boolean;
  server: string;
}

/** `--server` and `--json` work before the command and after it. */
function clientCommand(name: string, description: string): Command {
  return program
    .command(name)
    .description(description)
    .option('--server <url>', 'Task Manager URL (default: $TASK_MANAGER_URL or http://127.0.0.1:8002)')
    .option('--json', 'Machine-readable output');
}

/** Set once a client command has parsed its options: errors are then also printed as JSON. */
let jsonMode = false;

function context(cmd: Command): ClientContext {
  const local = cmd.opts();
  const global = program.opts();
  jsonMode = Boolean(local.json ?? global.json);
  const server = String(local.server ?? global.server ?? process.env.TASK_MANAGER_URL ?? 'http://127.0.0.1:8002');
  if (!/^https?:\/\//i.test(server)) throw new UsageError(`--server must be an http(s) URL, got "${server}"`);
  return { client: new TaskManagerClient({ baseUrl: server }), json: jsonMode, server: server.replace(/\/+$/, '') };
}

const out = (s: string): void => {
  process.stdout.write(s.endsWith('\n') ? s : `${s}\n`);
};
const printJson = (v: unknown): void => out(JSON.stringify(v, null, 2));

/** JSON from an argument: inline, `@file`, or `-` for stdin. */
function jsonArg(flag: string, raw: string): Record<string, unknown> {
  let text = raw;
  try {
    if (raw === '-') text = readFileSync(0, 'utf8');
    else if (raw.startsWith('@')) text = readFileSync(raw.slice(1), 'utf8');
  } catch (err) {
    throw new UsageError(`${flag}: cannot read ${raw.slice(1) || 'stdin'}: ${(err as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new UsageError(`${flag} is not valid JSON: ${(err as Error).message}`);
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) throw new UsageError(`${flag} must be a JSON object`);
  return v as Record<string, unknown>;
}

function intArg(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^-?\d+$/.test(raw.trim())) throw new UsageError(`${flag} must be an integer, got "${raw}"`);
  return Number(raw);
}

function numberArg(flag: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0) throw new UsageError(`${flag} must be a non-negative number, got "${raw}"`);
  return n;
}

const IMAGE_TYPES: Record<string, string> = {
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.bmp': 'image/bmp',
  '.tif': 'image/tiff',
  '.tiff': 'image/tiff',
};

function sniffImageType(b: Buffer): string | undefined {
  if (b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'image/png';
  if (b[0] === 0xff && b[1] === 0xd8) return 'image/jpeg';
  if (b.subarray(0, 4).toString('latin1') === 'GIF8') return 'image/gif';
  if (b.subarray(0, 4).toString('latin1') === 'RIFF' && b.subarray(8, 12).toString('latin1') === 'WEBP') return 'image/webp';
  if (b.subarray(0, 2).toString('latin1') === 'BM') return 'image/bmp';
  return undefined;
}

/** An image file as a `data:` URL (plain base64 when its type is unknown). */
function imageArg(file: string): string {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (err) {
    throw new UsageError(`--image: cannot read ${file}: ${(err as Error).message}`);
  }
  const type = sniffImageType(data) ?? IMAGE_TYPES[extname(file).toLowerCase()];
  return type ? `data:${type};base64,${data.toString('base64')}` : data.toString('base64');
}

// --- human output ----------------------------------------------------------------------------

const time = (iso: string | null | undefined) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');
const seconds = (from: string | null | undefined, to: string | null | undefined) =>
  from && to ? `${((Date.parse(to) - Date.parse(from)) / 1000).toFixed(1)} s` : null;
const percent = (p: number | null | undefined) => (p === null || p === undefined ? '-' : `${Math.round(p * 100)}%`);

const isScalar = (v: unknown) => v === null || ['string', 'number', 'boolean'].includes(typeof v);
const scalar = (v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? String(Number(v.toFixed(3))) : typeof v === 'string' ? v : JSON.stringify(v));

/**
 * The result, readably: generated text as text (unless `textShown`: it was streamed already),
 * artifacts as absolute URLs, scalar fields on one line, anything else as JSON.
 */
function formatResult(result: unknown, server: string, textShown = false): string[] {
  if (result === null || result === undefined) return [];
  if (typeof result !== 'object' || Array.isArray(result)) return [JSON.stringify(result, null, 2)];
  const lines: string[] = [];
  const r = result as Record<string, unknown>;
  const rest: Record<string, unknown> = { ...r };
  for (const key of ['generated_text', 'text', 'caption']) {
    if (typeof r[key] === 'string') {
      if (!textShown) lines.push(String(r[key]));
      delete rest[key];
      break;
    }
  }
  if (Array.isArray(r.artifacts)) {
    for (const a of r.artifacts as Array<Record<string, unknown>>) {
      const url = typeof a.url === 'string' ? (a.url.startsWith('/') ? server + a.url : a.url) : '';
      lines.push(`artifact ${a.name ?? ''} ${a.content_type ?? ''} ${a.size ?? ''} bytes ${url}`.replace(/\s+/g, ' ').trim());
    }
    delete rest.artifacts;
  }
  const scalars = Object.entries(rest).filter(([, v]) => isScalar(v));
  if (scalars.length) lines.push(scalars.map(([k, v]) => `${k}=${scalar(v)}`).join('  '));
  const nested = Object.fromEntries(Object.entries(rest).filter(([, v]) => !isScalar(v)));
  if (Object.keys(nested).length) lines.push(JSON.stringify(nested, null, 2));
  return lines;
}

function printTask(t: Task | CreatedTask, server: string): void {
  const rows: Array<[string, string]> = [
    ['task_id', t.task_id],
    ['status', t.status],
    ['type', t.task_type],
    ['model', t.model_name],
    ['priority', String(t.priority)],
    ['created', time(t.created_at)],
  ];
  if (t.started_at) rows.push(['started', time(t.started_at)]);
  if (t.completed_at) rows.push(['completed', `${time(t.completed_at)}${seconds(t.started_at ?? t.created_at, t.completed_at) ? ` (${seconds(t.started_at ?? t.created_at, t.completed_at)})` : ''}`]);
  if (t.cancelled_at) rows.push(['cancelled', time(t.cancelled_at)]);
  if (t.attempts !== undefined) rows.push(['attempts', `${t.attempts}/${t.max_attempts ?? '?'}`]);
  if (t.worker_id) rows.push(['worker', t.worker_id]);
  if (t.status === 'running' && t.progress !== null && t.progress !== undefined) rows.push(['progress', percent(t.progress)]);
  if (t.status === 'pending' && t.queue_position !== null && t.queue_position !== undefined) rows.push(['queue', `position ${t.queue_position}`]);
  if (!isFinalStatus(t.status) && t.estimated_completion) rows.push(['eta', time(t.estimated_completion)]);
  if (t.error) rows.push(['error', `${t.error.code}: ${t.error.message}`]);
  const width = Math.max(...rows.map(([k]) => k.length)) + 2;
  for (const [k, v] of rows) out(`${k.padEnd(width)}${v}`);
  const result = formatResult(t.result, server);
  if (result.length) {
    out('result:');
    for (const line of result) out(line.replace(/^/gm, '  '));
  }
}

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]))).join('  ');
  return [line(headers), ...rows.map(line)].join('\n');
}

/** Exit status for a final task: 0 completed, 1 failed or cancelled. */
const exitFor = (t: { status: string }) => (t.status === 'completed' ? 0 : 1);

clientCommand('submit', 'Create a task')
  .argument('<task_type>', 'text_generation, image_generation, text_to_speech or image_to_text')
  .argument('<model_name>', 'a model of the catalog (GET /models)')
  .option('--prompt <text>', 'input_data.prompt')
  .option('--text <text>', 'input_data.text (text_to_speech)')
  .option('--image <file>', 'input_data.image: an image file, sent as a base64 data URL')
  .option('--input <json>', 'input_data as JSON (inline, @file or - for stdin); the flags above are merged into it')
  .option('--params <json>', 'parameters as JSON (inline, @file or -)')
  .option('--priority <n>', '-100…100, higher runs first')
  .option('--max-attempts <n>', 'leases before the task fails (1…20)')
  .option('--timeout-seconds <n>', 'run-time limit once started (1…86400)')
  .option('--idempotency-key <key>', 'makes retrying this command safe: the same key returns the same task')
  .option('--wait', 'wait for the task to finish and print it (exit 1 if it failed or was cancelled)')
  .option('--timeout <seconds>', 'with --wait: give up after this long (exit 1, WAIT_TIMEOUT)')
  .action(async (taskType: string, modelName: string, opts, cmd: Command) => {
    const ctx = context(cmd);
    const input: Record<string, unknown> = opts.input !== undefined ? jsonArg('--input', opts.input) : {};
    if (opts.prompt !== undefined) input.prompt = opts.prompt;
    if (opts.text !== undefined) input.text = opts.text;
    if (opts.image !== undefined) input.image = imageArg(opts.image);
    if (!Object.keys(input).length) throw new UsageError('no input: give --prompt, --text, --image or --input');
    const body: CreateTaskInput = { task_type: taskType as TaskType, model_name: modelName, input_data: input };
    if (opts.params !== undefined) body.parameters = jsonArg('--params', opts.params);
    const priority = intArg('--priority', opts.priority);
    if (priority !== undefined) body.priority = priority;
    const maxAttempts = intArg('--max-attempts', opts.maxAttempts);
    if (maxAttempts !== undefined) body.max_attempts = maxAttempts;
    const timeoutSeconds = intArg('--timeout-seconds', opts.timeoutSeconds);
    if (timeoutSeconds !== undefined) body.timeout_seconds = timeoutSeconds;
    const waitTimeout = numberArg('--timeout', opts.timeout);
    if (waitTimeout !== undefined && !opts.wait) throw new UsageError('--timeout needs --wait');

    const created = await ctx.client.createTask(body, { idempotencyKey: opts.idempotencyKey });
    if (!opts.wait) {
      if (ctx.json) return printJson(created);
      const eta = created.estimated_completion ? `, eta ${time(created.estimated_completion)}` : '';
      const queue = created.queue_position !== null && created.queue_position !== undefined ? `, queue position ${created.queue_position}` : '';
      out(`created ${created.task_id} (${created.status}${queue}${eta})`);
      return;
    }
    const final = isFinalStatus(created.status)
      ? await ctx.client.getTask(created.task_id)
      : await ctx.client.waitForTask(created.task_id, { timeoutMs: waitTimeout === undefined ? undefined : waitTimeout * 1000 });
    if (ctx.json) printJson(final);
    else printTask(final, ctx.server);
    process.exitCode = exitFor(final);
  });

clientCommand('get', 'Show a task')
  .argument('<task_id>')
  .option('--wait <seconds>', 'answer once the task is final or after this many seconds (Prefer: wait)')
  .action(async (taskId: string, opts, cmd: Command) => {
    const ctx = context(cmd);
    const task = await ctx.client.getTask(taskId, { wait: numberArg('--wait', opts.wait) });
    if (ctx.json) printJson(task);
    else printTask(task, ctx.server);
  });

clientCommand('list', 'List tasks, newest first')
  .addOption(new Option('--status <status>', 'only this status').choices(TASK_STATUSES as string[]))
  .option('--task-type <type>', 'only this task type')
  .option('--model <name>', 'only this model')
  .option('--limit <n>', 'page size (1…1000, default 50)')
  .option('--offset <n>', 'skip this many')
  .addOption(new Option('--sort-by <field>', 'sort field').choices(['created_at', 'status', 'task_type']))
  .addOption(new Option('--sort-order <order>', 'sort order').choices(['asc', 'desc']))
  .option('--all', 'every matching task, page after page')
  .action(async (opts, cmd: Command) => {
    const ctx = context(cmd);
    const query = {
      status: opts.status,
      task_type: opts.taskType,
      model_name: opts.model,
      limit: intArg('--limit', opts.limit),
      offset: intArg('--offset', opts.offset),
      sort_by: opts.sortBy,
      sort_order: opts.sortOrder,
    };
    let tasks: TaskSummary[];
    let footer: string;
    let doc: unknown;
    if (opts.all) {
      tasks = await ctx.client.iterateTasks({ ...query, pageSize: query.limit ?? 200, limit: undefined }).toArray();
      doc = { tasks, total: tasks.length };
      footer = `${tasks.length} task${tasks.length === 1 ? '' : 's'}`;
    } else {
      const page = await ctx.client.listTasks(query);
      tasks = page.tasks;
      doc = page;
      footer =
        tasks.length === 0
          ? `no tasks (total ${page.total})`
          : `${page.offset + 1}-${page.offset + tasks.length} of ${page.total} task${page.total === 1 ? '' : 's'}`;
    }
    if (ctx.json) return printJson(doc);
    if (tasks.length) {
      out(table(['TASK_ID', 'STATUS', 'TYPE', 'MODEL', 'CREATED'], tasks.map((t) => [t.task_id, t.status, t.task_type, t.model_name, time(t.created_at)])));
    }
    out(footer);
  });

clientCommand('cancel', 'Cancel a pending or running task')
  .argument('<task_id>')
  .action(async (taskId: string, _opts, cmd: Command) => {
    const ctx = context(cmd);
    const res = await ctx.client.cancelTask(taskId);
    if (ctx.json) return printJson(res);
    out(`cancelled ${res.task_id} at ${time(res.cancelled_at)}`);
  });

/** Live display of one task: status lines, a progress bar (a terminal) or progress lines, and the streamed text. */
class WatchView {
  private midLine = false;
  private barShown = false;
  private lastProgressLine = -1;
  private progress: number | null = null;
  private readonly tty = Boolean(process.stdout.isTTY);

  private write(s: string) {
    if (s) process.stdout.write(s);
  }

  private clearBar() {
    if (this.barShown) {
      this.write('\r\x1b[K');
      this.barShown = false;
    }
  }

  /** A line of its own, after any streamed text. */
  line(s: string) {
    this.clearBar();
    if (this.midLine) this.write('\n');
    this.midLine = false;
    this.write(`${s}\n`);
    this.drawBar();
  }

  /** Whether any streamed text was shown. */
  textShown = false;

  text(s: string) {
    if (!s) return;
    this.clearBar();
    this.write(s);
    this.textShown = true;
    this.midLine = !s.endsWith('\n');
  }

  setProgress(p: number | null) {
    if (p === null || p === undefined) return;
    this.progress = p;
    if (this.tty) return this.drawBar();
    // Not a terminal: a line per 10%, unless streamed text already shows the progress.
    if (this.textShown) return;
    const step = Math.floor(p * 10);
    if (step > this.lastProgressLine) {
      this.lastProgressLine = step;
      this.line(`progress ${bar(p)}`);
    }
  }

  private drawBar() {
    if (!this.tty || this.midLine || this.progress === null || this.progress >= 1) return;
    this.write(`\r\x1b[K${bar(this.progress)}`);
    this.barShown = true;
  }

  end() {
    this.progress = null;
    this.clearBar();
    if (this.midLine) this.write('\n');
    this.midLine = false;
  }
}

function bar(p: number, width = 24): string {
  const filled = Math.max(0, Math.min(width, Math.round(p * width)));
  return `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${String(Math.round(p * 100)).padStart(3)}%`;
}

clientCommand('watch', 'Follow a task live: status changes, progress and streamed output, then the result')
  .argument('<task_id>')
  .option('--last-event-id <id>', 'resume after this event id')
  .action(async (taskId: string, opts, cmd: Command) => {
    const ctx = context(cmd);
    const controller = new AbortController();
    process.once('SIGINT', () => controller.abort());
    let final: TaskStreamEvent | null = null;
    const view = ctx.json ? null : new WatchView();
    if (view) {
      // The task exists (or the error is printed) before anything streams.
      const t = await ctx.client.getTask(taskId);
      view.line(`${t.task_id}  ${t.task_type}  ${t.model_name}`);
    }
    let lastStatus: string | null = null;
    try {
      for await (const e of ctx.client.stream(taskId, { signal: controller.signal, lastEventId: intArg('--last-event-id', opts.lastEventId) })) {
        if (ctx.json) out(JSON.stringify(e));
        else if (e.type === 'status') {
          if (e.status !== lastStatus) view!.line(`${time(e.at)}  ${e.status}`);
          lastStatus = e.status;
        } else if (e.type === 'output') {
          view!.text(e.text ?? '');
          if (e.progress !== null) view!.setProgress(e.progress);
        } else view!.setProgress(e.progress);
        if (e.type === 'status' && isFinalStatus(e.status)) final = e;
      }
    } catch (err) {
      if (controller.signal.aborted) {
        view?.end();
        process.exitCode = 130;
        return;
      }
      throw err;
    }
    view?.end();
    // Resumed after the end, or the stream carried no task: ask for it.
    const task = final?.type === 'status' && final.task ? final.task : await ctx.client.getTask(taskId);
    if (view) {
      const took = seconds(task.started_at ?? task.created_at, task.completed_at ?? task.cancelled_at);
      out(`${task.status}${took ? ` in ${took}` : ''}`);
      if (task.error) out(`error ${task.error.code}: ${task.error.message}`);
      for (const line of formatResult(task.result, ctx.server, view.textShown)) out(line);
    }
    process.exitCode = exitFor(task);
  });

// --- errors ----------------------------------------------------------------------------------

function fail(code: string, message: string, exitCode: number, details?: Record<string, unknown>, json?: unknown): never {
  if (json !== undefined && wantsJson()) process.stdout.write(`${JSON.stringify(json, null, 2)}\n`);
  process.stderr.write(`error ${code}: ${message}\n`);
  if (details && typeof details.field === 'string') {
    process.stderr.write(`  field: ${details.field}${details.reason ? ` (${String(details.reason)})` : ''}\n`);
  }
  if (details && Array.isArray(details.available) && details.available.length) {
    process.stderr.write(`  available: ${details.available.join(', ')}\n`);
  }
  process.exit(exitCode);
}

const wantsJson = () => jsonMode;

program.parseAsync().catch((err) => {
  if (err instanceof CommanderError) {
    // Commander has printed its message (or the help); usage mistakes exit 2.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  if (err instanceof ConfigError) {
    process.stderr.write(`task-manager: configuration error: ${err.message}\n`);
    process.exit(2);
  }
  if (err instanceof UsageError) fail('USAGE', err.message, 2);
  if (err instanceof TaskManagerError) {
    const body = { error: { code: err.code, message: err.message, details: err.details }, status: err.status, request_id: err.requestId };
    fail(err.code, err.message, err.status >= 400 && err.status < 500 ? 2 : 1, err.details, body);
  }
  process.stderr.write(`task-manager: ${withCauses(err)}\n`);
  process.exit(1);
});

/** "Task store unavailable: cannot migrate: connect ECONNREFUSED 127.0.0.1:5999": the message and what caused it. */
function withCauses(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const x = e as { message?: unknown; code?: unknown };
    const text = typeof x.message === 'string' && x.message ? x.message : typeof x.code === 'string' ? x.code : e instanceof Error ? e.name : String(e);
    if (!parts.some((p) => p.includes(text))) parts.push(text);
  }
  return parts.join(': ');
}
