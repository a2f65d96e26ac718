/**
 * An engine that forwards tasks to an OpenAI-compatible HTTP server (OpenAI, vLLM, llama.cpp
 * server, LocalAI, …): chat/completions (streamed), images/generations, audio/speech, and
 * vision chat for image_to_text. Uses the global fetch only.
 *
 * Also exports the small HTTP helpers (`remoteCall`, `checkStatus`, …) that the
 * other remote engines share.
 */
import {
  EngineError,
  RetryableEngineError,
  type Engine,
  type EngineArtifact,
  type EngineContext,
  type EngineResult,
  type EngineTask,
} from '../core/engine.js';
import { sniffWebImage } from '../core/media.js';
import { TASK_TYPES, type TaskType } from '../core/task.js';

export interface OpenAiEngineOptions {
  fetch?: typeof fetch;
  /** Deadline for one remote request, streaming included (ms). Default 10 minutes. */
  requestTimeoutMs?: number;
}

const DEFAULT_BASE_URL = 'http://127.0.0.1:8000/v1';
const DEFAULT_TIMEOUT_MS = 600_000;
/** The legacy /completions endpoint defaults to 16 tokens; ask for something usable instead. */
const DEFAULT_COMPLETIONS_MAX_TOKENS = 256;

export class OpenAiEngine implements Engine {
  readonly name = 'openai';
  readonly taskTypes: readonly TaskType[] = TASK_TYPES;
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;

  constructor(opts: OpenAiEngineOptions = {}) {
    this.fetchFn = opts.fetch ?? ((input, init) => fetch(input, init));
    this.timeoutMs = opts.requestTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  async run(task: EngineTask, ctx: EngineContext): Promise<EngineResult> {
    const remote = this.remoteFor(task);
    switch (task.taskType) {
      case 'text_generation':
        return this.textGeneration(task, ctx, remote);
      case 'image_generation':
        return this.imageGeneration(task, ctx, remote);
      case 'text_to_speech':
        return this.textToSpeech(task, ctx, remote);
      case 'image_to_text':
        return this.imageToText(task, ctx, remote);
      default:
        throw new EngineError('UNSUPPORTED_TASK_TYPE', `The openai engine does not run ${String(task.taskType)} tasks`);
    }
  }

  private remoteFor(task: EngineTask): Remote {
    const o = task.modelOptions;
    const baseUrl = parseBaseUrl(o.base_url ?? DEFAULT_BASE_URL, 'base_url');
    let apiKey: string | undefined;
    if (typeof o.api_key === 'string' && o.api_key) apiKey = o.api_key;
    else if (typeof o.api_key_env === 'string' && o.api_key_env) {
      const v = process.env[o.api_key_env];
      if (v) apiKey = v;
    }
    const model = typeof o.model === 'string' && o.model ? o.model : task.modelName;
    return { baseUrl, apiKey, model };
  }

  private headers(remote: Remote, accept: string): Record<string, string> {
    const h: Record<string, string> = { 'content-type': 'application/json', accept };
    if (remote.apiKey) h.authorization = `Bearer ${remote.apiKey}`;
    return h;
  }

  private secrets(remote: Remote): string[] {
    return remote.apiKey ? [remote.apiKey] : [];
  }

  // ---------------------------------------------------------------- text_generation

  private async textGeneration(task: EngineTask, ctx: EngineContext, remote: Remote): Promise<EngineResult> {
    const input = task.inputData;
    const p = task.parameters;
    const api = task.modelOptions.api === 'completions' ? 'completions' : 'chat';
    const maxTokens =
      num(p.max_tokens) ?? num(p.max_length) ?? num(task.modelOptions.max_tokens) ?? (api === 'completions' ? DEFAULT_COMPLETIONS_MAX_TOKENS : undefined);
    const body: Record<string, unknown> = { model: remote.model };
    if (api === 'chat') {
      const messages: Array<{ role: string; content: string }> = [];
      if (typeof input.system_prompt === 'string' && input.system_prompt) messages.push({ role: 'system', content: input.system_prompt });
      messages.push({ role: 'user', content: String(input.prompt) });
      body.messages = messages;
    } else {
      body.prompt = String(input.prompt);
    }
    if (maxTokens !== undefined) body.max_tokens = maxTokens;
    if (p.do_sample === false) body.temperature = 0;
    else if (num(p.temperature) !== undefined) body.temperature = p.temperature;
    if (num(p.top_p) !== undefined) body.top_p = p.top_p;
    if (p.stop !== undefined) body.stop = p.stop;
    if (num(p.seed) !== undefined) body.seed = p.seed;
    // top_k and repetition_penalty are not part of the OpenAI API (OpenAI itself refuses unknown fields).
    body.stream = true;
    // Usage in the stream gives an exact token count; `stream_usage: false` in the catalog omits it for servers that refuse it.
    if (task.modelOptions.stream_usage !== false) body.stream_options = { include_usage: true };

    const path = api === 'chat' ? '/chat/completions' : '/completions';
    const started = performance.now();
    const out = await this.streamCompletion(remote, path, body, api, maxTokens, ctx);
    ctx.reportProgress(1);
    return {
      result: {
        generated_text: out.text,
        tokens_generated: out.completionTokens ?? (out.streamed ? out.chunks : null),
        inference_time: seconds(started),
        finish_reason: out.finishReason,
      },
    };
  }

  /** POSTs a streamed completion; assembles SSE chunks (or a plain JSON answer when the server ignores `stream`). */
  private streamCompletion(
    remote: Remote,
    path: string,
    body: Record<string, unknown>,
    api: 'chat' | 'completions',
    maxTokens: number | undefined,
    ctx: EngineContext,
  ): Promise<Completion> {
    const url = `${remote.baseUrl}${path}`;
    const what = `POST ${url}`;
    const secrets = this.secrets(remote);
    return remoteCall({ signal: ctx.signal, timeoutMs: this.timeoutMs, what, secrets }, async (signal) => {
      const res = await this.fetchFn(url, {
        method: 'POST',
        headers: this.headers(remote, 'text/event-stream, application/json'),
        body: JSON.stringify(body),
        signal,
      });
      await checkStatus(res, what, secrets);
      const type = (res.headers.get('content-type') ?? '').toLowerCase();
      if (!res.body) throw badResponse(what, 'empty body', secrets);
      const acc = new CompletionAccumulator(
        api,
        what,
        secrets,
        (tokens) => {
          ctx.reportProgress(maxTokens ? Math.min(0.99, tokens / maxTokens) : Math.min(0.99, 1 - 256 / (256 + tokens)));
        },
        (text) => ctx.reportOutput?.(text),
      );
      const reader = res.body.getReader();
      const decoder = new TextDecoder('utf-8');
      let mode: 'sse' | 'json' | undefined = type.includes('text/event-stream') ? 'sse' : type.includes('json') ? 'json' : undefined;
      const sse = new SseParser();
      let raw = '';
      for (;;) {
        const { done, value } = await reader.read();
        const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
        if (mode === undefined && text.trim()) mode = text.trimStart().startsWith('{') ? 'json' : 'sse';
        if (mode === 'json') raw += text;
        else if (mode === 'sse') {
          for (const data of done ? [...sse.feed(text), ...sse.end()] : sse.feed(text)) {
            if (acc.onEvent(data) === 'done') {
              void reader.cancel().catch(() => {});
              return acc.finish(true);
            }
          }
        }
        if (done) break;
      }
      if (mode === 'json') return acc.fromJson(raw);
      return acc.finish(false);
    });
  }

  // ---------------------------------------------------------------- image_generation

  private async imageGeneration(task: EngineTask, ctx: EngineContext, remote: Remote): Promise<EngineResult> {
    const p = task.parameters;
    const n = num(p.num_images) ?? 1;
    const body: Record<string, unknown> = {
      model: remote.model,
      prompt: String(task.inputData.prompt),
      n,
      response_format: 'b64_json',
    };
    const w = num(p.width);
    const h = num(p.height);
    if (w !== undefined || h !== undefined) body.size = `${w ?? h}x${h ?? w}`;
    const warnings: string[] = [];
    if (typeof task.inputData.negative_prompt === 'string' && task.inputData.negative_prompt) {
      warnings.push('negative_prompt is not supported by the OpenAI images API and was ignored');
    }
    const ignored = ['steps', 'guidance_scale', 'sampler', 'seed'].filter((k) => p[k] !== undefined);
    if (ignored.length) warnings.push(`Not supported by the OpenAI images API and ignored: ${ignored.join(', ')}`);

    const url = `${remote.baseUrl}/images/generations`;
    const what = `POST ${url}`;
    const secrets = this.secrets(remote);
    const started = performance.now();
    const artifacts = await remoteCall({ signal: ctx.signal, timeoutMs: this.timeoutMs, what, secrets }, async (signal) => {
      const res = await this.fetchFn(url, { method: 'POST', headers: this.headers(remote, 'application/json'), body: JSON.stringify(body), signal });
      await checkStatus(res, what, secrets);
      const doc = await readJson(res, what, secrets);
      const data = (doc as { data?: unknown }).data;
      if (!Array.isArray(data) || data.length === 0) throw badResponse(what, 'no "data" array of images', secrets);
      const out: EngineArtifact[] = [];
      for (const [i, item] of data.entries()) {
        const entry = (item ?? {}) as { b64_json?: unknown; url?: unknown };
        let bytes: Buffer;
        if (typeof entry.b64_json === 'string') bytes = decodeBase64(entry.b64_json, what, secrets);
        else if (typeof entry.url === 'string') bytes = await this.download(entry.url, signal, what, secrets);
        else throw badResponse(what, `data[${i}] has neither b64_json nor url`, secrets);
        const kind = sniffWebImage(bytes);
        if (!kind) throw badResponse(what, `data[${i}] is not a PNG, JPEG, WebP or GIF image`, secrets);
        out.push({ name: `image-${i}.${kind.ext}`, contentType: kind.mime, data: bytes });
        ctx.reportProgress(Math.min(0.99, (i + 1) / data.length));
      }
      return out;
    });
    ctx.reportProgress(1);
    const result: Record<string, unknown> = { images: artifacts.map((a) => a.name), inference_time: seconds(started) };
    if (warnings.length) result.warnings = warnings;
    return { result, artifacts };
  }

  /** Fetches an image the server answered with by URL (a server that ignores response_format). No credentials are sent. */
  private async download(url: string, signal: AbortSignal, what: string, secrets: string[]): Promise<Buffer> {
    if (url.startsWith('data:')) {
      const comma = url.indexOf(',');
      return decodeBase64(url.slice(comma + 1), what, secrets);
    }
    if (!/^https?:\/\//i.test(url)) throw badResponse(what, 'image url is neither http(s) nor a data URL', secrets);
    const res = await this.fetchFn(url, { signal });
    await checkStatus(res, `GET ${safeUrl(url)}`, secrets);
    return Buffer.from(await res.arrayBuffer());
  }

  // ---------------------------------------------------------------- text_to_speech

  private async textToSpeech(task: EngineTask, ctx: EngineContext, remote: Remote): Promise<EngineResult> {
    const p = task.parameters;
    const voice = str(p.voice) ?? str(task.modelOptions.voice) ?? 'alloy';
    const body: Record<string, unknown> = { model: remote.model, input: String(task.inputData.text), voice, response_format: 'wav' };
    if (num(p.speed) !== undefined) body.speed = p.speed;
    const url = `${remote.baseUrl}/audio/speech`;
    const what = `POST ${url}`;
    const secrets = this.secrets(remote);
    const started = performance.now();
    const audio = await remoteCall({ signal: ctx.signal, timeoutMs: this.timeoutMs, what, secrets }, async (signal) => {
      const res = await this.fetchFn(url, { method: 'POST', headers: this.headers(remote, 'audio/wav, */*'), body: JSON.stringify(body), signal });
      await checkStatus(res, what, secrets);
      const bytes = Buffer.from(await res.arrayBuffer());
      if (bytes.length === 0) throw badResponse(what, 'empty audio body', secrets);
      if (!isWav(bytes)) {
        const type = res.headers.get('content-type') ?? 'unknown type';
        throw badResponse(what, `expected WAV audio, got ${type.split(';')[0]} (${bytes.length} bytes)`, secrets);
      }
      return bytes;
    });
    ctx.reportProgress(1);
    const result: Record<string, unknown> = { audio: 'speech.wav', format: 'wav', bytes: audio.length, inference_time: seconds(started) };
    if (p.pitch !== undefined) result.warnings = ['pitch is not supported by the OpenAI speech API and was ignored'];
    return { result, artifacts: [{ name: 'speech.wav', contentType: 'audio/wav', data: audio }] };
  }

  // ---------------------------------------------------------------- image_to_text

  private async imageToText(task: EngineTask, ctx: EngineContext, remote: Remote): Promise<EngineResult> {
    const p = task.parameters;
    const image = decodeInputImage(String(task.inputData.image));
    const prompt =
      str(task.inputData.prompt) ??
      (p.mode === 'ocr' ? 'Transcribe all the text in this image exactly. Reply with the text only.' : 'Describe this image.');
    const maxTokens = num(p.max_tokens) ?? num(task.modelOptions.max_tokens);
    const body: Record<string, unknown> = {
      model: remote.model,
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: prompt },
            { type: 'image_url', image_url: { url: `data:${image.mime};base64,${image.data.toString('base64')}` } },
          ],
        },
      ],
    };
    if (maxTokens !== undefined) body.max_tokens = maxTokens;
    body.stream = true;
    if (task.modelOptions.stream_usage !== false) body.stream_options = { include_usage: true };
    const started = performance.now();
    const out = await this.streamCompletion(remote, '/chat/completions', body, 'chat', maxTokens, ctx);
    ctx.reportProgress(1);
    return { result: { text: out.text, inference_time: seconds(started) } };
  }
}

// ================================================================== completion assembly

interface Remote {
  baseUrl: string;
  apiKey: string | undefined;
  model: string;
}

interface Completion {
  text: string;
  /** False when the server ignored `stream` and answered with one JSON document. */
  streamed: boolean;
  chunks: number;
  completionTokens: number | undefined;
  finishReason: string | null;
}

class CompletionAccumulator {
  private text = '';
  private chunks = 0;
  private completionTokens: number | undefined;
  private finishReason: string | null = null;
  private events = 0;

  constructor(
    private readonly api: 'chat' | 'completions',
    private readonly what: string,
    private readonly secrets: string[],
    private readonly onToken: (tokens: number) => void,
    private readonly onText: (text: string) => void = () => {},
  ) {}

  /** Handles one SSE `data` payload. */
  onEvent(data: string): 'done' | undefined {
    if (data.trim() === '[DONE]') return 'done';
    let doc: unknown;
    try {
      doc = JSON.parse(data);
    } catch {
      throw badResponse(this.what, `stream event is not JSON: ${data.slice(0, 100)}`, this.secrets);
    }
    if (!doc || typeof doc !== 'object') throw badResponse(this.what, 'stream event is not an object', this.secrets);
    this.events++;
    const d = doc as { error?: unknown; choices?: unknown; usage?: unknown };
    if (d.error !== undefined) throw streamError(d.error, this.what, this.secrets);
    this.takeUsage(d.usage);
    if (!Array.isArray(d.choices)) return undefined;
    for (const c of d.choices as Array<Record<string, unknown>>) {
      if (!c || (c.index !== undefined && c.index !== 0)) continue;
      let piece: unknown;
      let reasoning: unknown;
      if (this.api === 'chat') {
        const delta = (c.delta ?? c.message ?? {}) as Record<string, unknown>;
        piece = delta.content;
        reasoning = delta.reasoning_content ?? delta.reasoning;
      } else {
        piece = c.text;
      }
      const hasPiece = typeof piece === 'string' && piece.length > 0;
      if (hasPiece) {
        this.text += piece as string;
        this.onText(piece as string);
      }
      if (hasPiece || (typeof reasoning === 'string' && reasoning.length > 0)) {
        this.chunks++;
        this.onToken(this.chunks);
      }
      if (typeof c.finish_reason === 'string') this.finishReason = c.finish_reason;
    }
    return undefined;
  }

  finish(sawDone: boolean): Completion {
    if (!sawDone && this.finishReason === null) {
      throw badResponse(this.what, this.events ? 'stream ended before the completion finished' : 'no completion in the response', this.secrets);
    }
    return { text: this.text, streamed: true, chunks: this.chunks, completionTokens: this.completionTokens, finishReason: this.finishReason };
  }

  /** A server that ignored `stream: true` answers with one JSON document. */
  fromJson(raw: string): Completion {
    let doc: unknown;
    try {
      doc = JSON.parse(raw);
    } catch {
      throw badResponse(this.what, 'response is not valid JSON', this.secrets);
    }
    const d = (doc ?? {}) as { error?: unknown; choices?: unknown; usage?: unknown };
    if (d.error !== undefined) throw streamError(d.error, this.what, this.secrets);
    const choices = Array.isArray(d.choices) ? (d.choices as Array<Record<string, unknown>>) : [];
    const c = choices.find((x) => x && (x.index === undefined || x.index === 0));
    if (!c) throw badResponse(this.what, 'no choices in the response', this.secrets);
    let text: unknown;
    if (this.api === 'chat') {
      const content = ((c.message ?? {}) as { content?: unknown }).content;
      text = Array.isArray(content)
        ? content.map((part) => (typeof part?.text === 'string' ? part.text : '')).join('')
        : content === null
          ? ''
          : content;
    } else {
      text = c.text;
    }
    if (typeof text !== 'string') throw badResponse(this.what, 'choice has no text', this.secrets);
    this.takeUsage(d.usage);
    return {
      text,
      streamed: false,
      chunks: 0,
      completionTokens: this.completionTokens,
      finishReason: typeof c.finish_reason === 'string' ? c.finish_reason : null,
    };
  }

  private takeUsage(usage: unknown): void {
    const n = (usage as { completion_tokens?: unknown } | null | undefined)?.completion_tokens;
    if (typeof n === 'number' && Number.isFinite(n)) this.completionTokens = n;
  }
}

function streamError(error: unknown, what: string, secrets: string[]): Error {
  const msg = extractMessage(error) ?? 'error event in the response';
  const code = (error as { code?: unknown } | null)?.code;
  const status = typeof code === 'number' ? code : Number.parseInt(String(code), 10);
  if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
    return new EngineError('REMOTE_REJECTED', redact(`Remote rejected the request: ${msg}`, secrets));
  }
  return new RetryableEngineError('REMOTE_UNAVAILABLE', redact(`${what} failed: ${msg}`, secrets));
}

/** Server-sent events: yields each event's `data` (lines joined by '\n'). */
export class SseParser {
  private buf = '';
  private data: string[] = [];

  feed(chunk: string): string[] {
    this.buf += chunk;
    const out: string[] = [];
    // A '\r' at the end may be the first half of '\r\n': keep it for the next chunk.
    const keepCr = this.buf.endsWith('\r');
    const text = keepCr ? this.buf.slice(0, -1) : this.buf;
    const lines = text.split(/\r\n|\r|\n/);
    this.buf = (lines.pop() ?? '') + (keepCr ? '\r' : '');
    for (const line of lines) this.line(line, out);
    return out;
  }

  /** End of stream: a last event without its blank line still counts. */
  end(): string[] {
    const out: string[] = [];
    const rest = this.buf.replace(/\r$/, '');
    this.buf = '';
    if (rest) this.line(rest, out);
    this.line('', out);
    return out;
  }

  private line(line: string, out: string[]): void {
    if (line === '') {
      if (this.data.length) out.push(this.data.join('\n'));
      this.data = [];
      return;
    }
    if (line.startsWith(':')) return;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.data.push(value);
  }
}

// ================================================================== shared HTTP helpers

/**
 * Runs one remote exchange under a signal that aborts when the task's signal does or after
 * `timeoutMs`, and settles promptly when either happens even if `fn` is slow to notice.
 * Errors become EngineError / RetryableEngineError with the secrets redacted.
 * `onStopped` runs once when the exchange is cut short (to tell the remote to stop).
 */
export async function remoteCall<T>(
  opts: { signal: AbortSignal; timeoutMs: number; what: string; secrets: string[]; onStopped?: () => void },
  fn: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const { signal: outer, timeoutMs, what, secrets } = opts;
  if (outer.aborted) throw aborted(what, outer.reason);
  const controller = new AbortController();
  let timedOut = false;
  let rejectStop!: (err: unknown) => void;
  const stopped = new Promise<never>((_, reject) => (rejectStop = reject));
  stopped.catch(() => {});
  const stop = (err: Error) => {
    controller.abort(err);
    rejectStop(err);
    try {
      opts.onStopped?.();
    } catch {
      // best effort
    }
  };
  const onAbort = () => stop(aborted(what, outer.reason));
  outer.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => {
    timedOut = true;
    stop(new RetryableEngineError('REMOTE_UNAVAILABLE', redact(`${what} did not finish within ${timeoutMs} ms`, secrets)));
  }, timeoutMs);
  timer.unref?.();
  const work = fn(controller.signal);
  work.catch(() => {});
  try {
    return await Promise.race([work, stopped]);
  } catch (err) {
    if (outer.aborted) throw aborted(what, outer.reason);
    if (timedOut) throw new RetryableEngineError('REMOTE_UNAVAILABLE', redact(`${what} did not finish within ${timeoutMs} ms`, secrets));
    throw classify(err, what, secrets);
  } finally {
    clearTimeout(timer);
    outer.removeEventListener('abort', onAbort);
  }
}

function aborted(what: string, reason: unknown): EngineError {
  const why = typeof reason === 'string' ? reason : reason instanceof Error ? reason.message : 'aborted';
  return new EngineError('ABORTED', `${what} was abandoned: ${why}`);
}

/** Maps a thrown value to our errors: ours pass through, network failures are retryable. */
function classify(err: unknown, what: string, secrets: string[]): Error {
  if (err instanceof EngineError || err instanceof RetryableEngineError) return err;
  const e = err as { name?: string; message?: string; code?: string; cause?: { code?: string; message?: string } } | undefined;
  const netCode = e?.cause?.code ?? e?.code;
  // undici: TypeError('fetch failed') before a response, TypeError('terminated') while reading a body.
  const network = typeof netCode === 'string' || (err instanceof TypeError && (e?.cause !== undefined || /fetch failed|terminated/.test(e?.message ?? '')));
  if (network) {
    const detail = netCode ?? e?.cause?.message ?? e?.message ?? 'network error';
    return new RetryableEngineError('REMOTE_UNAVAILABLE', redact(`${what} failed: ${detail}`, secrets), { cause: err });
  }
  if (e?.name === 'AbortError' || e?.name === 'TimeoutError') {
    return new RetryableEngineError('REMOTE_UNAVAILABLE', redact(`${what} was aborted: ${e.message ?? ''}`, secrets));
  }
  // Anything else is a bug of ours, not the remote's: let it through as it is.
  return err instanceof Error ? err : new Error(String(err));
}

/**
 * Throws for a non-2xx answer: 408, 429 and 5xx are retryable (REMOTE_UNAVAILABLE), other 4xx
 * are REMOTE_REJECTED with the remote's own message.
 */
export async function checkStatus(res: Response, what: string, secrets: string[]): Promise<void> {
  if (res.ok) return;
  const text = await readCapped(res, 64 * 1024).catch(() => '');
  const remoteMsg = extractMessageFromBody(text) ?? (res.statusText || 'no message');
  const s = res.status;
  if (s === 408 || s === 429 || s >= 500) {
    throw new RetryableEngineError('REMOTE_UNAVAILABLE', redact(`${what} answered HTTP ${s}: ${remoteMsg}`, secrets));
  }
  if (s >= 400) throw new EngineError('REMOTE_REJECTED', redact(`Remote rejected the request (HTTP ${s}): ${remoteMsg}`, secrets));
  throw new EngineError('REMOTE_BAD_RESPONSE', redact(`${what} answered HTTP ${s}: ${remoteMsg}`, secrets));
}

export async function readJson(res: Response, what: string, secrets: string[]): Promise<Record<string, unknown>> {
  const text = await res.text();
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw badResponse(what, `response is not valid JSON: ${text.slice(0, 100)}`, secrets);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw badResponse(what, 'response is not a JSON object', secrets);
  return doc as Record<string, unknown>;
}

export function badResponse(what: string, detail: string, secrets: string[]): EngineError {
  return new EngineError('REMOTE_BAD_RESPONSE', redact(`${what}: unexpected response: ${detail}`, secrets));
}

async function readCapped(res: Response, max: number): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const parts: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    size += value.length;
    if (size >= max) {
      void reader.cancel().catch(() => {});
      break;
    }
  }
  return Buffer.concat(parts).subarray(0, max).toString('utf8');
}

/** The human message in an error body: OpenAI `{error:{message}}`, vLLM `{message}`, FastAPI `{detail}`, A1111 `{error, detail, errors}`. */
export function extractMessageFromBody(text: string): string | undefined {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  try {
    return extractMessage(JSON.parse(trimmed)) ?? clip(trimmed);
  } catch {
    // HTML error pages: keep the text, not the markup.
    return clip(trimmed.replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim());
  }
}

function extractMessage(doc: unknown): string | undefined {
  if (typeof doc === 'string') return doc ? clip(doc) : undefined;
  if (!doc || typeof doc !== 'object') return undefined;
  const d = doc as Record<string, unknown>;
  if (d.error && typeof d.error === 'object') {
    const inner = extractMessage(d.error);
    if (inner) return inner;
  }
  if (typeof d.message === 'string' && d.message) return clip(d.message);
  if (typeof d.detail === 'string' && d.detail) return clip(d.detail);
  if (Array.isArray(d.detail)) {
    const msgs = d.detail.map((x) => {
      const item = (x ?? {}) as { msg?: unknown; loc?: unknown };
      const loc = Array.isArray(item.loc) ? item.loc.join('.') : '';
      return typeof item.msg === 'string' ? (loc ? `${loc}: ${item.msg}` : item.msg) : JSON.stringify(x);
    });
    if (msgs.length) return clip(msgs.join('; '));
  }
  if (typeof d.errors === 'string' && d.errors) return clip(d.errors);
  if (typeof d.error === 'string' && d.error) return clip(d.error);
  return undefined;
}

function clip(s: string, max = 500): string {
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** Removes secrets from a message (an API key a remote echoes back must not reach the task record). */
export function redact(message: string, secrets: string[]): string {
  let out = message;
  for (const s of secrets) if (s) out = out.split(s).join('[redacted]');
  return out;
}

/** Validates a base URL from the catalog and drops a trailing slash. */
export function parseBaseUrl(value: unknown, field: string): string {
  if (typeof value !== 'string' || !value) throw new EngineError('MODEL_MISCONFIGURED', `modelOptions.${field} must be a URL string`);
  let u: URL;
  try {
    u = new URL(value);
  } catch {
    throw new EngineError('MODEL_MISCONFIGURED', `modelOptions.${field} is not a valid URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new EngineError('MODEL_MISCONFIGURED', `modelOptions.${field} must be http(s)`);
  if (u.username || u.password) throw new EngineError('MODEL_MISCONFIGURED', `modelOptions.${field} must not carry credentials`);
  return value.replace(/\/+$/, '');
}

function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return 'image url';
  }
}

// ================================================================== bytes


export function isWav(b: Buffer): boolean {
  return b.length >= 12 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WAVE';
}

/** Decodes base64 from a remote (a `data:` prefix tolerated); refuses text that is not base64. */
export function decodeBase64(text: string, what: string, secrets: string[]): Buffer {
  const body = (text.startsWith('data:') ? text.slice(text.indexOf(',') + 1) : text).replace(/\s+/g, '');
  if (!body || !/^[A-Za-z0-9+/_-]+={0,2}$/.test(body)) throw badResponse(what, 'image is not valid base64', secrets);
  return Buffer.from(body, 'base64');
}

/** The task's input image (base64 or data URL) as bytes with its sniffed type. */
function decodeInputImage(image: string): { data: Buffer; mime: string } {
  const m = /^data:image\/[a-zA-Z0-9.+-]+;base64,/.exec(image);
  const data = Buffer.from((m ? image.slice(m[0].length) : image).replace(/\s+/g, ''), 'base64');
  const kind = sniffWebImage(data);
  if (!kind) throw new EngineError('INVALID_IMAGE', 'input_data.image is not a PNG, JPEG, GIF or WebP image');
  return { data, mime: kind.mime };
}

// ================================================================== small things

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v ? v : undefined;
}

function seconds(startedMs: number): number {
  return Math.round(performance.now() - startedMs) / 1000;
}
