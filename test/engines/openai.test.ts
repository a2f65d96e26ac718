/** OpenAiEngine against a stand-in OpenAI-compatible server speaking the real HTTP/SSE protocol. */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { EngineError, RetryableEngineError, type EngineContext, type EngineTask } from '../../src/core/engine.js';
import type { TaskType } from '../../src/core/task.js';
import { OpenAiEngine } from '../../src/engines/openai.js';
import { makePng, makeWav, sendJson, startOpenAiStandin, type OpenAiStandin } from '../helpers/openai-standin.js';

function task(taskType: TaskType, inputData: Record<string, unknown>, parameters: Record<string, unknown> = {}, modelOptions: Record<string, unknown> = {}): EngineTask {
  return { id: 'task-1', taskType, modelName: 'catalog-name', inputData, parameters, modelOptions };
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

const isNonDecreasing = (xs: number[]) => xs.every((x, i) => i === 0 || x >= xs[i - 1]);

describe('OpenAiEngine', () => {
  let remote: OpenAiStandin;
  const engine = new OpenAiEngine();

  beforeAll(async () => {
    remote = await startOpenAiStandin();
  });
  afterAll(async () => {
    await remote.close();
  });
  afterEach(() => {
    remote.options = {};
    remote.requests.length = 0;
    delete process.env.TM_TEST_OPENAI_KEY;
  });
  const mo = (extra: Record<string, unknown> = {}) => ({ base_url: remote.url, model: 'served-model-id', ...extra });

  describe('text_generation (chat)', () => {
    it('streams a chat completion: request mapping, text in order, usage, rising progress', async () => {
      remote.options.reply = () => 'one two three four five six seven eight nine ten';
      const ctx = context();
      const out = await engine.run(
        task(
          'text_generation',
          { prompt: 'Count to ten', system_prompt: 'You count.' },
          { max_length: 20, do_sample: false, temperature: 0.9, top_p: 0.5, stop: ['END'], seed: 7, top_k: 40, repetition_penalty: 1.1 },
          mo(),
        ),
        ctx,
      );
      expect(remote.requests).toHaveLength(1);
      const req = remote.requests[0];
      expect(req.method).toBe('POST');
      expect(req.path).toBe('/v1/chat/completions');
      expect(req.headers.authorization).toBeUndefined();
      expect(req.headers['content-type']).toBe('application/json');
      expect(req.body).toEqual({
        model: 'served-model-id',
        messages: [
          { role: 'system', content: 'You count.' },
          { role: 'user', content: 'Count to ten' },
        ],
        max_tokens: 20,
        temperature: 0,
        top_p: 0.5,
        stop: ['END'],
        seed: 7,
        stream: true,
        stream_options: { include_usage: true },
      });
      expect(out.result).toMatchObject({
        generated_text: 'one two three four five six seven eight nine ten',
        tokens_generated: 10,
        finish_reason: 'stop',
      });
      expect(out.result.inference_time).toBeTypeOf('number');
      expect(out.artifacts).toBeUndefined();
      // one report per streamed token (tokens/max_tokens), then 1
      expect(ctx.progress).toHaveLength(11);
      expect(ctx.progress[0]).toBeCloseTo(1 / 20);
      expect(ctx.progress[9]).toBeCloseTo(10 / 20);
      expect(ctx.progress.at(-1)).toBe(1);
      expect(isNonDecreasing(ctx.progress)).toBe(true);
    });

    it('maps max_tokens over max_length, keeps temperature when sampling, defaults the model id to the catalog name', async () => {
      const out = await engine.run(
        task('text_generation', { prompt: 'alpha beta gamma delta epsilon' }, { max_tokens: 3, max_length: 50, temperature: 0.7 }, { base_url: remote.url }),
        context(),
      );
      const body = remote.requests[0].body;
      expect(body.model).toBe('catalog-name');
      expect(body.max_tokens).toBe(3);
      expect(body.temperature).toBe(0.7);
      expect(body.messages).toEqual([{ role: 'user', content: 'alpha beta gamma delta epsilon' }]);
      expect(out.result).toMatchObject({ generated_text: 'You said: alpha', tokens_generated: 3, finish_reason: 'length' });
    });

    it('assembles a long stream in order', async () => {
      const words = Array.from({ length: 300 }, (_, i) => `w${i}`);
      remote.options.reply = () => words.join(' ');
      remote.options.tokenDelayMs = 0;
      const ctx = context();
      const out = await engine.run(task('text_generation', { prompt: 'go' }, { max_tokens: 1000 }, mo()), ctx);
      expect(out.result.generated_text).toBe(words.join(' '));
      expect(out.result.tokens_generated).toBe(300);
      expect(isNonDecreasing(ctx.progress)).toBe(true);
      expect(ctx.progress.length).toBeGreaterThan(300);
    });

    it('counts streamed chunks when the server sends no usage', async () => {
      remote.options.noStreamUsage = true;
      remote.options.reply = () => 'a b c d';
      const out = await engine.run(task('text_generation', { prompt: 'x' }, {}, mo()), context());
      expect(remote.requests[0].body.max_tokens).toBeUndefined();
      expect(out.result).toMatchObject({ generated_text: 'a b c d', tokens_generated: 4, finish_reason: 'stop' });
      // a catalog entry can leave stream_options out for servers that refuse it
      const out2 = await engine.run(task('text_generation', { prompt: 'x' }, {}, mo({ stream_usage: false })), context());
      expect(remote.requests[1].body.stream).toBe(true);
      expect(remote.requests[1].body.stream_options).toBeUndefined();
      expect(out2.result.tokens_generated).toBe(4);
    });

    it('accepts a plain JSON answer from a server that ignores stream', async () => {
      remote.options.ignoreStream = true;
      remote.options.reply = () => 'not streamed at all';
      const ctx = context();
      const out = await engine.run(task('text_generation', { prompt: 'x' }, { max_tokens: 10 }, mo()), ctx);
      expect(out.result).toMatchObject({ generated_text: 'not streamed at all', tokens_generated: 4, finish_reason: 'stop' });
      expect(ctx.progress).toEqual([1]);
    });

    it('sends Authorization only when a key is configured (api_key_env, api_key)', async () => {
      remote.options.apiKey = 'sk-test-secret-123';
      process.env.TM_TEST_OPENAI_KEY = 'sk-test-secret-123';
      await engine.run(task('text_generation', { prompt: 'x' }, {}, mo({ api_key_env: 'TM_TEST_OPENAI_KEY' })), context());
      expect(remote.requests[0].headers.authorization).toBe('Bearer sk-test-secret-123');

      await engine.run(task('text_generation', { prompt: 'x' }, {}, mo({ api_key: 'sk-test-secret-123' })), context());
      expect(remote.requests[1].headers.authorization).toBe('Bearer sk-test-secret-123');

      // a variable that is named but unset: no header at all, and the remote's 401 is a rejection
      delete process.env.TM_TEST_OPENAI_KEY;
      const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, mo({ api_key_env: 'TM_TEST_OPENAI_KEY' })), context()));
      expect(remote.requests[2].headers.authorization).toBeUndefined();
      expect(err).toBeInstanceOf(EngineError);
      expect(err.code).toBe('REMOTE_REJECTED');
      expect(err.message).toContain("You didn't provide an API key.");
    });

    it('never leaks the API key, even when the remote echoes it back', async () => {
      remote.options.apiKey = 'sk-the-right-one';
      const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, mo({ api_key: 'sk-wrong-key-4242' })), context()));
      expect(remote.requests[0].headers.authorization).toBe('Bearer sk-wrong-key-4242');
      expect(err).toBeInstanceOf(EngineError);
      expect(err.code).toBe('REMOTE_REJECTED');
      expect(err.message).toContain('Incorrect API key provided');
      expect(err.message).not.toContain('sk-wrong-key-4242');
      expect(String(err.stack)).not.toContain('sk-wrong-key-4242');
    });
  });

  describe('text_generation (completions)', () => {
    it('streams /completions with a prompt string', async () => {
      remote.options.reply = () => 'Once upon a time there was a test';
      const ctx = context();
      const out = await engine.run(
        task('text_generation', { prompt: 'Tell a story', system_prompt: 'ignored here' }, { max_tokens: 100, do_sample: false }, mo({ api: 'completions' })),
        ctx,
      );
      const req = remote.requests[0];
      expect(req.path).toBe('/v1/completions');
      expect(req.body).toMatchObject({ model: 'served-model-id', prompt: 'Tell a story', max_tokens: 100, temperature: 0, stream: true });
      expect(req.body.messages).toBeUndefined();
      expect(out.result).toMatchObject({ generated_text: 'Once upon a time there was a test', tokens_generated: 8, finish_reason: 'stop' });
      expect(isNonDecreasing(ctx.progress)).toBe(true);
      expect(ctx.progress.at(-1)).toBe(1);
    });

    it('asks for more than the endpoint default of 16 tokens when no limit is given', async () => {
      await engine.run(task('text_generation', { prompt: 'x' }, {}, mo({ api: 'completions' })), context());
      expect(remote.requests[0].body.max_tokens).toBe(256);
    });
  });

  describe('image_generation', () => {
    it('posts images/generations and returns byte-exact PNG artifacts', async () => {
      const ctx = context();
      const out = await engine.run(
        task('image_generation', { prompt: 'a red fox', negative_prompt: 'blurry' }, { width: 256, height: 128, num_images: 2, steps: 20 }, mo()),
        ctx,
      );
      const req = remote.requests[0];
      expect(req.path).toBe('/v1/images/generations');
      expect(req.body).toEqual({ model: 'served-model-id', prompt: 'a red fox', n: 2, size: '256x128', response_format: 'b64_json' });
      const sent = remote.sentImages[remote.sentImages.length - 1];
      expect(out.artifacts).toHaveLength(2);
      expect(out.artifacts!.map((a) => a.name)).toEqual(['image-0.png', 'image-1.png']);
      for (const [i, a] of out.artifacts!.entries()) {
        expect(a.contentType).toBe('image/png');
        expect(a.data.equals(sent[i])).toBe(true);
      }
      expect(out.result.images).toEqual(['image-0.png', 'image-1.png']);
      expect(out.result.inference_time).toBeTypeOf('number');
      expect((out.result.warnings as string[]).join(' ')).toMatch(/negative_prompt.*ignored/);
      expect((out.result.warnings as string[]).join(' ')).toMatch(/steps/);
      expect(ctx.progress.at(-1)).toBe(1);
    });

    it('sniffs the content type of what comes back (JPEG, WebP)', async () => {
      const jpeg = Buffer.concat([Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10]), Buffer.from('JFIF\0 fake jpeg body'), Buffer.from([0xff, 0xd9])]);
      const webp = Buffer.concat([Buffer.from('RIFF'), Buffer.from([20, 0, 0, 0]), Buffer.from('WEBPVP8 fake webp body')]);
      remote.options.images = [jpeg, webp];
      const out = await engine.run(task('image_generation', { prompt: 'x' }, { num_images: 2 }, mo()), context());
      expect(remote.requests[0].body.size).toBeUndefined();
      expect(out.artifacts!.map((a) => [a.name, a.contentType])).toEqual([
        ['image-0.jpg', 'image/jpeg'],
        ['image-1.webp', 'image/webp'],
      ]);
      expect(out.artifacts![0].data.equals(jpeg)).toBe(true);
      expect(out.artifacts![1].data.equals(webp)).toBe(true);
    });

    it('refuses bytes that are not an image as a bad response', async () => {
      remote.options.images = [Buffer.from('definitely not an image')];
      const err = await rejection(engine.run(task('image_generation', { prompt: 'x' }, {}, mo()), context()));
      expect(err).toBeInstanceOf(EngineError);
      expect(err.code).toBe('REMOTE_BAD_RESPONSE');
    });
  });

  describe('text_to_speech', () => {
    it('posts audio/speech and returns the WAV byte-exactly', async () => {
      const out = await engine.run(task('text_to_speech', { text: 'Hello there' }, { speed: 1.5 }, mo({ voice: 'nova' })), context());
      const req = remote.requests[0];
      expect(req.path).toBe('/v1/audio/speech');
      expect(req.body).toEqual({ model: 'served-model-id', input: 'Hello there', voice: 'nova', response_format: 'wav', speed: 1.5 });
      const sent = remote.sentSpeech[remote.sentSpeech.length - 1];
      expect(out.artifacts).toHaveLength(1);
      expect(out.artifacts![0]).toMatchObject({ name: 'speech.wav', contentType: 'audio/wav' });
      expect(out.artifacts![0].data.equals(sent)).toBe(true);
      expect(out.result).toMatchObject({ audio: 'speech.wav', format: 'wav', bytes: sent.length });
    });

    it('voice: parameter, then catalog option, then alloy', async () => {
      await engine.run(task('text_to_speech', { text: 'a' }, { voice: 'echo' }, mo({ voice: 'nova' })), context());
      await engine.run(task('text_to_speech', { text: 'a' }, {}, mo()), context());
      expect(remote.requests.map((r) => r.body.voice)).toEqual(['echo', 'alloy']);
      expect(remote.requests[1].body.speed).toBeUndefined();
    });

    it('refuses audio that is not WAV', async () => {
      remote.options.speech = Buffer.from([0x49, 0x44, 0x33, 3, 0, 0, 0, 0, 0, 0, 1, 2, 3]); // an ID3 (mp3) header
      const err = await rejection(engine.run(task('text_to_speech', { text: 'a' }, {}, mo()), context()));
      expect(err.code).toBe('REMOTE_BAD_RESPONSE');
      expect(err.message).toContain('WAV');
    });
  });

  describe('image_to_text', () => {
    it('sends a vision message with a data URL for raw base64 and returns the text', async () => {
      const png = makePng(8, 8, 3);
      const ctx = context();
      const out = await engine.run(task('image_to_text', { image: png.toString('base64') }, { max_tokens: 64 }, mo()), ctx);
      const req = remote.requests[0];
      expect(req.path).toBe('/v1/chat/completions');
      expect(req.body.model).toBe('served-model-id');
      expect(req.body.max_tokens).toBe(64);
      expect(req.body.messages).toEqual([
        {
          role: 'user',
          content: [
            { type: 'text', text: 'Describe this image.' },
            { type: 'image_url', image_url: { url: `data:image/png;base64,${png.toString('base64')}` } },
          ],
        },
      ]);
      expect(out.result.text).toBe(`A image/png image of ${png.length} bytes. Prompt: Describe this image.`);
      expect(out.result.inference_time).toBeTypeOf('number');
      expect(ctx.progress.at(-1)).toBe(1);
    });

    it('re-labels a data URL by its real bytes and keeps the prompt', async () => {
      const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xdb, 1, 2, 3, 4, 0xff, 0xd9]);
      const out = await engine.run(task('image_to_text', { image: `data:image/png;base64,${jpeg.toString('base64')}`, prompt: 'What is written?' }, {}, mo()), context());
      const content = remote.requests[0].body.messages[0].content;
      expect(content[0]).toEqual({ type: 'text', text: 'What is written?' });
      expect(content[1].image_url.url).toBe(`data:image/jpeg;base64,${jpeg.toString('base64')}`);
      expect(out.result.text).toContain('image/jpeg');
    });

    it('refuses input that is not an image without calling the remote', async () => {
      const err = await rejection(engine.run(task('image_to_text', { image: Buffer.from('hello world').toString('base64') }, {}, mo()), context()));
      expect(err).toBeInstanceOf(EngineError);
      expect(err.code).toBe('INVALID_IMAGE');
      expect(remote.requests).toHaveLength(0);
    });
  });

  describe('remote failures', () => {
    it('400 from the remote → EngineError REMOTE_REJECTED with the remote message', async () => {
      remote.options.models = ['only-this-one'];
      const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, mo()), context()));
      expect(err).toBeInstanceOf(EngineError);
      expect(err).not.toBeInstanceOf(RetryableEngineError);
      expect(err.code).toBe('REMOTE_REJECTED');
      expect(err.message).toContain('The model `served-model-id` does not exist');

      remote.options.models = undefined;
      // OpenAI allows at most 4 stop sequences; our inputs allow 8: the remote's 400 comes through
      const err2 = await rejection(engine.run(task('text_generation', { prompt: 'x' }, { stop: ['a', 'b', 'c', 'd', 'e'] }, mo()), context()));
      expect(err2.code).toBe('REMOTE_REJECTED');
      expect(err2.message).toContain('HTTP 400');
      expect(err2.message).toContain("Invalid 'stop'");
    });

    it('FastAPI-style detail bodies (vLLM, LocalAI) carry their message too', async () => {
      remote.options.intercept = (_req, res) => {
        sendJson(res, 422, { detail: [{ loc: ['body', 'max_tokens'], msg: 'Input should be less than 4096', type: 'less_than' }] });
        return true;
      };
      const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, { max_tokens: 5000 }, mo()), context()));
      expect(err.code).toBe('REMOTE_REJECTED');
      expect(err.message).toContain('body.max_tokens: Input should be less than 4096');
    });

    it('503 and 429 → RetryableEngineError REMOTE_UNAVAILABLE', async () => {
      for (const status of [503, 429, 500]) {
        remote.options.intercept = (_req, res) => {
          sendJson(res, status, { error: { message: `overloaded ${status}`, type: 'server_error' } });
          return true;
        };
        const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, mo()), context()));
        expect(err).toBeInstanceOf(RetryableEngineError);
        expect(err.code).toBe('REMOTE_UNAVAILABLE');
        expect(err.message).toContain(`HTTP ${status}`);
        expect(err.message).toContain(`overloaded ${status}`);
      }
    });

    it('connection refused → RetryableEngineError REMOTE_UNAVAILABLE', async () => {
      const probe = createServer();
      await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
      const port = (probe.address() as AddressInfo).port;
      await new Promise<void>((r) => probe.close(() => r()));
      for (const type of ['text_generation', 'image_generation', 'text_to_speech'] as const) {
        const input = type === 'text_to_speech' ? { text: 'x' } : { prompt: 'x' };
        const err = await rejection(engine.run(task(type, input, {}, { base_url: `http://127.0.0.1:${port}/v1`, api_key: 'sk-hidden-9' }), context()));
        expect(err).toBeInstanceOf(RetryableEngineError);
        expect(err.code).toBe('REMOTE_UNAVAILABLE');
        expect(err.message).toContain('ECONNREFUSED');
        expect(err.message).not.toContain('sk-hidden-9');
      }
    });

    it('a connection reset mid-stream → RetryableEngineError REMOTE_UNAVAILABLE', async () => {
      remote.options.intercept = (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'partial' }, finish_reason: null }] })}\n\n`);
        setTimeout(() => res.destroy(), 30);
        return true;
      };
      const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, mo()), context()));
      expect(err).toBeInstanceOf(RetryableEngineError);
      expect(err.code).toBe('REMOTE_UNAVAILABLE');
    });

    it('unparseable or incomplete answers → EngineError REMOTE_BAD_RESPONSE', async () => {
      const answers: Array<(res: import('node:http').ServerResponse) => void> = [
        (res) => {
          res.writeHead(200, { 'content-type': 'application/json' });
          res.end('{"choices": [ truncated');
        },
        (res) => sendJson(res, 200, { object: 'chat.completion', choices: [] }),
        (res) => {
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.end('data: {not json}\n\n');
        },
        (res) => {
          // a clean end before any finish_reason or [DONE]
          res.writeHead(200, { 'content-type': 'text/event-stream' });
          res.end(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: 'half' }, finish_reason: null }] })}\n\n`);
        },
      ];
      for (const answer of answers) {
        remote.options.intercept = (_req, res) => {
          answer(res);
          return true;
        };
        const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, mo()), context()));
        expect(err).toBeInstanceOf(EngineError);
        expect(err.code).toBe('REMOTE_BAD_RESPONSE');
      }
      remote.options.intercept = (_req, res) => {
        sendJson(res, 200, { created: 1, data: [] });
        return true;
      };
      const err = await rejection(engine.run(task('image_generation', { prompt: 'x' }, {}, mo()), context()));
      expect(err.code).toBe('REMOTE_BAD_RESPONSE');
    });

    it('an error event inside the stream is reported', async () => {
      remote.options.intercept = (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.end(`data: ${JSON.stringify({ error: { object: 'error', message: 'KV cache exhausted', type: 'InternalServerError', code: 500 } })}\n\ndata: [DONE]\n\n`);
        return true;
      };
      const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, mo()), context()));
      expect(err).toBeInstanceOf(RetryableEngineError);
      expect(err.message).toContain('KV cache exhausted');
    });

    it('tolerates CRLF line endings, comments and events split across reads', async () => {
      remote.options.intercept = async (_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const ev = (content: string) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\r\n\r\n`;
        const wire = `: keep-alive\r\n\r\n${ev('Hel')}${ev('lo ')}${ev('wörld')}data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\r\n\r\ndata: [DONE]\r\n\r\n`;
        const bytes = Buffer.from(wire);
        for (let i = 0; i < bytes.length; i += 7) {
          res.write(bytes.subarray(i, i + 7));
          await new Promise((r) => setTimeout(r, 1));
        }
        res.end();
        return true;
      };
      const out = await engine.run(task('text_generation', { prompt: 'x' }, {}, mo()), context());
      expect(out.result).toMatchObject({ generated_text: 'Hello wörld', tokens_generated: 3, finish_reason: 'stop' });
    });
  });

  describe('abort and timeouts', () => {
    it('abort mid-stream rejects within 1 s and the remote sees the connection closed', async () => {
      remote.options.tokenDelayMs = 50;
      remote.options.reply = () => Array.from({ length: 400 }, (_, i) => `t${i}`).join(' ');
      const controller = new AbortController();
      const ctx = context(controller.signal);
      const run = engine.run(task('text_generation', { prompt: 'long' }, { max_tokens: 400 }, mo()), ctx);
      run.catch(() => {});
      await waitFor(() => ctx.progress.length >= 3);
      const t0 = Date.now();
      controller.abort('cancelled');
      const err = await rejection(run);
      const elapsed = Date.now() - t0;
      expect(elapsed).toBeLessThan(1_000);
      expect(err).toBeInstanceOf(EngineError);
      expect(err.code).toBe('ABORTED');
      const req = remote.requests[0];
      await expect(req.ended).resolves.toBe('client-closed');
      expect(req.clientClosed).toBe(true);
    });

    it('an already-aborted signal sends nothing', async () => {
      const controller = new AbortController();
      controller.abort('shutdown');
      const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, mo()), context(controller.signal)));
      expect(err.code).toBe('ABORTED');
      expect(remote.requests).toHaveLength(0);
    });

    it('abort while waiting for a non-streamed answer (speech) also closes the connection', async () => {
      remote.options.intercept = () => true; // never answers
      const controller = new AbortController();
      const run = engine.run(task('text_to_speech', { text: 'x' }, {}, mo()), context(controller.signal));
      run.catch(() => {});
      await waitFor(() => remote.requests.length === 1);
      const t0 = Date.now();
      controller.abort('timeout');
      const err = await rejection(run);
      expect(Date.now() - t0).toBeLessThan(1_000);
      expect(err.code).toBe('ABORTED');
      await expect(remote.requests[0].ended).resolves.toBe('client-closed');
    });

    it('requestTimeoutMs → RetryableEngineError REMOTE_UNAVAILABLE and the request is dropped', async () => {
      const quick = new OpenAiEngine({ requestTimeoutMs: 150 });
      remote.options.tokenDelayMs = 40;
      remote.options.reply = () => Array.from({ length: 100 }, (_, i) => `t${i}`).join(' ');
      const t0 = Date.now();
      const err = await rejection(quick.run(task('text_generation', { prompt: 'x' }, {}, mo()), context()));
      expect(Date.now() - t0).toBeLessThan(1_000);
      expect(err).toBeInstanceOf(RetryableEngineError);
      expect(err.code).toBe('REMOTE_UNAVAILABLE');
      expect(err.message).toContain('150 ms');
      await expect(remote.requests[0].ended).resolves.toBe('client-closed');
    });

    it('uses an injected fetch', async () => {
      const seen: string[] = [];
      const custom = new OpenAiEngine({
        fetch: (input, init) => {
          seen.push(String(input));
          return fetch(input, init);
        },
      });
      const wav = makeWav(10);
      remote.options.speech = wav;
      const out = await custom.run(task('text_to_speech', { text: 'x' }, {}, mo()), context());
      expect(seen).toEqual([`${remote.url}/audio/speech`]);
      expect(out.artifacts![0].data.equals(wav)).toBe(true);
    });
  });

  it('refuses a misconfigured base_url', async () => {
    const err = await rejection(engine.run(task('text_generation', { prompt: 'x' }, {}, { base_url: 'not a url' }), context()));
    expect(err).toBeInstanceOf(EngineError);
    expect(err.code).toBe('MODEL_MISCONFIGURED');
  });
});
