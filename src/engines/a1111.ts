/**
 * An engine for the AUTOMATIC1111 Stable Diffusion web UI API (also SD.Next, Forge):
 * POST /sdapi/v1/txt2img while polling /sdapi/v1/progress; on abort it asks the server to
 * stop with /sdapi/v1/interrupt (dropping the HTTP request alone does not stop generation).
 */
import { EngineError, type Engine, type EngineArtifact, type EngineContext, type EngineResult, type EngineTask } from '../core/engine.js';
import type { TaskType } from '../core/task.js';
import { sniffWebImage } from '../core/media.js';
import { badResponse, checkStatus, decodeBase64, parseBaseUrl, readJson, remoteCall } from './openai.js';

export interface A1111EngineOptions {
  fetch?: typeof fetch;
  /** Deadline for one txt2img request (ms). Default 10 minutes. */
  requestTimeoutMs?: number;
  /** How often to ask the server for progress (ms). Default 500. */
  pollIntervalMs?: number;
}

const DEFAULT_BASE_URL = 'http://127.0.0.1:7860';
const SIDE_REQUEST_TIMEOUT_MS = 5_000;

export class A1111Engine implements Engine {
  readonly name = 'a1111';
  readonly taskTypes: readonly TaskType[] = ['image_generation'];
  private readonly fetchFn: typeof fetch;
  private readonly timeoutMs: number;
  private readonly pollMs: number;
  private readonly interrupts = new Set<Promise<void>>();

  constructor(opts: A1111EngineOptions = {}) {
    this.fetchFn = opts.fetch ?? ((input, init) => fetch(input, init));
    this.timeoutMs = opts.requestTimeoutMs ?? 600_000;
    this.pollMs = opts.pollIntervalMs ?? 500;
  }

  async run(task: EngineTask, ctx: EngineContext): Promise<EngineResult> {
    if (task.taskType !== 'image_generation') {
      throw new EngineError('UNSUPPORTED_TASK_TYPE', `The a1111 engine does not run ${String(task.taskType)} tasks`);
    }
    const base = parseBaseUrl(task.modelOptions.base_url ?? DEFAULT_BASE_URL, 'base_url');
    const p = task.parameters;
    const n = typeof p.num_images === 'number' ? p.num_images : 1;
    const checkpoint = typeof task.modelOptions.checkpoint === 'string' && task.modelOptions.checkpoint ? task.modelOptions.checkpoint : undefined;
    const body: Record<string, unknown> = {
      prompt: String(task.inputData.prompt),
      negative_prompt: typeof task.inputData.negative_prompt === 'string' ? task.inputData.negative_prompt : '',
      width: p.width,
      height: p.height,
      steps: p.steps,
      cfg_scale: p.guidance_scale,
      seed: typeof p.seed === 'number' ? p.seed : -1,
      sampler_name: p.sampler,
      batch_size: n,
      n_iter: 1,
      send_images: true,
      save_images: false,
    };
    if (checkpoint) {
      body.override_settings = { sd_model_checkpoint: checkpoint };
      // The default (true) reloads the previous checkpoint after every request: slow, and pointless for a served model.
      body.override_settings_restore_afterwards = false;
    }

    const url = `${base}/sdapi/v1/txt2img`;
    const what = `POST ${url}`;
    const started = performance.now();
    const { artifacts, seed, seeds } = await remoteCall(
      { signal: ctx.signal, timeoutMs: this.timeoutMs, what, secrets: [], onStopped: () => this.interrupt(base) },
      async (signal) => {
        const polling = new AbortController();
        const onAbort = () => polling.abort();
        signal.addEventListener('abort', onAbort, { once: true });
        const poller = this.pollProgress(base, polling.signal, ctx);
        try {
          const res = await this.fetchFn(url, {
            method: 'POST',
            headers: { 'content-type': 'application/json', accept: 'application/json' },
            body: JSON.stringify(body),
            signal,
          });
          await checkStatus(res, what, []);
          return parseTxt2Img(await readJson(res, what, []), n, what);
        } finally {
          signal.removeEventListener('abort', onAbort);
          polling.abort();
          await poller;
        }
      },
    );
    ctx.reportProgress(1);
    const result: Record<string, unknown> = { images: artifacts.map((a) => a.name), seed, inference_time: Math.round(performance.now() - started) / 1000 };
    if (seeds) result.seeds = seeds;
    return { result, artifacts };
  }

  /** Waits for interrupt requests still in flight. */
  async close(): Promise<void> {
    await Promise.all([...this.interrupts]);
  }

  private async pollProgress(base: string, signal: AbortSignal, ctx: EngineContext): Promise<void> {
    let last = 0;
    while (!signal.aborted) {
      await sleep(this.pollMs, signal);
      if (signal.aborted) return;
      const one = new AbortController();
      const cut = () => one.abort();
      const timer = setTimeout(cut, SIDE_REQUEST_TIMEOUT_MS);
      signal.addEventListener('abort', cut, { once: true });
      try {
        const res = await this.fetchFn(`${base}/sdapi/v1/progress?skip_current_image=true`, {
          headers: { accept: 'application/json' },
          signal: one.signal,
        });
        if (!res.ok) {
          await res.body?.cancel().catch(() => {});
          continue;
        }
        const progress = ((await res.json()) as { progress?: unknown }).progress;
        // The server's figure drops back to 0 between jobs; only report it moving forward.
        if (typeof progress === 'number' && Number.isFinite(progress) && progress > last) {
          last = Math.min(progress, 0.99);
          ctx.reportProgress(last);
        }
      } catch {
        // Progress is best effort: the txt2img request decides the outcome.
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', cut);
      }
    }
  }

  private interrupt(base: string): void {
    const p = this.fetchFn(`${base}/sdapi/v1/interrupt`, { method: 'POST', signal: AbortSignal.timeout(SIDE_REQUEST_TIMEOUT_MS) })
      .then((res) => res.body?.cancel())
      .catch(() => {})
      .finally(() => this.interrupts.delete(p));
    this.interrupts.add(p);
  }
}

function parseTxt2Img(doc: Record<string, unknown>, n: number, what: string): { artifacts: EngineArtifact[]; seed: number | null; seeds?: number[] } {
  if (!Array.isArray(doc.images) || doc.images.length === 0) throw badResponse(what, 'no "images" in the response', []);
  let info: Record<string, unknown> = {};
  if (typeof doc.info === 'string') {
    try {
      const parsed = JSON.parse(doc.info) as unknown;
      if (parsed && typeof parsed === 'object') info = parsed as Record<string, unknown>;
    } catch {
      // info is informational; the images are what matter
    }
  } else if (doc.info && typeof doc.info === 'object') {
    info = doc.info as Record<string, unknown>;
  }
  // A grid may come first and extensions (ControlNet) may append their own maps: keep the batch.
  const first = typeof info.index_of_first_image === 'number' ? info.index_of_first_image : 0;
  const images = doc.images.slice(first, first + n);
  if (images.length === 0) throw badResponse(what, 'no images after index_of_first_image', []);
  const artifacts = images.map((b64, i) => {
    if (typeof b64 !== 'string') throw badResponse(what, `images[${first + i}] is not a string`, []);
    const data = decodeBase64(b64, what, []);
    const kind = sniffWebImage(data);
    if (!kind) throw badResponse(what, `images[${first + i}] is not a PNG, JPEG, WebP or GIF image`, []);
    return { name: `image-${i}.${kind.ext}`, contentType: kind.mime, data };
  });
  const seed = typeof info.seed === 'number' ? info.seed : null;
  const seeds = Array.isArray(info.all_seeds) ? info.all_seeds.filter((s): s is number => typeof s === 'number').slice(0, artifacts.length) : undefined;
  return { artifacts, seed, seeds };
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
  });
}
