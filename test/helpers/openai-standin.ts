/**
 * A stand-in for an OpenAI-compatible inference server (the remote protocol only): a real
 * node:http server on 127.0.0.1 that validates requests the way OpenAI does (unknown fields,
 * ranges, auth, model ids) and answers realistically — SSE streaming for chat/completions and
 * completions, base64 images, WAV speech. Reused by end-to-end tests.
 */
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { deflateSync } from 'node:zlib';

// ================================================================== generic recording server

export interface StandinRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingHttpHeaders;
  /** The parsed JSON body, or undefined when there was none or it was not JSON. */
  body: any;
  raw: Buffer;
  /** Status sent (0 until the head is written). */
  status: number;
  /** True when the client closed the connection before the response was complete. */
  clientClosed: boolean;
  /** Resolves when the exchange is over: the response finished, or the client went away. */
  ended: Promise<'finished' | 'client-closed'>;
}

export type Handler = (req: StandinRequest, res: ServerResponse) => void | Promise<void>;

export interface RecordingServer {
  origin: string;
  requests: StandinRequest[];
  /** True once close() was called; long-running handlers stop on it. */
  readonly closed: boolean;
  close(): Promise<void>;
}

/** A node:http server on 127.0.0.1 (port 0) that records every request before handing it on. */
export async function startRecordingServer(handler: Handler): Promise<RecordingServer> {
  const requests: StandinRequest[] = [];
  let closed = false;
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks);
      let body: unknown;
      if (raw.length) {
        try {
          body = JSON.parse(raw.toString('utf8'));
        } catch {
          body = undefined;
        }
      }
      const u = new URL(req.url ?? '/', 'http://standin');
      let settle!: (v: 'finished' | 'client-closed') => void;
      const rec: StandinRequest = {
        method: req.method ?? 'GET',
        path: u.pathname,
        query: u.searchParams,
        headers: req.headers,
        body,
        raw,
        status: 0,
        clientClosed: false,
        ended: new Promise((r) => (settle = r)),
      };
      requests.push(rec);
      res.on('close', () => {
        rec.status = res.statusCode;
        if (!res.writableFinished) {
          rec.clientClosed = true;
          settle('client-closed');
        } else settle('finished');
      });
      Promise.resolve()
        .then(() => handler(rec, res))
        .catch((err) => {
          if (!res.headersSent) sendJson(res, 500, { error: { message: `stand-in failure: ${String(err)}`, type: 'server_error' } });
          else res.destroy();
        });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    requests,
    get closed() {
      return closed;
    },
    close: () =>
      new Promise<void>((resolve) => {
        closed = true;
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export function sendJson(res: ServerResponse, status: number, doc: unknown, headers: Record<string, string> = {}): void {
  const body = Buffer.from(JSON.stringify(doc));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), ...headers });
  res.end(body);
}

export const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

// ================================================================== fixtures: real PNG and WAV bytes

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf: Buffer): number {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** A valid RGB PNG: a horizontal gradient seeded by `seed` so different images differ. */
export function makePng(width: number, height: number, seed = 0): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  const row = Buffer.alloc(1 + width * 3);
  for (let x = 0; x < width; x++) {
    row[1 + x * 3] = (x + seed * 37) & 0xff;
    row[2 + x * 3] = (seed * 91) & 0xff;
    row[3 + x * 3] = (255 - x - seed) & 0xff;
  }
  const raw = Buffer.alloc(row.length * height);
  for (let y = 0; y < height; y++) row.copy(raw, y * row.length);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A valid 16-bit mono PCM WAV of a 440 Hz tone. */
export function makeWav(durationMs: number, sampleRate = 24_000): Buffer {
  const samples = Math.max(1, Math.round((sampleRate * durationMs) / 1000));
  const data = Buffer.alloc(samples * 2);
  for (let i = 0; i < samples; i++) data.writeInt16LE(Math.round(Math.sin((2 * Math.PI * 440 * i) / sampleRate) * 8000), i * 2);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'latin1');
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVE', 8, 'latin1');
  h.write('fmt ', 12, 'latin1');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20); // PCM
  h.writeUInt16LE(1, 22); // mono
  h.writeUInt32LE(sampleRate, 24);
  h.writeUInt32LE(sampleRate * 2, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36, 'latin1');
  h.writeUInt32LE(data.length, 40);
  return Buffer.concat([h, data]);
}

// ================================================================== the OpenAI stand-in

export interface OpenAiStandinOptions {
  /** When set, requests must carry `Authorization: Bearer <apiKey>` (401 otherwise). */
  apiKey?: string;
  /** Model ids served; others get 404 model_not_found. Default: any id. */
  models?: string[];
  /** Pause between streamed tokens (ms). Default 2. */
  tokenDelayMs?: number;
  /** The assistant's full answer (before max_tokens / stop). Default: `You said: <prompt>` (vision: describes the image). */
  reply?: (req: StandinRequest) => string;
  /** Answer one JSON document even when `stream: true` was asked (servers that ignore it). */
  ignoreStream?: boolean;
  /** Ignore stream_options.include_usage (no usage chunk). */
  noStreamUsage?: boolean;
  /** Bytes returned by images/generations, one per image (cycled). Default: PNGs of the requested size. */
  images?: Buffer[];
  /** Bytes returned by audio/speech. Default: a WAV whose length follows the text. */
  speech?: Buffer;
  /** Runs first for every request; return true when it has answered (inject failures). */
  intercept?: (req: StandinRequest, res: ServerResponse) => boolean | Promise<boolean>;
}

export interface OpenAiStandin {
  /** Base URL including `/v1`, as a catalog's `base_url`. */
  url: string;
  requests: StandinRequest[];
  /** Options, mutable between requests. */
  options: OpenAiStandinOptions;
  /** The image bytes each images/generations answer carried, in request order. */
  sentImages: Buffer[][];
  /** The audio bytes each audio/speech answer carried. */
  sentSpeech: Buffer[];
  close(): Promise<void>;
}

const CHAT_FIELDS = new Set([
  'model', 'messages', 'stream', 'stream_options', 'max_tokens', 'max_completion_tokens', 'temperature', 'top_p', 'stop', 'seed',
  'n', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'logprobs', 'top_logprobs', 'user', 'response_format', 'tools',
  'tool_choice', 'parallel_tool_calls', 'metadata', 'store',
]);
const COMPLETION_FIELDS = new Set([
  'model', 'prompt', 'stream', 'stream_options', 'max_tokens', 'temperature', 'top_p', 'stop', 'seed', 'n', 'echo', 'suffix',
  'presence_penalty', 'frequency_penalty', 'logit_bias', 'logprobs', 'best_of', 'user',
]);
const IMAGE_FIELDS = new Set(['model', 'prompt', 'n', 'size', 'response_format', 'quality', 'style', 'user', 'background', 'output_format']);
const SPEECH_FIELDS = new Set(['model', 'input', 'voice', 'response_format', 'speed', 'instructions']);

class Invalid extends Error {
  constructor(
    message: string,
    readonly param: string | null = null,
    readonly status = 400,
    readonly code: string | null = null,
  ) {
    super(message);
  }
}

function openAiError(res: ServerResponse, status: number, message: string, param: string | null = null, code: string | null = null, type = 'invalid_request_error') {
  sendJson(res, status, { error: { message, type, param, code } });
}

export async function startOpenAiStandin(options: OpenAiStandinOptions = {}): Promise<OpenAiStandin> {
  const sentImages: Buffer[][] = [];
  const sentSpeech: Buffer[] = [];
  const standin = {} as OpenAiStandin;
  const server = await startRecordingServer(async (req, res) => {
    const o = standin.options;
    if (o.intercept && (await o.intercept(req, res))) return;
    if (o.apiKey !== undefined) {
      const auth = req.headers.authorization;
      if (auth !== `Bearer ${o.apiKey}`) {
        const shown = auth?.startsWith('Bearer ') ? auth.slice(7) : '';
        return openAiError(
          res,
          401,
          shown ? `Incorrect API key provided: ${shown}. You can find your API key at https://platform.openai.com/account/api-keys.` : "You didn't provide an API key.",
          null,
          'invalid_api_key',
        );
      }
    }
    if (req.method !== 'POST') return openAiError(res, 404, `Invalid URL (${req.method} ${req.path})`);
    if (req.raw.length && req.body === undefined) {
      return openAiError(res, 400, 'We could not parse the JSON body of your request. (HINT: This likely means you aren\'t using your HTTP library correctly.)');
    }
    const body = (req.body ?? {}) as Record<string, unknown>;
    const routes: Record<string, Set<string>> = {
      '/v1/chat/completions': CHAT_FIELDS,
      '/v1/completions': COMPLETION_FIELDS,
      '/v1/images/generations': IMAGE_FIELDS,
      '/v1/audio/speech': SPEECH_FIELDS,
    };
    const fields = routes[req.path];
    if (!fields) return openAiError(res, 404, `Invalid URL (${req.method} ${req.path})`);
    try {
      for (const k of Object.keys(body)) if (!fields.has(k)) throw new Invalid(`Unrecognized request argument supplied: ${k}`, k);
      if (typeof body.model !== 'string' || !body.model) throw new Invalid('you must provide a model parameter', 'model');
      if (o.models && !o.models.includes(body.model)) {
        throw new Invalid(`The model \`${body.model}\` does not exist or you do not have access to it.`, 'model', 404, 'model_not_found');
      }
      switch (req.path) {
        case '/v1/chat/completions':
        case '/v1/completions':
          return await completion(req, res, body, req.path === '/v1/chat/completions');
        case '/v1/images/generations':
          return images(res, body);
        case '/v1/audio/speech':
          return speech(res, body);
      }
    } catch (err) {
      if (err instanceof Invalid) return openAiError(res, err.status, err.message, err.param, err.code);
      throw err;
    }
  });

  const checkSampling = (body: Record<string, unknown>) => {
    const intIn = (k: string, min: number) => {
      if (body[k] !== undefined && (!Number.isInteger(body[k]) || (body[k] as number) < min)) {
        throw new Invalid(`Invalid '${k}': expected an integer >= ${min}, got ${JSON.stringify(body[k])}.`, k);
      }
    };
    intIn('max_tokens', 1);
    intIn('seed', 0);
    if (body.temperature !== undefined && (typeof body.temperature !== 'number' || body.temperature < 0 || body.temperature > 2)) {
      throw new Invalid(`${JSON.stringify(body.temperature)} is not valid for 'temperature': must be between 0 and 2.`, 'temperature');
    }
    if (body.top_p !== undefined && (typeof body.top_p !== 'number' || body.top_p < 0 || body.top_p > 1)) {
      throw new Invalid(`Invalid 'top_p': must be between 0 and 1.`, 'top_p');
    }
    if (body.stream !== undefined && typeof body.stream !== 'boolean') throw new Invalid(`Invalid 'stream': expected a boolean.`, 'stream');
    if (body.stream_options !== undefined && body.stream !== true) {
      throw new Invalid("The 'stream_options' parameter is only allowed when 'stream' is enabled.", 'stream_options');
    }
    const stop = body.stop;
    if (stop !== undefined && typeof stop !== 'string' && !(Array.isArray(stop) && stop.length <= 4 && stop.every((s) => typeof s === 'string'))) {
      throw new Invalid(`Invalid 'stop': expected a string or an array of at most 4 strings.`, 'stop');
    }
  };

  const describeImage = (url: string): string => {
    const m = /^data:(image\/[a-z0-9.+-]+);base64,([A-Za-z0-9+/=]+)$/.exec(url);
    if (!m) throw new Invalid('Invalid image_url: expected a base64 data URL.', 'messages');
    const bytes = Buffer.from(m[2], 'base64');
    return `A ${m[1]} image of ${bytes.length} bytes.`;
  };

  const defaultReply = (body: Record<string, unknown>, chat: boolean): string => {
    if (!chat) return `You said: ${String(body.prompt)}`;
    const messages = body.messages as Array<{ role: string; content: unknown }>;
    const last = [...messages].reverse().find((m) => m.role === 'user');
    if (!last) return 'Hello.';
    if (typeof last.content === 'string') return `You said: ${last.content}`;
    const parts = last.content as Array<{ type: string; text?: string; image_url?: { url: string } }>;
    const text = parts.filter((p) => p.type === 'text').map((p) => p.text).join(' ');
    const pictures = parts.filter((p) => p.type === 'image_url').map((p) => describeImage(p.image_url!.url));
    return `${pictures.join(' ')} Prompt: ${text}`;
  };

  async function completion(req: StandinRequest, res: ServerResponse, body: Record<string, unknown>, chat: boolean): Promise<void> {
    checkSampling(body);
    if (chat) {
      const messages = body.messages;
      if (!Array.isArray(messages) || messages.length === 0) throw new Invalid("Invalid 'messages': expected a non-empty array.", 'messages');
      for (const [i, m] of messages.entries()) {
        if (!m || !['system', 'user', 'assistant', 'developer', 'tool'].includes(m.role)) throw new Invalid(`Invalid 'messages[${i}].role'.`, `messages[${i}].role`);
        if (typeof m.content === 'string') continue;
        if (!Array.isArray(m.content)) throw new Invalid(`Invalid 'messages[${i}].content': expected a string or an array.`, `messages[${i}].content`);
        for (const part of m.content) {
          if (part?.type === 'text' && typeof part.text === 'string') continue;
          if (part?.type === 'image_url' && typeof part.image_url?.url === 'string') {
            describeImage(part.image_url.url);
            continue;
          }
          throw new Invalid(`Invalid content part in 'messages[${i}]'.`, `messages[${i}].content`);
        }
      }
    } else if (typeof body.prompt !== 'string') {
      throw new Invalid("Invalid 'prompt': expected a string.", 'prompt');
    }

    let text = standin.options.reply ? standin.options.reply(req) : defaultReply(body, chat);
    let finish = 'stop';
    const stops = body.stop === undefined ? [] : ([] as string[]).concat(body.stop as string | string[]);
    for (const s of stops) {
      const at = text.indexOf(s);
      if (at >= 0) text = text.slice(0, at);
    }
    let tokens: string[] = text.match(/\s*\S+/g) ?? [];
    const max = (body.max_tokens as number | undefined) ?? (chat ? Infinity : 16);
    if (tokens.length > max) {
      tokens = tokens.slice(0, max);
      finish = 'length';
    }
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-standin${req.raw.length}`;
    const created = Math.floor(Date.now() / 1000);
    const object = chat ? 'chat.completion' : 'text_completion';
    const promptTokens = JSON.stringify(chat ? body.messages : body.prompt).split(/\s+/).length;
    const usage = { prompt_tokens: promptTokens, completion_tokens: tokens.length, total_tokens: promptTokens + tokens.length };

    if (body.stream !== true || standin.options.ignoreStream) {
      const choice = chat
        ? { index: 0, message: { role: 'assistant', content: tokens.join(''), refusal: null }, logprobs: null, finish_reason: finish }
        : { index: 0, text: tokens.join(''), logprobs: null, finish_reason: finish };
      return sendJson(res, 200, { id, object, created, model: body.model, choices: [choice], usage });
    }

    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
    const chunkObject = chat ? 'chat.completion.chunk' : 'text_completion';
    const send = (doc: unknown) => res.write(`data: ${JSON.stringify(doc)}\n\n`);
    const gone = () => req.clientClosed || server.closed || res.destroyed;
    const delayMs = standin.options.tokenDelayMs ?? 2;
    if (chat) send({ id, object: chunkObject, created, model: body.model, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
    for (const t of tokens) {
      if (delayMs) await delay(delayMs);
      if (gone()) return;
      const choice = chat ? { index: 0, delta: { content: t }, logprobs: null, finish_reason: null } : { index: 0, text: t, logprobs: null, finish_reason: null };
      send({ id, object: chunkObject, created, model: body.model, choices: [choice] });
    }
    if (gone()) return;
    const last = chat ? { index: 0, delta: {}, logprobs: null, finish_reason: finish } : { index: 0, text: '', logprobs: null, finish_reason: finish };
    send({ id, object: chunkObject, created, model: body.model, choices: [last] });
    const includeUsage = (body.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true;
    if (includeUsage && !standin.options.noStreamUsage) send({ id, object: chunkObject, created, model: body.model, choices: [], usage });
    res.write('data: [DONE]\n\n');
    res.end();
  }

  function images(res: ServerResponse, body: Record<string, unknown>): void {
    if (typeof body.prompt !== 'string' || !body.prompt) throw new Invalid("Invalid 'prompt': expected a non-empty string.", 'prompt');
    const n = body.n ?? 1;
    if (!Number.isInteger(n) || (n as number) < 1 || (n as number) > 10) throw new Invalid(`Invalid 'n': must be between 1 and 10.`, 'n');
    const size = (body.size as string | undefined) ?? '1024x1024';
    const m = /^(\d+)x(\d+)$/.exec(size);
    if (typeof size !== 'string' || !m) throw new Invalid(`Invalid 'size': '${String(size)}'. Expected WIDTHxHEIGHT.`, 'size');
    if (body.response_format !== undefined && body.response_format !== 'url' && body.response_format !== 'b64_json') {
      throw new Invalid(`Invalid 'response_format': must be 'url' or 'b64_json'.`, 'response_format');
    }
    const w = Number(m[1]);
    const h = Number(m[2]);
    const given = standin.options.images;
    const out = Array.from({ length: n as number }, (_, i) => (given?.length ? given[i % given.length] : makePng(w, h, i + 1)));
    sentImages.push(out);
    const data = out.map((b) =>
      body.response_format === 'b64_json'
        ? { b64_json: b.toString('base64'), revised_prompt: body.prompt }
        : { url: `data:image/png;base64,${b.toString('base64')}`, revised_prompt: body.prompt },
    );
    sendJson(res, 200, { created: Math.floor(Date.now() / 1000), data });
  }

  function speech(res: ServerResponse, body: Record<string, unknown>): void {
    if (typeof body.input !== 'string' || !body.input) throw new Invalid("Invalid 'input': expected a non-empty string.", 'input');
    if (body.input.length > 4096) throw new Invalid("Invalid 'input': string too long (max 4096).", 'input');
    if (typeof body.voice !== 'string' || !body.voice) throw new Invalid("Invalid 'voice': expected a string.", 'voice');
    const format = body.response_format ?? 'mp3';
    if (!['mp3', 'opus', 'aac', 'flac', 'wav', 'pcm'].includes(format as string)) throw new Invalid(`Invalid 'response_format'.`, 'response_format');
    if (body.speed !== undefined && (typeof body.speed !== 'number' || body.speed < 0.25 || body.speed > 4)) {
      throw new Invalid(`Invalid 'speed': must be between 0.25 and 4.`, 'speed');
    }
    const audio = standin.options.speech ?? makeWav(Math.min(5_000, 60 * body.input.length) / ((body.speed as number | undefined) ?? 1));
    sentSpeech.push(audio);
    const types: Record<string, string> = { wav: 'audio/wav', mp3: 'audio/mpeg', opus: 'audio/ogg', aac: 'audio/aac', flac: 'audio/flac', pcm: 'audio/pcm' };
    res.writeHead(200, { 'content-type': types[format as string], 'content-length': String(audio.length) });
    res.end(audio);
  }

  Object.assign(standin, {
    url: `${server.origin}/v1`,
    requests: server.requests,
    options,
    sentImages,
    sentSpeech,
    close: () => server.close(),
  });
  return standin;
}
