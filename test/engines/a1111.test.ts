/** A1111Engine against a stand-in AUTOMATIC1111 API server (txt2img, progress, interrupt). */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EngineError, RetryableEngineError, type EngineContext, type EngineTask } from '../../src/core/engine.js';
import { A1111Engine } from '../../src/engines/a1111.js';
import { startA1111Standin, type A1111Standin } from '../helpers/a1111-standin.js';
import { sendJson } from '../helpers/openai-standin.js';

function task(inputData: Record<string, unknown>, parameters: Record<string, unknown> = {}, modelOptions: Record<string, unknown> = {}): EngineTask {
  return { id: 'task-1', taskType: 'image_generation', modelName: 'sd15', inputData, parameters, modelOptions };
}

function context(signal: AbortSignal = new AbortController().signal): EngineContext & { progress: number[] } {
  const progress: number[] = [];
  return { signal, progress, reportProgress: (p) => progress.push(p) };
}

async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a rejection');
}

async function waitFor<T>(fn: () => T | undefined | null | false, timeoutMs = 3_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('A1111Engine', () => {
  let remote: A1111Standin;
  const engine = new A1111Engine({ pollIntervalMs: 50 });

  beforeAll(async () => {
    remote = await startA1111Standin();
  });
  afterAll(async () => {
    await remote.close();
  });
  afterEach(() => {
    remote.options = {};
    remote.requests.length = 0;
  });
  const txt2imgRequests = () => remote.requests.filter((r) => r.path === '/sdapi/v1/txt2img');

  it('maps the request, polls progress upward and returns byte-exact images with the seed', async () => {
    remote.options.stepMs = 15;
    const ctx = context();
    const out = await engine.run(
      task(
        { prompt: 'a lighthouse at dusk', negative_prompt: 'people' },
        { width: 128, height: 64, steps: 30, guidance_scale: 6.5, sampler: 'DPM++ 2M', num_images: 2 },
        { base_url: remote.url, checkpoint: 'dreamshaper_8.safetensors' },
      ),
      ctx,
    );
    const [req] = txt2imgRequests();
    expect(req.method).toBe('POST');
    expect(req.body).toEqual({
      prompt: 'a lighthouse at dusk',
      negative_prompt: 'people',
      width: 128,
      height: 64,
      steps: 30,
      cfg_scale: 6.5,
      seed: -1,
      sampler_name: 'DPM++ 2M',
      batch_size: 2,
      n_iter: 1,
      send_images: true,
      save_images: false,
      override_settings: { sd_model_checkpoint: 'dreamshaper_8.safetensors' },
      override_settings_restore_afterwards: false,
    });
    expect(remote.checkpoint).toBe('dreamshaper_8.safetensors');

    const polls = remote.requests.filter((r) => r.path === '/sdapi/v1/progress');
    expect(polls.length).toBeGreaterThanOrEqual(3);
    expect(polls[0].query.get('skip_current_image')).toBe('true');
    expect(ctx.progress.length).toBeGreaterThanOrEqual(3);
    expect(ctx.progress.every((p, i) => i === 0 || p > ctx.progress[i - 1])).toBe(true);
    expect(ctx.progress[0]).toBeGreaterThan(0);
    expect(ctx.progress.at(-1)).toBe(1);

    const sent = remote.sentImages[remote.sentImages.length - 1];
    expect(out.artifacts!.map((a) => [a.name, a.contentType])).toEqual([
      ['image-0.png', 'image/png'],
      ['image-1.png', 'image/png'],
    ]);
    expect(out.artifacts![0].data.equals(sent[0])).toBe(true);
    expect(out.artifacts![1].data.equals(sent[1])).toBe(true);
    expect(out.result.images).toEqual(['image-0.png', 'image-1.png']);
    const seed = out.result.seed as number;
    expect(Number.isInteger(seed)).toBe(true);
    expect(out.result.seeds).toEqual([seed, seed + 1]);
    expect(out.result.inference_time).toBeTypeOf('number');
    // no more polling once the request is over (a poll cut short at the end may still land: let it)
    const pollCount = () => remote.requests.filter((r) => r.path === '/sdapi/v1/progress').length;
    await new Promise((r) => setTimeout(r, 50));
    const after = pollCount();
    await new Promise((r) => setTimeout(r, 250));
    expect(pollCount()).toBe(after);
  });

  it('sends a fixed seed, leaves unset fields to the server, and reports the seed used', async () => {
    const out = await engine.run(task({ prompt: 'x' }, { seed: 1234, steps: 2 }, { base_url: remote.url }), context());
    const [req] = txt2imgRequests();
    expect(req.body).toEqual({ prompt: 'x', negative_prompt: '', steps: 2, seed: 1234, batch_size: 1, n_iter: 1, send_images: true, save_images: false });
    expect(out.result.seed).toBe(1234);
    expect(out.artifacts).toHaveLength(1);
    // the default 512×512 of the server
    expect(out.artifacts![0].data.readUInt32BE(16)).toBe(512);
  });

  it('keeps the batch when a grid comes first and extensions append images', async () => {
    remote.options.returnGrid = true;
    remote.options.extraImages = 2;
    const out = await engine.run(task({ prompt: 'x' }, { num_images: 2, steps: 2, width: 64, height: 64 }, { base_url: remote.url }), context());
    const sent = remote.sentImages[remote.sentImages.length - 1];
    expect(out.artifacts).toHaveLength(2);
    expect(out.artifacts![0].data.equals(sent[0])).toBe(true);
    expect(out.artifacts![1].data.equals(sent[1])).toBe(true);
  });

  it('names and types non-PNG output by its bytes', async () => {
    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 9, 8, 7, 6, 0xff, 0xd9]);
    remote.options.images = [jpeg];
    const out = await engine.run(task({ prompt: 'x' }, { steps: 1 }, { base_url: remote.url }), context());
    expect(out.artifacts![0]).toMatchObject({ name: 'image-0.jpg', contentType: 'image/jpeg' });
    expect(out.artifacts![0].data.equals(jpeg)).toBe(true);
    expect(out.result.images).toEqual(['image-0.jpg']);
  });

  it('an unknown sampler (404) → EngineError REMOTE_REJECTED with the remote message', async () => {
    const err = await rejection(engine.run(task({ prompt: 'x' }, { sampler: 'Nope++' }, { base_url: remote.url }), context()));
    expect(err).toBeInstanceOf(EngineError);
    expect(err).not.toBeInstanceOf(RetryableEngineError);
    expect(err.code).toBe('REMOTE_REJECTED');
    expect(err.message).toContain('Sampler not found');
  });

  it('a 400 and a 422 from the remote → REMOTE_REJECTED with the message', async () => {
    remote.options.intercept = (req, res) => {
      if (req.path !== '/sdapi/v1/txt2img') return false;
      sendJson(res, 400, { error: 'HTTPException', detail: 'Invalid checkpoint name', body: '', errors: '' });
      return true;
    };
    const err = await rejection(engine.run(task({ prompt: 'x' }, {}, { base_url: remote.url }), context()));
    expect(err.code).toBe('REMOTE_REJECTED');
    expect(err.message).toContain('HTTP 400');
    expect(err.message).toContain('Invalid checkpoint name');

    remote.options.intercept = (req, res) => {
      if (req.path !== '/sdapi/v1/txt2img') return false;
      sendJson(res, 422, { detail: [{ loc: ['body', 'width'], msg: 'value is not a valid integer', type: 'type_error.integer' }] });
      return true;
    };
    const err2 = await rejection(engine.run(task({ prompt: 'x' }, {}, { base_url: remote.url }), context()));
    expect(err2.code).toBe('REMOTE_REJECTED');
    expect(err2.message).toContain('body.width: value is not a valid integer');
  });

  it('503 and 500 → RetryableEngineError REMOTE_UNAVAILABLE', async () => {
    for (const status of [503, 500]) {
      remote.options.intercept = (req, res) => {
        if (req.path !== '/sdapi/v1/txt2img') return false;
        sendJson(res, status, { error: 'OutOfMemoryError', detail: '', body: '', errors: 'CUDA out of memory. Tried to allocate 2.00 GiB' });
        return true;
      };
      const err = await rejection(engine.run(task({ prompt: 'x' }, {}, { base_url: remote.url }), context()));
      expect(err).toBeInstanceOf(RetryableEngineError);
      expect(err.code).toBe('REMOTE_UNAVAILABLE');
      expect(err.message).toContain('CUDA out of memory');
    }
  });

  it('connection refused → RetryableEngineError REMOTE_UNAVAILABLE', async () => {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    const err = await rejection(engine.run(task({ prompt: 'x' }, {}, { base_url: `http://127.0.0.1:${port}` }), context()));
    expect(err).toBeInstanceOf(RetryableEngineError);
    expect(err.code).toBe('REMOTE_UNAVAILABLE');
    expect(err.message).toContain('ECONNREFUSED');
  });

  it('a 200 without images → REMOTE_BAD_RESPONSE', async () => {
    remote.options.intercept = (req, res) => {
      if (req.path !== '/sdapi/v1/txt2img') return false;
      sendJson(res, 200, { images: [], parameters: {}, info: '{}' });
      return true;
    };
    const err = await rejection(engine.run(task({ prompt: 'x' }, {}, { base_url: remote.url }), context()));
    expect(err).toBeInstanceOf(EngineError);
    expect(err.code).toBe('REMOTE_BAD_RESPONSE');
  });

  it('abort rejects within 1 s and interrupts the job on the server', async () => {
    remote.options.stepMs = 50;
    const controller = new AbortController();
    const ctx = context(controller.signal);
    const interruptsBefore = remote.interrupts;
    const run = engine.run(task({ prompt: 'x' }, { steps: 150 }, { base_url: remote.url }), ctx);
    run.catch(() => {});
    await waitFor(() => ctx.progress.length >= 2);
    const job = remote.jobs[remote.jobs.length - 1];
    const t0 = Date.now();
    controller.abort('cancelled');
    const err = await rejection(run);
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(err).toBeInstanceOf(EngineError);
    expect(err.code).toBe('ABORTED');
    await waitFor(() => remote.interrupts === interruptsBefore + 1);
    expect(remote.requests.some((r) => r.method === 'POST' && r.path === '/sdapi/v1/interrupt')).toBe(true);
    await waitFor(() => job.done);
    expect(job.interrupted).toBe(true);
    expect(job.step).toBeLessThan(150);
    // the txt2img connection was dropped by the client too
    await expect(txt2imgRequests()[0].ended).resolves.toBe('client-closed');
    await engine.close();
  });

  it('requestTimeoutMs → REMOTE_UNAVAILABLE and an interrupt', async () => {
    const quick = new A1111Engine({ requestTimeoutMs: 200, pollIntervalMs: 50 });
    remote.options.stepMs = 50;
    const before = remote.interrupts;
    const err = await rejection(quick.run(task({ prompt: 'x' }, { steps: 100 }, { base_url: remote.url }), context()));
    expect(err).toBeInstanceOf(RetryableEngineError);
    expect(err.code).toBe('REMOTE_UNAVAILABLE');
    expect(err.message).toContain('200 ms');
    await waitFor(() => remote.interrupts === before + 1);
    await waitFor(() => remote.jobs.every((j) => j.done));
  });

  it('refuses other task types', async () => {
    const err = await rejection(engine.run({ ...task({ prompt: 'x' }), taskType: 'text_generation' }, context()));
    expect(err).toBeInstanceOf(EngineError);
    expect(err.code).toBe('UNSUPPORTED_TASK_TYPE');
  });
});
