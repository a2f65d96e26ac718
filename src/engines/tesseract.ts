/**
 * OCR with tesseract.js (WASM, in worker threads), reading the traineddata installed with the
 * `@tesseract.js-data/<lang>` packages: never the network.
 *
 * Pitfalls handled here (tesseract.js 7.0.0):
 * - Without `langPath` it fetches from a CDN; offline, that crashes the process from the
 *   worker thread. `langPath` is always a local folder, checked before a worker is made.
 * - A language whose file is missing makes `createWorker` hang for ever (the error goes to
 *   `errorHandler` only), so missing files are refused up front and creation has a timeout.
 * - Without `errorHandler`, a failed job throws from a message handler (uncaught).
 * - `worker.terminate()` does not settle the jobs in flight: a run races its job against the
 *   abort signal, its timeout and the thread's exit.
 * - Job failures arrive as strings, not Errors.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import Tesseract from 'tesseract.js';
import { EngineError, RetryableEngineError, type Engine, type EngineContext, type EngineResult, type EngineTask } from '../core/engine.js';
import { sniffImage } from '../core/media.js';
import type { TaskType } from '../core/task.js';

export interface TesseractEngineOptions {
  /** Workers per language (runs beyond this wait their turn). Default 1. */
  workers?: number;
  /** Limit for creating a worker and for one recognition, in ms. Default 120 000. */
  timeoutMs?: number;
  /**
   * A folder holding `<lang>.traineddata.gz` for every language to serve. Default: each
   * language's `@tesseract.js-data/<lang>` package, `4.0.0_best_int` folder.
   */
  langPath?: string;
}

type Worker = Tesseract.Worker;

interface Slot {
  worker: Worker;
  busy: boolean;
  dead: boolean;
  /** Called when the thread dies or errors while a job runs. */
  onCrash: ((err: Error) => void) | null;
  onProgress: ((p: number) => void) | null;
}

interface Pool {
  slots: Slot[];
  creating: number;
  waiters: Array<() => void>;
}

const LANGUAGE_PATTERN = /^[a-z_]{3,8}(\+[a-z_]{3,8})*$/;
const DATA_URL = /^data:image\/[a-zA-Z0-9.+-]+;base64,/;
const MAX_LANGUAGES = 4;

const requireFromHere = createRequire(import.meta.url);

export class TesseractEngine implements Engine {
  readonly name = 'tesseract';
  readonly taskTypes: readonly TaskType[] = ['image_to_text'];
  private readonly maxWorkers: number;
  /** The worker leases at most this many OCR tasks at once, whatever their languages. */
  readonly capacity: number;
  private readonly timeoutMs: number;
  private readonly langPath: string | undefined;
  private readonly pools = new Map<string, Pool>();
  /** Creations still in flight; close() terminates what they yield. */
  private readonly pending = new Set<Promise<Slot | null>>();
  private closed = false;

  constructor(opts: TesseractEngineOptions = {}) {
    this.maxWorkers = Math.max(1, Math.floor(opts.workers ?? 1));
    this.capacity = this.maxWorkers;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.langPath = opts.langPath;
  }

  async run(task: EngineTask, ctx: EngineContext): Promise<EngineResult> {
    const { signal } = ctx;
    throwIfAborted(signal);
    if (this.closed) throw new RetryableEngineError('ENGINE_UNAVAILABLE', 'tesseract engine is closed');
    const started = performance.now();

    const mode = task.parameters.mode ?? 'ocr';
    if (mode === 'caption') throw new EngineError('UNSUPPORTED', 'tesseract does OCR only; use an openai vision model for captions');
    if (mode !== 'ocr') throw new EngineError('INVALID_INPUT', `Unknown mode: ${String(mode)}`);

    const language = task.parameters.language ?? task.modelOptions.language ?? 'eng';
    if (typeof language !== 'string' || !LANGUAGE_PATTERN.test(language) || language.split('+').length > MAX_LANGUAGES) {
      throw new EngineError('INVALID_INPUT', `Invalid language: ${String(language)}`);
    }
    const image = decodeImage(task.inputData.image);
    const langPath = this.languageDir(language);

    ctx.reportProgress(0.02);
    const slot = await this.acquire(language, langPath, signal);
    let keep = true;
    try {
      ctx.reportProgress(0.1);
      slot.onProgress = (p) => ctx.reportProgress(0.1 + 0.85 * p);
      throwIfAborted(signal);
      keep = false; // from here on, a failure other than a bad image may leave the worker busy
      const data = await this.recognize(slot, image, signal);
      const text = String(data.text ?? '').replace(/\s+$/, '');
      const confidence = clamp(Number(data.confidence) || 0, 0, 100);
      keep = true;
      ctx.reportProgress(1);
      return {
        result: {
          text,
          confidence: Math.round(confidence * 100) / 100,
          words: text.split(/\s+/).filter(Boolean).length,
          language,
          inference_time: Math.round(performance.now() - started) / 1000,
        },
      };
    } catch (err) {
      // A worker whose job was abandoned (abort, timeout, crash) is not reused; one that
      // merely could not read the image is fine.
      if (err instanceof EngineError && err.code === 'INVALID_INPUT') keep = true;
      throw err;
    } finally {
      slot.onProgress = null;
      slot.onCrash = null;
      if (keep && !slot.dead && !this.closed) this.release(language, slot);
      else this.discard(language, slot);
    }
  }

  /** Terminates every worker; runs in flight reject. */
  async close(): Promise<void> {
    this.closed = true;
    const slots = [...this.pools.values()].flatMap((p) => p.slots);
    for (const pool of this.pools.values()) for (const w of pool.waiters.splice(0)) w();
    this.pools.clear();
    for (const slot of slots) this.kill(slot, new RetryableEngineError('ENGINE_UNAVAILABLE', 'tesseract engine closed'));
    // Creations in flight terminate their worker as they come up; wait for them, briefly.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.allSettled([...this.pending]), new Promise((r) => (timer = setTimeout(r, 5000)))]);
    clearTimeout(timer);
  }

  private async recognize(slot: Slot, image: Buffer, signal: AbortSignal): Promise<Tesseract.Page> {
    let onAbort: (() => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      throwIfAborted(signal);
      const job = slot.worker.recognize(image);
      job.catch(() => {}); // it may settle after we have given up on it
      const stop = new Promise<never>((_, reject) => {
        onAbort = () => {
          // terminate() leaves the job pending: reject here, and the caller discards the slot.
          this.kill(slot);
          reject(abortError(signal));
        };
        signal.addEventListener('abort', onAbort, { once: true });
        timer = setTimeout(() => {
          this.kill(slot);
          reject(new EngineError('ENGINE_TIMEOUT', `OCR took longer than ${this.timeoutMs} ms`));
        }, this.timeoutMs);
        slot.onCrash = reject;
      });
      const res = await Promise.race([job, stop]);
      return res.data;
    } catch (err) {
      if (err instanceof Error) throw err;
      // tesseract.js rejects jobs with strings such as "Error: Error attempting to read image."
      const msg = String(err);
      if (/read image|pix not read|image file/i.test(msg) || /ERR_OUT_OF_RANGE|out of range/i.test(msg)) {
        throw new EngineError('INVALID_INPUT', 'The image could not be decoded');
      }
      throw new EngineError('ENGINE_ERROR', `tesseract failed: ${msg.slice(0, 500)}`);
    } finally {
      if (onAbort) signal.removeEventListener('abort', onAbort);
      clearTimeout(timer);
    }
  }

  /** The folder holding the traineddata of every language in `language` ('eng+fra'). */
  private languageDir(language: string): string {
    const dirs = language.split('+').map((lang) => {
      const dir = this.langPath ?? packageDataDir(lang);
      if (!dir || !existsSync(join(dir, `${lang}.traineddata.gz`))) {
        throw new EngineError('INVALID_INPUT', `OCR language '${lang}' is not installed (no @tesseract.js-data/${lang})`);
      }
      return dir;
    });
    // tesseract.js takes one langPath; its {code, data} form is broken in 7.0.0 (initialize
    // joins the data, not the codes), so languages from different folders cannot be mixed.
    if (dirs.some((d) => d !== dirs[0])) {
      throw new EngineError('UNSUPPORTED', `OCR languages '${language}' are installed in different folders; set the engine's langPath`);
    }
    return dirs[0];
  }

  private pool(language: string): Pool {
    let pool = this.pools.get(language);
    if (!pool) {
      pool = { slots: [], creating: 0, waiters: [] };
      this.pools.set(language, pool);
    }
    return pool;
  }

  /** An idle worker for `language`, a new one while under the limit, or the next one freed. */
  private async acquire(language: string, langPath: string, signal: AbortSignal): Promise<Slot> {
    for (;;) {
      throwIfAborted(signal);
      if (this.closed) throw new RetryableEngineError('ENGINE_UNAVAILABLE', 'tesseract engine closed');
      const pool = this.pool(language);
      const idle = pool.slots.find((s) => !s.busy && !s.dead);
      if (idle) {
        idle.busy = true;
        return idle;
      }
      if (pool.slots.length + pool.creating < this.maxWorkers) return this.create(language, pool, langPath, signal);
      await new Promise<void>((resolve, reject) => {
        const wake = () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        };
        const onAbort = () => {
          const i = pool.waiters.indexOf(wake);
          if (i >= 0) pool.waiters.splice(i, 1);
          reject(abortError(signal));
        };
        pool.waiters.push(wake);
        signal.addEventListener('abort', onAbort, { once: true });
      });
    }
  }

  /**
   * Starts a worker for `language` and waits for it, up to the abort signal or the timeout. A
   * creation given up on because of an abort goes on in the background and its worker joins
   * the pool; one that failed or timed out is terminated if it ever comes up.
   */
  private async create(language: string, pool: Pool, langPath: string, signal: AbortSignal): Promise<Slot> {
    pool.creating++;
    let counted = true;
    const uncount = () => {
      if (!counted) return;
      counted = false;
      pool.creating--;
      this.wakeOne(pool);
    };
    let userWaiting = true;
    let abandoned = false;
    let creationError: unknown = null;
    let failCreation: ((err: unknown) => void) | null = null;
    const ref: { slot: Slot | null } = { slot: null };

    const workerPromise = Tesseract.createWorker(language, Tesseract.OEM.LSTM_ONLY, {
      langPath,
      gzip: true,
      cacheMethod: 'none',
      // Jobs reject on their own; this keeps tesseract.js from throwing out of its message
      // handler, and catches a failure while loading, which createWorker never reports.
      errorHandler: (err: unknown) => {
        if (ref.slot) return;
        creationError = err;
        failCreation?.(err);
      },
      logger: (m: Tesseract.LoggerMessage) => {
        if (m.status === 'recognizing text' && typeof m.progress === 'number') ref.slot?.onProgress?.(m.progress);
      },
    });
    const tracked: Promise<Slot | null> = workerPromise.then(
      (worker) => {
        const slot: Slot = { worker, busy: userWaiting, dead: false, onCrash: null, onProgress: null };
        ref.slot = slot;
        const thread = (worker as unknown as { worker?: NodeJS.EventEmitter }).worker;
        thread?.on('error', (err: Error) => this.crashed(language, slot, err));
        thread?.on('exit', (code: number) => this.crashed(language, slot, new Error(`tesseract worker exited (${code})`)));
        if (this.closed || abandoned) {
          this.kill(slot);
          return null;
        }
        pool.slots.push(slot);
        uncount();
        return slot;
      },
      (err: unknown) => {
        uncount();
        throw err;
      },
    );
    tracked.catch(() => {});
    this.pending.add(tracked);
    void tracked.finally(() => this.pending.delete(tracked)).catch(() => {});

    let onAbort: (() => void) | undefined;
    let timer: NodeJS.Timeout | undefined;
    try {
      const slot = await Promise.race([
        tracked,
        new Promise<never>((_, reject) => {
          if (creationError) reject(creationError);
          failCreation = reject;
          onAbort = () => reject(abortError(signal));
          signal.addEventListener('abort', onAbort, { once: true });
          timer = setTimeout(
            () => reject(new RetryableEngineError('ENGINE_TIMEOUT', `tesseract worker for '${language}' did not start within ${this.timeoutMs} ms`)),
            this.timeoutMs,
          );
        }),
      ]);
      if (!slot) throw new RetryableEngineError('ENGINE_UNAVAILABLE', 'tesseract engine closed');
      return slot;
    } catch (err) {
      userWaiting = false;
      if (ref.slot) {
        // It came up after all (the race was lost by a hair): hand it to the next run.
        ref.slot.busy = false;
        this.wakeOne(pool);
      } else if (!signal.aborted) {
        // Failed or timed out: may never settle (tesseract.js 7 hangs on some load failures).
        abandoned = true;
        this.pending.delete(tracked);
        uncount();
      }
      if (err instanceof Error) throw err;
      throw new EngineError('ENGINE_UNAVAILABLE', `tesseract worker for '${language}' failed to start: ${String(err).slice(0, 500)}`);
    } finally {
      failCreation = null;
      if (onAbort) signal.removeEventListener('abort', onAbort);
      clearTimeout(timer);
    }
  }

  private release(language: string, slot: Slot): void {
    slot.busy = false;
    const pool = this.pools.get(language);
    if (pool) this.wakeOne(pool);
  }

  private discard(language: string, slot: Slot): void {
    this.kill(slot);
    const pool = this.pools.get(language);
    if (!pool) return;
    const i = pool.slots.indexOf(slot);
    if (i >= 0) pool.slots.splice(i, 1);
    this.wakeOne(pool);
  }

  /** Marks the slot dead and terminates its thread; a job in flight is rejected with `err`. */
  private kill(slot: Slot, err?: Error): void {
    if (!slot.dead) {
      slot.dead = true;
      void slot.worker.terminate().catch(() => {});
    }
    if (err) slot.onCrash?.(err);
  }

  private crashed(language: string, slot: Slot, err: Error): void {
    if (slot.dead) return; // our own terminate()
    slot.dead = true;
    slot.onCrash?.(new RetryableEngineError('ENGINE_CRASHED', err.message, { cause: err }));
    if (!slot.busy) this.discard(language, slot);
  }

  private wakeOne(pool: Pool): void {
    pool.waiters.shift()?.();
  }
}

/** `<package>/4.0.0_best_int` of `@tesseract.js-data/<lang>`, or null when it is not installed. */
function packageDataDir(lang: string): string | null {
  try {
    return join(dirname(requireFromHere.resolve(`@tesseract.js-data/${lang}/package.json`)), '4.0.0_best_int');
  } catch {
    return null;
  }
}

/** Base64 or a `data:image/...;base64,` URL to bytes of a known image format. */
export function decodeImage(input: unknown): Buffer {
  if (typeof input !== 'string' || input.length === 0) throw new EngineError('INVALID_INPUT', 'input_data.image must be a base64 string or data URL');
  let b64 = input;
  if (b64.startsWith('data:')) {
    const m = DATA_URL.exec(b64);
    if (!m) throw new EngineError('INVALID_INPUT', 'input_data.image: only base64 data:image/... URLs are accepted');
    b64 = b64.slice(m[0].length);
  }
  b64 = b64.replace(/\s+/g, '');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64) || b64.length % 4 === 1 || b64.length === 0) {
    throw new EngineError('INVALID_INPUT', 'input_data.image is not valid base64');
  }
  const buf = Buffer.from(b64, 'base64');
  const format = sniffImage(buf)?.format;
  if (!format) throw new EngineError('INVALID_INPUT', 'input_data.image is not a PNG, JPEG, GIF, BMP, WebP or TIFF image');
  return buf;
}

/** The image format named by the leading magic bytes, or null. */

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  const err = new Error(`OCR aborted${reason !== undefined ? `: ${String(reason instanceof Error ? reason.message : reason)}` : ''}`);
  err.name = 'AbortError';
  return err;
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw abortError(signal);
}

function clamp(n: number, lo: number, hi: number): number {
  return Math.min(hi, Math.max(lo, n));
}
