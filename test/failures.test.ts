/** Failures are results too: each ends in a clear failed state with a code, never a hung task. */
import { afterEach, describe, expect, it } from 'vitest';
import { ModelCatalog } from '../src/core/catalog.js';
import { A1111Engine } from '../src/engines/a1111.js';
import { LlamaCppEngine } from '../src/engines/llama-cpp.js';
import { freePort } from './helpers/process.js';
import { json, post, startServer, waitFor, type TestServer } from './helpers/server.js';

const TOKEN = 'failures-worker-token-000';

async function final(srv: TestServer, id: string, timeoutMs = 20_000) {
  return waitFor(async () => {
    const t = await json(await fetch(`${srv.url}/tasks/${id}`));
    return ['completed', 'failed', 'cancelled'].includes(t.status) ? t : null;
  }, timeoutMs, 'final state');
}

describe('failures end in a clear failed state', () => {
  let srv: TestServer | null = null;
  afterEach(async () => {
    await srv?.close();
    srv = null;
  });

  it('an unloadable model fails with MODEL_LOAD_FAILED', async () => {
    const catalog = ModelCatalog.parse({
      models: [{ name: 'broken-llm', task_type: 'text_generation', engine: 'llama-cpp', options: { model_path: 'models/does-not-exist.gguf' } }],
    });
    const engine = new LlamaCppEngine({ threads: 1 });
    srv = await startServer({ catalog, engines: { 'llama-cpp': engine } });
    const t = await json(await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'broken-llm', input_data: { prompt: 'hi' } }));
    const done = await final(srv, t.task_id);
    expect(done.status).toBe('failed');
    expect(done.error.code).toBe('MODEL_LOAD_FAILED');
    expect(done.error.message).toContain('does-not-exist.gguf');
    expect(done.attempts).toBe(1);
    await engine.close();
  });

  it('an unreachable remote server is retried, then fails with REMOTE_UNAVAILABLE', async () => {
    const port = await freePort(); // nothing listens here
    const catalog = ModelCatalog.parse({
      models: [{ name: 'sd-down', task_type: 'image_generation', engine: 'a1111', options: { base_url: `http://127.0.0.1:${port}` } }],
    });
    srv = await startServer({ catalog, engines: { a1111: new A1111Engine() } });
    const t = await json(await post(`${srv.url}/tasks`, { task_type: 'image_generation', model_name: 'sd-down', input_data: { prompt: 'x' }, max_attempts: 2 }));
    const done = await final(srv, t.task_id);
    expect(done.status).toBe('failed');
    expect(done.error.code).toBe('REMOTE_UNAVAILABLE');
    expect(done.attempts).toBe(2);
  });
});

describe('models known only through live workers', () => {
  let srv: TestServer | null = null;
  afterEach(async () => {
    await srv?.close();
    srv = null;
  });

  it('accepts a model a live worker advertises, and refuses it once no worker serves it', async () => {
    srv = await startServer({ env: { TASK_MANAGER_WORKER_TOKEN: TOKEN } });
    const body = { task_type: 'text_generation', model_name: 'llama-3-70b', input_data: { prompt: 'hi' } };
    expect((await post(`${srv.url}/tasks`, body)).status).toBe(400);
    const reg = await post(`${srv.url}/workers/register`, { worker_id: 'big-gpu', models: [{ task_type: 'text_generation', model_name: 'llama-3-70b' }], concurrency: 8, hardware: { gpu_name: 'H200' } }, { authorization: `Bearer ${TOKEN}` });
    expect(reg.status).toBe(200);
    const created = await post(`${srv.url}/tasks`, body);
    expect(created.status).toBe(201);
    const models = await json(await fetch(`${srv.url}/models`));
    expect(models.models.find((m: any) => m.model_name === 'llama-3-70b')).toMatchObject({ in_catalog: false, available: true, workers: ['big-gpu'], engine: 'remote' });
    const wrongType = await post(`${srv.url}/tasks`, { task_type: 'text_to_speech', model_name: 'llama-3-70b', input_data: { text: 'x' } });
    expect(wrongType.status).toBe(400);
    expect((await json(wrongType)).error.code).toBe('MODEL_NOT_FOUND');
    await fetch(`${srv.url}/workers/big-gpu`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
    expect((await post(`${srv.url}/tasks`, body)).status).toBe(400);
  });

  it('WORKER_UNAVAILABLE (503) when configured to refuse models no worker serves', async () => {
    srv = await startServer({ env: { TASK_MANAGER_REJECT_WITHOUT_WORKER: 'true' } });
    const res = await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'hi' } });
    expect(res.status).toBe(503);
    const body = await json(res);
    expect(body.error.code).toBe('WORKER_UNAVAILABLE');
  });

  it('queues by default when no worker serves the model, with an estimate', async () => {
    srv = await startServer();
    const res = await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'hi' } });
    expect(res.status).toBe(201);
    expect((await json(res)).estimated_completion).toBeTruthy();
  });
});

describe('estimates learn from observed run times', () => {
  it('estimated_completion and queue_position follow the queue and the measured mean', async () => {
    const { GateEngine } = await import('./helpers/engines.js');
    const engine = new GateEngine();
    const srv = await startServer({ engines: { gate: engine }, env: { TASK_MANAGER_WORKER_CONCURRENCY: '1' } });
    try {
      // Observe one run of ~300 ms.
      const first = await json(await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'a' } }));
      await engine.started(1);
      await new Promise((r) => setTimeout(r, 300));
      engine.finish(first.task_id, {});
      await final(srv, first.task_id);
      const mean = srv.app.services.queue.eta.meanRunMs({ taskType: 'text_generation', modelName: 'test-llm' });
      expect(mean).toBeGreaterThanOrEqual(250);
      expect(mean).toBeLessThan(5000); // the default guess was 5000
      // One runs, three wait: the last one is third in line.
      const ids = [];
      for (let i = 0; i < 4; i++) ids.push((await json(await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: `q${i}` } }))).task_id);
      await engine.started(2);
      // Past the 250 ms the counters are cached for, so this read counts the running task.
      await new Promise((r) => setTimeout(r, 300));
      const before = Date.now();
      const last = await json(await fetch(`${srv.url}/tasks/${ids[3]}`));
      const after = Date.now();
      expect(last.queue_position).toBe(2);
      // Half a run left of the running one, two runs ahead, then its own, from the server's now.
      const eta = Date.parse(last.estimated_completion);
      expect(eta - before).toBeGreaterThanOrEqual(3.5 * mean - 1);
      expect(eta - after).toBeLessThanOrEqual(3.5 * mean + 1);
    } finally {
      await srv.close();
    }
  });
});
