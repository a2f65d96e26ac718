/**
 * End to end over HTTP: a server process, and worker processes (`task-manager worker`) on
 * real engines — llama.cpp on the tiny GGUF, espeak-ng, tesseract — plus an AUTOMATIC1111
 * stand-in for the remote image protocol.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseWav } from '../src/engines/espeak.js';
import { startA1111Standin, type A1111Standin } from './helpers/a1111-standin.js';
import { renderTextPng } from './helpers/png-text.js';
import { HttpTransport } from '../src/worker/http-transport.js';
import { Worker } from '../src/worker/worker.js';
import { GateEngine } from './helpers/engines.js';
import { spawnServer, type ServerProcess } from './helpers/process.js';
import { json, post, tempDir, waitFor } from './helpers/server.js';

/** Absolute: a relative model_path would be resolved against the catalog's own (temporary) directory. */
const TINY_LLAMA = fileURLToPath(new URL('../models/tiny-llama.gguf', import.meta.url));

const TOKEN = 'e2e-worker-token-0123456789';

interface WorkerProc {
  child: ChildProcess;
  output: () => string;
  exited: Promise<unknown>;
}

function startWorker(serverUrl: string, catalog: string, id: string, models: string, env: Record<string, string> = {}, concurrency = 1): WorkerProc {
  const child = spawn(process.execPath, ['dist/cli/main.js', 'worker', '--server', serverUrl, '--models', models, '--models-file', catalog, '--id', id, '--concurrency', String(concurrency)], {
    env: { ...process.env, TASK_MANAGER_WORKER_TOKEN: TOKEN, TASK_MANAGER_LOG_LEVEL: 'warn', TASK_MANAGER_LLAMA_THREADS: '1', TASK_MANAGER_LLAMA_GPU: 'false', TASK_MANAGER_LEASE_SECONDS: '2', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return { child, output: () => out, exited: new Promise((r) => child.once('exit', r)) };
}

/** A server whose catalog has only tiny-llama, for remote workers only. */
async function llamaServer(dir: string, env: Record<string, string> = {}): Promise<{ server: ServerProcess; catalog: string }> {
  const catalog = join(dir, 'models.json');
  writeFileSync(catalog, JSON.stringify({ models: [{ name: 'tiny-llama', task_type: 'text_generation', engine: 'llama-cpp', options: { model_path: TINY_LLAMA } }] }));
  const server = await spawnServer({
    DATABASE_URL: `sqlite:${join(dir, 'tasks.db')}`,
    TASK_MANAGER_MODELS: catalog,
    TASK_MANAGER_EMBEDDED_WORKER: 'false',
    TASK_MANAGER_WORKER_TOKEN: TOKEN,
    TASK_MANAGER_RATE_LIMIT: 'false',
    ...env,
  });
  return { server, catalog };
}

/** Runs `fn` against a server for remote workers only, whose leases never expire within a test. */
async function withRemoteServer(fn: (url: string) => Promise<void>): Promise<void> {
  const dir = tempDir();
  const srv = await spawnServer({
    DATABASE_URL: `sqlite:${join(dir.path, 'r.db')}`,
    TASK_MANAGER_EMBEDDED_WORKER: 'false',
    TASK_MANAGER_WORKER_TOKEN: TOKEN,
    TASK_MANAGER_RATE_LIMIT: 'false',
    TASK_MANAGER_LEASE_SECONDS: '600',
  });
  try {
    await fn(srv.url);
  } finally {
    srv.child.kill('SIGKILL');
    await srv.exited;
    dir.cleanup();
  }
}

async function finished(url: string, id: string, timeoutMs = 30_000): Promise<any> {
  return waitFor(async () => {
    const t = await json(await fetch(`${url}/tasks/${id}`));
    return ['completed', 'failed', 'cancelled'].includes(t.status) ? t : null;
  }, timeoutMs, `task ${id} to finish`);
}

describe('server and remote workers over HTTP', () => {
  const dir = tempDir();
  let sd: A1111Standin;
  let server: ServerProcess;
  let catalog: string;
  const workers: WorkerProc[] = [];

  beforeAll(async () => {
    sd = await startA1111Standin({ stepMs: 5 });
    catalog = join(dir.path, 'models.json');
    writeFileSync(
      catalog,
      JSON.stringify({
        models: [
          { name: 'tiny-llama', task_type: 'text_generation', engine: 'llama-cpp', options: { model_path: TINY_LLAMA } },
          { name: 'espeak-ng', task_type: 'text_to_speech', engine: 'espeak', options: { voice: 'en' } },
          { name: 'tesseract-eng', task_type: 'image_to_text', engine: 'tesseract', options: { language: 'eng' } },
          { name: 'sd-standin', task_type: 'image_generation', engine: 'a1111', options: { base_url: sd.url } },
        ],
      }),
    );
    server = await spawnServer({
      DATABASE_URL: `sqlite:${join(dir.path, 'e2e.db')}`,
      TASK_MANAGER_MODELS: catalog,
      TASK_MANAGER_EMBEDDED_WORKER: 'false',
      TASK_MANAGER_WORKER_TOKEN: TOKEN,
      TASK_MANAGER_RATE_LIMIT: 'false',
      TASK_MANAGER_LEASE_SECONDS: '2',
      TASK_MANAGER_REAPER_INTERVAL_MS: '200',
    });
    workers.push(startWorker(server.url, catalog, 'gpu-a', 'tiny-llama,espeak-ng,tesseract-eng,sd-standin'));
    await waitFor(async () => (await json(await fetch(`${server.url}/workers`))).workers.some((w: any) => w.worker_id === 'gpu-a' && w.status !== 'offline'), 20_000, 'worker gpu-a to register');
  });

  afterAll(async () => {
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
    if (server) {
      server.child.kill('SIGKILL');
      await server.exited;
    }
    await sd?.close();
    dir.cleanup();
  });

  it('lists the registered worker with its models and hardware', async () => {
    const { workers: list } = await json(await fetch(`${server.url}/workers`));
    const w = list.find((x: any) => x.worker_id === 'gpu-a');
    expect(w.models).toContainEqual({ task_type: 'text_generation', model_name: 'tiny-llama' });
    expect(w.concurrency).toBe(1);
    expect(w.hardware.cpu_cores).toBeGreaterThan(0);
    const { models } = await json(await fetch(`${server.url}/models`));
    expect(models.find((m: any) => m.model_name === 'tiny-llama')).toMatchObject({ available: true, workers: ['gpu-a'], engine: 'llama-cpp' });
  });

  it('runs all four task types on real engines', async () => {
    const created = {
      text: await json(await post(`${server.url}/tasks`, { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'Hello world!' }, parameters: { max_tokens: 12, seed: 7 } })),
      speech: await json(await post(`${server.url}/tasks`, { task_type: 'text_to_speech', model_name: 'espeak-ng', input_data: { text: 'The queue works.' } })),
      ocr: await json(await post(`${server.url}/tasks`, { task_type: 'image_to_text', model_name: 'tesseract-eng', input_data: { image: renderTextPng('HELLO WORLD').toString('base64') } })),
      image: await json(await post(`${server.url}/tasks`, { task_type: 'image_generation', model_name: 'sd-standin', input_data: { prompt: 'a lighthouse' }, parameters: { width: 64, height: 64, steps: 4 } })),
    };
    const text = await finished(server.url, created.text.task_id, 60_000);
    expect(text.status).toBe('completed');
    expect(text.worker_id).toBe('gpu-a');
    expect(text.result.tokens_generated).toBe(12);
    expect(text.result.generated_text.length).toBeGreaterThan(0);

    const speech = await finished(server.url, created.speech.task_id);
    expect(speech.status).toBe('completed');
    const ref = speech.result.artifacts[0];
    expect(ref).toMatchObject({ name: 'speech.wav', content_type: 'audio/wav' });
    const wav = await fetch(`${server.url}${ref.url}`);
    expect(wav.headers.get('content-type')).toBe('audio/wav');
    const bytes = Buffer.from(await wav.arrayBuffer());
    expect(bytes.length).toBe(ref.size);
    const info = parseWav(bytes);
    expect(info.sampleRate).toBe(22050);
    expect(info.durationSeconds).toBeGreaterThan(0.5);

    const ocr = await finished(server.url, created.ocr.task_id);
    expect(ocr.status).toBe('completed');
    expect(ocr.result.text.toUpperCase()).toContain('HELLO');

    const image = await finished(server.url, created.image.task_id);
    expect(image.status).toBe('completed');
    const png = await fetch(`${server.url}${image.result.artifacts[0].url}`);
    expect(png.headers.get('content-type')).toBe('image/png');
    expect(Buffer.from(await png.arrayBuffer()).subarray(1, 4).toString()).toBe('PNG');
    expect(sd.jobs.at(-1)!.body).toMatchObject({ prompt: 'a lighthouse', width: 64, height: 64, steps: 4 });
  }, 120_000);

  it('a cancel of a running generation stops it and frees the worker for the next task', async () => {
    const long = await json(await post(`${server.url}/tasks`, { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'Once upon a time' }, parameters: { max_tokens: 20_000 } }));
    await waitFor(async () => (await json(await fetch(`${server.url}/tasks/${long.task_id}`))).status === 'running', 20_000, 'long task to run');
    await new Promise((r) => setTimeout(r, 300));
    const next = await json(await post(`${server.url}/tasks`, { task_type: 'text_to_speech', model_name: 'espeak-ng', input_data: { text: 'next' } }));
    expect((await fetch(`${server.url}/tasks/${long.task_id}`, { method: 'DELETE' })).status).toBe(200);
    // One slot: the speech task can only run once the generation really stopped.
    const done = await finished(server.url, next.task_id, 15_000);
    expect(done.status).toBe('completed');
    const cancelled = await json(await fetch(`${server.url}/tasks/${long.task_id}`));
    expect(cancelled.status).toBe('cancelled');
    expect(cancelled.result).toBeNull();
  }, 60_000);

  it('a worker killed mid-task loses its lease; another worker retries the task to completion', async () => {
    // Long enough (about a second on one thread) that the kill lands while it runs.
    const t = await json(await post(`${server.url}/tasks`, { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'retry me' }, parameters: { max_tokens: 1500 } }));
    await waitFor(async () => (await json(await fetch(`${server.url}/tasks/${t.task_id}`))).status === 'running', 20_000, 'task to run on gpu-a');
    workers[0].child.kill('SIGKILL');
    await workers[0].exited;
    workers.push(startWorker(server.url, catalog, 'gpu-b', 'tiny-llama'));
    const done = await finished(server.url, t.task_id, 60_000);
    expect(done).toMatchObject({ status: 'completed', worker_id: 'gpu-b', attempts: 2 });
    expect(done.result.tokens_generated).toBe(1500);
    const { workers: list } = await json(await fetch(`${server.url}/workers`));
    expect(list.find((w: any) => w.worker_id === 'gpu-a').status).toBe('offline');
  }, 90_000);
});

describe('llama.cpp generations in parallel', () => {
  it('with TASK_MANAGER_LLAMA_PARALLEL=2 on a worker of 3 slots, two generations run at once and the third stays pending until one ends', async () => {
    const dir = tempDir();
    const { server, catalog } = await llamaServer(dir.path);
    const worker = startWorker(server.url, catalog, 'par', 'tiny-llama', { TASK_MANAGER_LLAMA_PARALLEL: '2' }, 3);
    try {
      await waitFor(async () => (await json(await fetch(`${server.url}/workers`))).workers.some((w: any) => w.worker_id === 'par'), 20_000, 'worker to register');
      const { workers: list } = await json(await fetch(`${server.url}/workers`));
      expect(list.find((w: any) => w.worker_id === 'par')).toMatchObject({ concurrency: 3, models: [{ task_type: 'text_generation', model_name: 'tiny-llama', concurrency: 2 }] });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) {
        ids.push((await json(await post(`${server.url}/tasks`, { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: `story ${i}` }, parameters: { max_tokens: 1500 } }))).task_id);
      }
      const statuses = async () => Promise.all(ids.map(async (id) => (await json(await fetch(`${server.url}/tasks/${id}`))).status as string));
      const seen = await waitFor(async () => {
        const st = await statuses();
        return st.filter((x) => x === 'running').length === 2 ? st : null;
      }, 20_000, 'two generations running');
      expect(seen.filter((x) => x === 'pending')).toHaveLength(1);
      const done = [];
      for (const id of ids) done.push(await finished(server.url, id, 60_000));
      for (const t of done) expect(t).toMatchObject({ status: 'completed', attempts: 1, result: { tokens_generated: 1500 } });
      const byStart = [...done].sort((a, b) => Date.parse(a.started_at) - Date.parse(b.started_at));
      // The third started only when one of the first two had ended (the worker leases as soon as its
      // engine returns, while the completion is still on its way: a few ms), and the first two overlapped.
      const firstEnd = Math.min(Date.parse(byStart[0].completed_at), Date.parse(byStart[1].completed_at));
      expect(Date.parse(byStart[2].started_at)).toBeGreaterThan(firstEnd - 200);
      expect(firstEnd - Date.parse(byStart[0].started_at)).toBeGreaterThan(400);
      expect(Date.parse(byStart[1].started_at)).toBeLessThan(Date.parse(byStart[0].completed_at));
    } finally {
      worker.child.kill('SIGKILL');
      await worker.exited;
      server.child.kill('SIGKILL');
      await server.exited;
      dir.cleanup();
    }
  }, 90_000);
});

describe('a remote worker restarted under its id', () => {
  it('registering with the tasks it runs gets every other task of that id requeued at once', async () => {
    await withRemoteServer(async (url) => {
      const auth = { authorization: `Bearer ${TOKEN}` };
      const reg = (extra: Record<string, unknown> = {}) =>
        post(`${url}/workers/register`, { worker_id: 'gpu-fixed', models: [{ task_type: 'text_generation', model_name: 'm' }], concurrency: 2, ...extra }, auth);
      expect((await reg()).status).toBe(200);
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) ids.push((await json(await post(`${url}/tasks`, { task_type: 'text_generation', model_name: 'm', input_data: { prompt: `p${i}` } }))).task_id);
      const leased = await json(await post(`${url}/workers/gpu-fixed/lease`, { max_tasks: 2, wait_seconds: 1 }, auth));
      expect(leased.tasks.map((t: any) => t.task_id).sort()).toEqual([...ids].sort());
      const task = async (id: string) => json(await fetch(`${url}/tasks/${id}`));
      // Registering again without the field (an older worker) changes no lease.
      expect((await reg()).status).toBe(200);
      for (const id of ids) expect(await task(id)).toMatchObject({ status: 'running', attempts: 1 });
      // A process that still runs the first task keeps it; the other goes back to the queue.
      expect((await reg({ running_task_ids: [ids[0]] })).status).toBe(200);
      expect(await task(ids[0])).toMatchObject({ status: 'running', attempts: 1, worker_id: 'gpu-fixed' });
      expect(await task(ids[1])).toMatchObject({ status: 'pending', attempts: 1, worker_id: null });
      // A fresh process runs nothing: the first goes back too, and the old lease is fenced out.
      expect((await reg({ running_task_ids: [] })).status).toBe(200);
      expect(await task(ids[0])).toMatchObject({ status: 'pending', attempts: 1 });
      const old = leased.tasks.find((t: any) => t.task_id === ids[0]);
      const late = await post(`${url}/workers/gpu-fixed/tasks/${ids[0]}/complete`, { lease_token: old.lease_token, result: { late: true } }, auth);
      expect(late.status).toBe(409);
      // Another worker's leases are not touched by it.
      expect((await post(`${url}/workers/register`, { worker_id: 'gpu-other', models: [{ task_type: 'text_generation', model_name: 'm' }], concurrency: 2 }, auth)).status).toBe(200);
      expect((await json(await post(`${url}/workers/gpu-other/lease`, { max_tasks: 2, wait_seconds: 1 }, auth))).tasks).toHaveLength(2);
      expect((await reg({ running_task_ids: [] })).status).toBe(200);
      for (const id of ids) expect(await task(id)).toMatchObject({ status: 'running', attempts: 2, worker_id: 'gpu-other' });
    });
  });

  it('a worker process killed mid-task and started again under its id runs the task again at once', async () => {
    const dir = tempDir();
    const { server: srv, catalog } = await llamaServer(dir.path, { TASK_MANAGER_LEASE_SECONDS: '600' });
    const started: WorkerProc[] = [];
    try {
      started.push(startWorker(srv.url, catalog, 'gpu-k', 'tiny-llama', { TASK_MANAGER_LEASE_SECONDS: '600' }));
      const t = await json(await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'again' }, parameters: { max_tokens: 1500 } }));
      await waitFor(async () => (await json(await fetch(`${srv.url}/tasks/${t.task_id}`))).status === 'running', 20_000, 'task to run on gpu-k');
      started[0].child.kill('SIGKILL');
      await started[0].exited;
      started.push(startWorker(srv.url, catalog, 'gpu-k', 'tiny-llama', { TASK_MANAGER_LEASE_SECONDS: '600' }));
      // With 600 s leases, only the restarted process's registration can have freed it.
      const done = await finished(srv.url, t.task_id, 60_000);
      expect(done).toMatchObject({ status: 'completed', worker_id: 'gpu-k', attempts: 2 });
      expect(done.result.tokens_generated).toBe(1500);
    } finally {
      for (const w of started) if (w.child.exitCode === null && w.child.signalCode === null) w.child.kill('SIGKILL');
      srv.child.kill('SIGKILL');
      await srv.exited;
      dir.cleanup();
    }
  }, 90_000);
});

describe('a worker process stopped with SIGTERM', () => {
  it('mid-generation on llama.cpp, exits 0 and gives the task back to the queue', async () => {
    const dir = tempDir();
    const { server, catalog } = await llamaServer(dir.path);
    const worker = startWorker(server.url, catalog, 'gpu-term', 'tiny-llama', { TASK_MANAGER_SHUTDOWN_GRACE_SECONDS: '0' });
    try {
      const t = await json(await post(`${server.url}/tasks`, { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'Hello' }, parameters: { max_tokens: 30_000 } }));
      await waitFor(async () => {
        const now = await json(await fetch(`${server.url}/tasks/${t.task_id}`));
        return now.status === 'running' && now.progress !== null;
      }, 20_000, 'the generation to be under way');
      worker.child.kill('SIGTERM');
      const exit = await new Promise<[number | null, string | null]>((r) => worker.child.once('exit', (code, signal) => r([code, signal])));
      expect(exit, worker.output()).toEqual([0, null]);
      expect(await json(await fetch(`${server.url}/tasks/${t.task_id}`))).toMatchObject({ status: 'pending', attempts: 0, worker_id: null });
    } finally {
      if (worker.child.exitCode === null && worker.child.signalCode === null) worker.child.kill('SIGKILL');
      server.child.kill('SIGKILL');
      await server.exited;
      dir.cleanup();
    }
  }, 60_000);
});

describe('worker protocol guards', () => {
  it('refuses workers without the token, and remote workers entirely when no token is configured', async () => {
    const dir = tempDir();
    const srv = await spawnServer({ DATABASE_URL: `sqlite:${join(dir.path, 'a.db')}`, TASK_MANAGER_EMBEDDED_WORKER: 'false', TASK_MANAGER_WORKER_TOKEN: TOKEN });
    const noToken = await srv.url;
    try {
      const body = { models: [{ task_type: 'text_generation', model_name: 'tiny-llama' }], concurrency: 1 };
      const missing = await post(`${noToken}/workers/register`, body);
      expect(missing.status).toBe(401);
      expect((await json(missing)).error.code).toBe('UNAUTHORIZED');
      const wrong = await post(`${srv.url}/workers/register`, body, { authorization: 'Bearer nope' });
      expect(wrong.status).toBe(401);
      // In-process workers' ids are not a remote worker's to take.
      const reserved = await post(`${srv.url}/workers/register`, { ...body, worker_id: 'worker_embedded' }, { authorization: `Bearer ${TOKEN}` });
      expect(reserved.status).toBe(422);
      expect((await json(reserved)).error).toMatchObject({ code: 'VALIDATION_ERROR', details: { field: 'worker_id' } });
      const ok = await post(`${srv.url}/workers/register`, { ...body, worker_id: 'w1' }, { authorization: `Bearer ${TOKEN}` });
      expect(ok.status).toBe(200);
      expect(await json(ok)).toMatchObject({ worker_id: 'w1', lease_seconds: 30 });
      // A stale lease token is refused with 409 and changes nothing.
      const task = await json(await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'tiny-llama', input_data: { prompt: 'x' } }));
      const leased = await json(await post(`${srv.url}/workers/w1/lease`, { max_tasks: 1, wait_seconds: 1 }, { authorization: `Bearer ${TOKEN}` }));
      expect(leased.tasks.map((x: any) => x.task_id)).toEqual([task.task_id]);
      const stale = await post(`${srv.url}/workers/w1/tasks/${task.task_id}/complete`, { lease_token: 'f'.repeat(32), result: { x: 1 } }, { authorization: `Bearer ${TOKEN}` });
      expect(stale.status).toBe(409);
      expect((await json(stale)).error).toMatchObject({ code: 'LEASE_CONFLICT', details: { reason: 'stale' } });
      const good = await post(`${srv.url}/workers/w1/tasks/${task.task_id}/complete`, { lease_token: leased.tasks[0].lease_token, result: { generated_text: 'hi' } }, { authorization: `Bearer ${TOKEN}` });
      expect(good.status).toBe(200);
      expect((await json(await fetch(`${srv.url}/tasks/${task.task_id}`))).result).toEqual({ generated_text: 'hi' });
      const unknown = await post(`${srv.url}/workers/ghost/lease`, { max_tasks: 1, wait_seconds: 0 }, { authorization: `Bearer ${TOKEN}` });
      expect(unknown.status).toBe(404);
      expect((await json(unknown)).error.code).toBe('WORKER_NOT_FOUND');
    } finally {
      srv.child.kill('SIGKILL');
      await srv.exited;
    }
    const closed = await spawnServer({ DATABASE_URL: `sqlite:${join(dir.path, 'b.db')}`, TASK_MANAGER_EMBEDDED_WORKER: 'false' });
    try {
      const res = await post(`${closed.url}/workers/register`, { models: [{ task_type: 'text_generation', model_name: 'm' }], concurrency: 1 }, { authorization: `Bearer ${TOKEN}` });
      expect(res.status).toBe(401);
      expect((await json(res)).error.message).toMatch(/TASK_MANAGER_WORKER_TOKEN/);
    } finally {
      closed.child.kill('SIGKILL');
      await closed.exited;
      dir.cleanup();
    }
  });
});

describe('completions of several tasks in one request', () => {
  const auth = { authorization: `Bearer ${TOKEN}` };
  /** Requests answered so far on one route, from the server's own HTTP histogram. */
  async function served(url: string, route: string): Promise<number> {
    const text = await (await fetch(`${url}/metrics`)).text();
    let n = 0;
    for (const line of text.split('\n')) {
      if (line.startsWith('task_manager_http_request_duration_seconds_count{') && line.includes(`route="${route}"`)) n += Number(line.split(' ').pop());
    }
    return n;
  }

  it('POST /workers/{id}/complete records each task under its own lease, and answers each outcome in order', async () => {
    await withRemoteServer(async (url) => {
      expect((await post(`${url}/workers/register`, { worker_id: 'w1', models: [{ task_type: 'text_generation', model_name: 'm' }], concurrency: 4 }, auth)).status).toBe(200);
      const ids: string[] = [];
      for (let i = 0; i < 4; i++) ids.push((await json(await post(`${url}/tasks`, { task_type: 'text_generation', model_name: 'm', input_data: { prompt: `p${i}` } }))).task_id);
      const leased = await json(await post(`${url}/workers/w1/lease`, { max_tasks: 4, wait_seconds: 1 }, auth));
      const token = (id: string) => leased.tasks.find((t: any) => t.task_id === id).lease_token;
      expect((await fetch(`${url}/tasks/${ids[3]}`, { method: 'DELETE' })).status).toBe(200);
      const res = await post(
        `${url}/workers/w1/complete`,
        {
          tasks: [
            { task_id: ids[0], lease_token: token(ids[0]), result: { generated_text: 'zero' } },
            { task_id: ids[1], lease_token: token(ids[1]), result: { generated_text: 'one' } },
            { task_id: ids[2], lease_token: 'f'.repeat(32), result: { generated_text: 'forged' } },
            { task_id: ids[3], lease_token: token(ids[3]), result: { generated_text: 'too late' } },
            { task_id: 'task_00000000-0000-7000-8000-000000000000', lease_token: 'f'.repeat(32), result: {} },
          ],
        },
        auth,
      );
      expect(res.status).toBe(200);
      expect((await json(res)).results).toEqual([
        { task_id: ids[0], outcome: 'completed', status: 'completed' },
        { task_id: ids[1], outcome: 'completed', status: 'completed' },
        { task_id: ids[2], outcome: 'stale', status: 'running' },
        { task_id: ids[3], outcome: 'cancelled', status: 'cancelled' },
        { task_id: 'task_00000000-0000-7000-8000-000000000000', outcome: 'stale', status: null },
      ]);
      const task = async (id: string) => json(await fetch(`${url}/tasks/${id}`));
      expect(await task(ids[0])).toMatchObject({ status: 'completed', result: { generated_text: 'zero' } });
      expect(await task(ids[1])).toMatchObject({ status: 'completed', result: { generated_text: 'one' } });
      // The refused ones changed nothing.
      expect(await task(ids[2])).toMatchObject({ status: 'running', attempts: 1, result: null });
      expect(await task(ids[3])).toMatchObject({ status: 'cancelled', result: null });
      const again = await json(await post(`${url}/workers/w1/complete`, { tasks: [{ task_id: ids[2], lease_token: token(ids[2]), result: { n: 2 } }] }, auth));
      expect(again.results).toEqual([{ task_id: ids[2], outcome: 'completed', status: 'completed' }]);
      // A cancel the worker missed between its polls is named on its next one (ids[0] completed, not cancelled).
      const poll = await json(await post(`${url}/workers/w1/lease`, { max_tasks: 0, wait_seconds: 1, running: [ids[3], ids[0], 'task_unknown'] }, auth));
      expect(poll).toEqual({ tasks: [], cancelled: [ids[3]] });

      // Bad requests: the spec's error format, nothing recorded.
      const item = { task_id: ids[0], lease_token: token(ids[0]), result: {} };
      for (const body of [{ tasks: [] }, { tasks: Array.from({ length: 1025 }, () => item) }, { tasks: [{ task_id: ids[0], lease_token: token(ids[0]) }] }, { tasks: [{ ...item, extra: 1 }] }, {}]) {
        const bad = await post(`${url}/workers/w1/complete`, body, auth);
        expect(bad.status).toBe(422);
        expect((await json(bad)).error.code).toBe('VALIDATION_ERROR');
      }
      expect((await post(`${url}/workers/w1/complete`, { tasks: [item] })).status).toBe(401);
      const ghost = await post(`${url}/workers/ghost/complete`, { tasks: [item] }, auth);
      expect(ghost.status).toBe(404);
      expect((await json(ghost)).error.code).toBe('WORKER_NOT_FOUND');
      expect(await task(ids[0])).toMatchObject({ result: { generated_text: 'zero' } });
    });
  });

  it('the HTTP worker transport sends the completions of one turn in one request, and one at a time to a server without the route', async () => {
    await withRemoteServer(async (url) => {
      const models = [{ taskType: 'text_generation' as const, modelName: 'm' }];
      const leaseAll = async (t: HttpTransport, n: number) => {
        for (let i = 0; i < n; i++) await post(`${url}/tasks`, { task_type: 'text_generation', model_name: 'm', input_data: { prompt: `p${i}` } });
        const leased = await t.lease(models, n, 1000, new AbortController().signal);
        expect(leased).toHaveLength(n);
        return leased;
      };
      const batching = new HttpTransport({ serverUrl: url, token: TOKEN });
      await batching.register({ workerId: 'batcher', models, concurrency: 8 });
      const leased = await leaseAll(batching, 6);
      const outcomes = await Promise.all(leased.map((l, i) => batching.complete(l.task.id, l.leaseToken, { n: i })));
      expect(outcomes).toEqual(Array(6).fill('ok'));
      expect(await served(url, '/workers/:worker_id/complete')).toBe(1);
      expect(await served(url, '/workers/:worker_id/tasks/:task_id/complete')).toBe(0);
      for (const [i, l] of leased.entries()) expect(await json(await fetch(`${url}/tasks/${l.task.id}`))).toMatchObject({ status: 'completed', result: { n: i } });
      // Completing again with the spent leases: refused, each one.
      expect(await Promise.all(leased.slice(0, 2).map((l) => batching.complete(l.task.id, l.leaseToken, {})))).toEqual(['stale', 'stale']);
      // Large results are split over requests of about 1 MiB (a single larger one would go alone).
      const big = await leaseAll(batching, 3);
      const text = 'x'.repeat(600_000);
      expect(await Promise.all(big.map((l) => batching.complete(l.task.id, l.leaseToken, { text })))).toEqual(['ok', 'ok', 'ok']);
      expect(await served(url, '/workers/:worker_id/complete')).toBe(2 + 3);
      for (const l of big) expect((await json(await fetch(`${url}/tasks/${l.task.id}`))).result.text).toHaveLength(600_000);
      await batching.unregister();

      // A server from before the route answers 404 ROUTE_NOT_FOUND: the transport goes on one task at a time.
      let refused = 0;
      const olderServer: typeof fetch = (input, init) => {
        if (/\/workers\/[^/]+\/complete$/.test(String(input))) {
          refused++;
          return Promise.resolve(new Response(JSON.stringify({ error: { code: 'ROUTE_NOT_FOUND', message: 'No such endpoint' } }), { status: 404 }));
        }
        return fetch(input, init);
      };
      const single = new HttpTransport({ serverUrl: url, token: TOKEN, fetch: olderServer });
      await single.register({ workerId: 'single', models, concurrency: 8 });
      const more = await leaseAll(single, 3);
      expect(await Promise.all(more.map((l) => single.complete(l.task.id, l.leaseToken, { older: true })))).toEqual(['ok', 'ok', 'ok']);
      const last = await leaseAll(single, 1);
      expect(await single.complete(last[0].task.id, last[0].leaseToken, { older: true })).toBe('ok');
      expect(refused).toBe(1);
      expect(await served(url, '/workers/:worker_id/tasks/:task_id/complete')).toBe(4);
      for (const l of [...more, ...last]) expect((await json(await fetch(`${url}/tasks/${l.task.id}`))).status).toBe('completed');
      await single.unregister();
    });
  });
});

describe('leases scoped to the engines that have room', () => {
  const auth = { authorization: `Bearer ${TOKEN}` };
  const SLOW = { taskType: 'text_generation' as const, modelName: 'slow' };
  const FAST = { taskType: 'text_to_speech' as const, modelName: 'fast' };
  const createOf = async (url: string, m: typeof SLOW | typeof FAST) =>
    (await json(await post(`${url}/tasks`, { task_type: m.taskType, model_name: m.modelName, input_data: m === SLOW ? { prompt: 'p' } : { text: 't' } }))).task_id as string;
  /** Makes both models known to the server through a registration of their own. */
  const announce = (url: string) =>
    post(`${url}/workers/register`, { worker_id: 'announcer', models: [SLOW, FAST].map((m) => ({ task_type: m.taskType, model_name: m.modelName })), concurrency: 1 }, auth);
  /** The worker runtime over HTTP with 3 slots: SLOW on an engine of capacity 1, FAST on one without a limit. */
  async function cappedWorker(url: string, id: string, leaseWaitMs: number, fetchFn?: typeof fetch) {
    const slow = new GateEngine();
    slow.capacity = 1;
    const fast = new GateEngine();
    const worker = new Worker({
      id,
      transport: new HttpTransport({ serverUrl: url, token: TOKEN, fetch: fetchFn }),
      models: [
        { ...SLOW, engine: slow, modelOptions: {} },
        { ...FAST, engine: fast, modelOptions: {} },
      ],
      concurrency: 3,
      heartbeatMs: 1_000,
      leaseWaitMs,
    });
    await worker.start();
    return { worker, slow, fast };
  }

  it('a lease naming some of the worker\'s models leases only those; a model it did not register is 422; a model registers its own concurrency', async () => {
    await withRemoteServer(async (url) => {
      const models = [SLOW, FAST].map((m) => ({ task_type: m.taskType, model_name: m.modelName }));
      const zero = await post(`${url}/workers/register`, { worker_id: 'raw', models: [{ ...models[0], concurrency: 0 }, models[1]], concurrency: 4 }, auth);
      expect(zero.status).toBe(422);
      const twice = await post(`${url}/workers/register`, { worker_id: 'raw', models: [models[0], models[1], { ...models[0], concurrency: 1 }], concurrency: 4 }, auth);
      expect(twice.status).toBe(422);
      expect((await json(twice)).error).toMatchObject({ code: 'VALIDATION_ERROR', details: { field: 'models[2]', reason: 'Duplicate model' } });
      expect((await post(`${url}/workers/register`, { worker_id: 'raw', models: [{ ...models[0], concurrency: 1 }, models[1]], concurrency: 4 }, auth)).status).toBe(200);
      const listed = (await json(await fetch(`${url}/workers`))).workers.find((w: any) => w.worker_id === 'raw');
      expect(listed).toMatchObject({ concurrency: 4, models: [{ ...models[0], concurrency: 1 }, models[1]] });
      expect(Object.keys(listed.models[1])).toEqual(['task_type', 'model_name']);
      const slow = [await createOf(url, SLOW), await createOf(url, SLOW)];
      const fast = [await createOf(url, FAST), await createOf(url, FAST)];
      const leased = await json(await post(`${url}/workers/raw/lease`, { max_tasks: 4, wait_seconds: 0, models: [models[1]] }, auth));
      expect(leased.tasks.map((t: any) => t.task_id)).toEqual(fast);
      const bad = await post(`${url}/workers/raw/lease`, { max_tasks: 4, wait_seconds: 0, models: [models[1], { task_type: 'text_generation', model_name: 'other' }] }, auth);
      expect(bad.status).toBe(422);
      expect((await json(bad)).error).toMatchObject({ code: 'VALIDATION_ERROR', details: { field: 'models[1]' } });
      for (const id of slow) expect((await json(await fetch(`${url}/tasks/${id}`))).status).toBe('pending');

      // wake: answers the worker's waiting poll now; with none waiting, its next poll answers at once.
      const lease = (body: object) => post(`${url}/workers/raw/lease`, body, auth).then(json);
      const waiting = lease({ max_tasks: 1, wait_seconds: 60, models: [models[1]] });
      await new Promise((r) => setTimeout(r, 200));
      const t0 = Date.now();
      expect(await lease({ max_tasks: 0, wait_seconds: 0, wake: true })).toEqual({ tasks: [], cancelled: [] });
      expect(await waiting).toEqual({ tasks: [], cancelled: [] });
      expect(Date.now() - t0).toBeLessThan(5_000);
      await lease({ max_tasks: 0, wait_seconds: 0, wake: true });
      const t1 = Date.now();
      expect(await lease({ max_tasks: 1, wait_seconds: 60, models: [models[1]] })).toEqual({ tasks: [], cancelled: [] });
      expect(Date.now() - t1).toBeLessThan(5_000);
      // Used up: the poll after that waits for work again.
      const next = lease({ max_tasks: 1, wait_seconds: 60, models: [models[1]] });
      await new Promise((r) => setTimeout(r, 200));
      const fresh = await createOf(url, FAST);
      expect((await next).tasks.map((t: any) => t.task_id)).toEqual([fresh]);
    });
  });

  it('against a server from before scoped leases, the transport goes back to leasing for every model', async () => {
    await withRemoteServer(async (url) => {
      const bodies: any[] = [];
      const older: typeof fetch = async (input, init) => {
        if (/\/lease$/.test(String(input))) {
          const body = JSON.parse(String(init!.body));
          bodies.push(body);
          if (body.models) {
            const error = { code: 'VALIDATION_ERROR', message: 'Request validation failed', details: { field: 'models', reason: 'Unknown field' } };
            return new Response(JSON.stringify({ error }), { status: 422 });
          }
        }
        return fetch(input, init);
      };
      const t = new HttpTransport({ serverUrl: url, token: TOKEN, fetch: older });
      await t.register({ workerId: 'older', models: [SLOW, FAST], concurrency: 2 });
      const id = await createOf(url, FAST);
      const signal = new AbortController().signal;
      expect(await t.lease([FAST], 1, 100, signal)).toEqual([]);
      expect((await t.lease([FAST], 1, 1000, signal)).map((l) => l.task.id)).toEqual([id]);
      expect(bodies.map((b) => b.models?.length ?? 'all')).toEqual([1, 'all']);
      await t.unregister();
    });
  });

  it('an engine freeing while a lease for the other models is answered loses none of the tasks that lease carries', async () => {
    await withRemoteServer(async (url) => {
      await announce(url);
      // Lease answers that carry tasks take 300 ms to arrive; the slow engine frees meanwhile.
      let onTasks: (() => void) | null = null;
      const slowNetwork: typeof fetch = async (input, init) => {
        const res = await fetch(input, init);
        if (!/\/lease$/.test(String(input)) || JSON.parse(String(init!.body)).wake) return res;
        const text = await res.text();
        if (JSON.parse(text).tasks?.length) {
          onTasks?.();
          await new Promise((resolve, reject) => {
            const t = setTimeout(resolve, 300);
            init!.signal?.addEventListener('abort', () => (clearTimeout(t), reject(new DOMException('aborted', 'AbortError'))), { once: true });
          });
        }
        return new Response(text, { status: res.status, headers: res.headers });
      };
      const { worker, slow, fast } = await cappedWorker(url, 'capped', 20_000, slowNetwork);
      try {
        const s1 = await createOf(url, SLOW);
        await slow.started(1);
        // The worker now polls for FAST only. Its answer is on the way when the slow engine frees.
        onTasks = () => {
          onTasks = null;
          slow.finish(s1, {});
        };
        const f1 = await createOf(url, FAST);
        await fast.started(1, 5_000);
        expect(fast.runs[0].task.id).toBe(f1);
        fast.finish(f1, {});
        await finished(url, f1, 5_000);
        expect((await json(await fetch(`${url}/tasks/${f1}`))).attempts).toBe(1);
        // And the slow engine takes work again.
        const s2 = await createOf(url, SLOW);
        await slow.started(2, 5_000);
        expect(slow.runs[1].task.id).toBe(s2);
      } finally {
        await worker.stop(0);
      }
    });
  });

  it('the worker runtime over HTTP leases for an engine only what it can start, and the rest of its slots for its other models', async () => {
    await withRemoteServer(async (url) => {
      await announce(url);
      const slowIds = [await createOf(url, SLOW), await createOf(url, SLOW)];
      const fastIds = [await createOf(url, FAST), await createOf(url, FAST), await createOf(url, FAST)];
      const { worker, slow, fast } = await cappedWorker(url, 'scoped', 1_000);
      try {
        await slow.started(1);
        await fast.started(2);
        await new Promise((r) => setTimeout(r, 300));
        const status = async (id: string) => (await json(await fetch(`${url}/tasks/${id}`))).status;
        expect(slow.runs.map((r) => r.task.id)).toEqual([slowIds[0]]);
        expect(fast.runs.map((r) => r.task.id)).toEqual(fastIds.slice(0, 2));
        expect(await Promise.all([...slowIds, ...fastIds].map(status))).toEqual(['running', 'pending', 'running', 'running', 'pending']);
        fast.finish(fastIds[0], {});
        await fast.started(3);
        expect(fast.runs[2].task.id).toBe(fastIds[2]);
        expect(slow.runs).toHaveLength(1);
        slow.finish(slowIds[0], {});
        await slow.started(2);
        expect(slow.runs[1].task.id).toBe(slowIds[1]);
        const registered = (await json(await fetch(`${url}/workers`))).workers.find((w: any) => w.worker_id === 'scoped');
        expect(registered.models).toEqual([
          { task_type: SLOW.taskType, model_name: SLOW.modelName, concurrency: 1 },
          { task_type: FAST.taskType, model_name: FAST.modelName },
        ]);
      } finally {
        await worker.stop(0);
      }
    });
  });
});

describe('the HTTP worker transport on a bad network', () => {
  it('a server that accepts and never answers fails each request after the timeout, a long-poll after its wait on top', async () => {
    const sockets = new Set<Socket>();
    const silent = createServer((s) => sockets.add(s));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    try {
      for (const viaFetch of [false, true]) {
        const t = new HttpTransport({ serverUrl: url, token: TOKEN, requestTimeoutMs: 300, ...(viaFetch ? { fetch } : {}) });
        const started = Date.now();
        const err = await t.register({ workerId: 'w', models: [], concurrency: 1 }).then(
          () => null,
          (e: { code?: string }) => e,
        );
        expect(err).toMatchObject({ code: 'ETIMEDOUT' });
        expect(Date.now() - started).toBeGreaterThanOrEqual(250);
      }
    } finally {
      for (const s of sockets) s.destroy();
      silent.close();
    }
    // A long-poll that hangs: its wait, then the timeout.
    await withRemoteServer(async (url) => {
      const hangingPolls: typeof fetch = (input, init) =>
        /\/lease$/.test(String(input))
          ? new Promise((_, reject) => init!.signal!.addEventListener('abort', () => reject(init!.signal!.reason)))
          : fetch(input, init);
      const t = new HttpTransport({ serverUrl: url, token: TOKEN, requestTimeoutMs: 300, fetch: hangingPolls });
      await t.register({ workerId: 'polls', models: [{ taskType: 'text_generation', modelName: 'm' }], concurrency: 1 });
      const started = Date.now();
      const err = await t.lease([], 1, 400, new AbortController().signal).then(
        () => null,
        (e: { code?: string }) => e,
      );
      expect(err).toMatchObject({ code: 'ETIMEDOUT' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(650);
    });
  });

  it('a report is sent again until it lands while the lease may still be held, then given up', async () => {
    await withRemoteServer(async (url) => {
      let failuresLeft = 7;
      const flaky: typeof fetch = (input, init) => {
        if (/\/complete$/.test(String(input)) && failuresLeft > 0) {
          failuresLeft--;
          return Promise.reject(new TypeError('fetch failed'));
        }
        return fetch(input, init);
      };
      const t = new HttpTransport({ serverUrl: url, token: TOKEN, fetch: flaky, retryBaseMs: 10 });
      const models = [{ taskType: 'text_generation' as const, modelName: 'm' }];
      await t.register({ workerId: 'flaky', models, concurrency: 1 });
      const id = (await json(await post(`${url}/tasks`, { task_type: 'text_generation', model_name: 'm', input_data: { prompt: 'x' } }))).task_id;
      const [leased] = await t.lease(models, 1, 1000, new AbortController().signal);
      // Seven failed tries (more than the five a report used to get), then the eighth lands.
      expect(await t.complete(id, leased.leaseToken, { done: true })).toBe('ok');
      expect(failuresLeft).toBe(0);
      expect(await json(await fetch(`${url}/tasks/${id}`))).toMatchObject({ status: 'completed', attempts: 1, result: { done: true } });
    });
    // With a 1 s lease, a network that never comes back is given up on after about that long.
    const dir = tempDir();
    const srv = await spawnServer({ DATABASE_URL: `sqlite:${join(dir.path, 'g.db')}`, TASK_MANAGER_EMBEDDED_WORKER: 'false', TASK_MANAGER_WORKER_TOKEN: TOKEN, TASK_MANAGER_LEASE_SECONDS: '1' });
    try {
      const down: typeof fetch = (input, init) => (/\/complete$/.test(String(input)) ? Promise.reject(new TypeError('fetch failed')) : fetch(input, init));
      const t = new HttpTransport({ serverUrl: srv.url, token: TOKEN, fetch: down, retryBaseMs: 10 });
      const models = [{ taskType: 'text_generation' as const, modelName: 'm' }];
      await t.register({ workerId: 'cut-off', models, concurrency: 1 });
      await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'm', input_data: { prompt: 'x' } });
      const [leased] = await t.lease(models, 1, 1000, new AbortController().signal);
      const started = Date.now();
      await expect(t.complete(leased.task.id, leased.leaseToken, {})).rejects.toThrow('fetch failed');
      const took = Date.now() - started;
      expect(took).toBeGreaterThanOrEqual(500);
      expect(took).toBeLessThan(10_000);
    } finally {
      srv.child.kill('SIGKILL');
      await srv.exited;
      dir.cleanup();
    }
  });
});
