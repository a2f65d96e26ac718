/**
 * Text generation with llama.cpp through node-llama-cpp (GGUF models, CPU or GPU).
 *
 * - The native library is loaded lazily on the first task (and only once); node-llama-cpp
 *   itself is imported dynamically, so a process that never runs this engine never loads it.
 * - Loaded models are cached, least recently used first out, up to `maxLoadedModels`; an
 *   evicted model is disposed once the runs using it have finished.
 * - Each loaded model keeps one context with `maxConcurrent` sequences (default 1), made on
 *   its first generation and kept while the model is loaded: a task takes a sequence (its KV
 *   cache cleared when it is given back) and a `LlamaCompletion` (plain completion, no chat
 *   template). Generations running at once on one model are evaluated in the same batches
 *   (llama.cpp's parallel decoding). `maxConcurrent` also caps generations engine-wide and
 *   is the engine's `capacity`, so a worker leases no more than that at once.
 * - An abort (cancel, timeout, shutdown) rejects at once; the generation loop, which checks
 *   the signal between tokens, unwinds in the background before the next run starts.
 */
import { availableParallelism } from 'node:os';
import { stat } from 'node:fs/promises';
import { resolve as resolvePath } from 'node:path';
import type { Llama, LlamaContext, LlamaModel, LlamaCompletionGenerationOptions, Token } from 'node-llama-cpp';
import { EngineError, RetryableEngineError, type Engine, type EngineContext, type EngineResult, type EngineTask } from '../core/engine.js';
import type { TaskType } from '../core/task.js';

export type LlamaGpuOption = false | 'auto' | 'cuda' | 'vulkan';

export interface LlamaCppEngineOptions {
  /** Threads per evaluation; default `os.availableParallelism()`. More threads than free cores is very slow. */
  threads?: number;
  /** Context size per task (capped at the model's training context); default 2048. */
  contextSize?: number;
  /** false (default): CPU only. 'auto': try CUDA/Vulkan, fall back to CPU. */
  gpu?: LlamaGpuOption;
  /** Models kept loaded at once; default 1. */
  maxLoadedModels?: number;
  /** Generations running at once across all models; default 1. */
  maxConcurrent?: number;
  /** Where `hf:` model URIs are downloaded to / looked up in; default `<cwd>/models`. */
  modelsDir?: string;
  /** A model download (`model_uri`) fails after this long without progress; default 60 s. */
  downloadStallTimeoutMs?: number;
}

const DEFAULT_MAX_TOKENS = 128;
const DEFAULT_TEMPERATURE = 0.8;

interface ModelEntry {
  key: string;
  promise: Promise<LlamaModel>;
  refs: number;
  evicted: boolean;
  /** The model's context, made on its first generation: one sequence per generation that may run at once. */
  context: Promise<LlamaContext> | null;
}

type NodeLlamaCpp = typeof import('node-llama-cpp');

export class LlamaCppEngine implements Engine {
  readonly name = 'llama-cpp';
  readonly taskTypes: readonly TaskType[] = ['text_generation'];

  private readonly threads: number;
  private readonly contextSize: number;
  private readonly gpu: LlamaGpuOption;
  private readonly maxLoadedModels: number;
  private readonly maxConcurrent: number;
  readonly capacity: number;
  private readonly modelsDir: string;
  private readonly downloadStallTimeoutMs: number;

  private lib: Promise<NodeLlamaCpp> | null = null;
  private llama: Promise<Llama> | null = null;
  /** Insertion order = recency: the first key is the least recently used. */
  private readonly models = new Map<string, ModelEntry>();
  private readonly disposing = new Set<Promise<void>>();
  private readonly resolving = new Map<string, Promise<string>>();
  private running = 0;
  private readonly slotWaiters: Array<() => void> = [];
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly closeController = new AbortController();
  private closed = false;

  constructor(opts: LlamaCppEngineOptions = {}) {
    this.threads = Math.max(1, Math.floor(opts.threads ?? availableParallelism()));
    this.contextSize = Math.max(64, Math.floor(opts.contextSize ?? 2048));
    this.gpu = opts.gpu ?? false;
    this.maxLoadedModels = Math.max(1, Math.floor(opts.maxLoadedModels ?? 1));
    this.maxConcurrent = Math.max(1, Math.floor(opts.maxConcurrent ?? 1));
    this.capacity = this.maxConcurrent;
    this.modelsDir = resolvePath(opts.modelsDir ?? 'models');
    this.downloadStallTimeoutMs = Math.max(1, opts.downloadStallTimeoutMs ?? 60_000);
  }

  async run(task: EngineTask, ctx: EngineContext): Promise<EngineResult> {
    if (this.closed) throw new RetryableEngineError('ENGINE_CLOSED', 'llama-cpp engine is shut down');
    // Not AbortSignal.any: combined with the engine-lifetime close signal it leaks on some Node
    // versions (nodejs/node#55351); this link is unhooked when the run returns.
    const link = linkSignals([ctx.signal, this.closeController.signal]);
    try {
      return await this.runLinked(task, ctx, link.signal);
    } finally {
      link.dispose();
    }
  }

  private async runLinked(task: EngineTask, ctx: EngineContext, signal: AbortSignal): Promise<EngineResult> {
    throwIfAborted(signal);
    const params = readParams(task);

    // Wait for a generation slot, then for the model; both waits end at once on abort. A model
    // load carries on regardless and stays cached for the next task.
    await this.acquireSlot(signal);
    const acquiring = this.acquireModel(task);
    let acquired: Awaited<typeof acquiring>;
    try {
      acquired = await raceAbort(acquiring, signal);
    } catch (err) {
      void acquiring.then((a) => this.releaseModel(a.entry), () => {});
      this.releaseSlot();
      throw signal.aborted ? abortError(signal) : err;
    }
    const { lib, model, entry } = acquired;
    const work = this.generate(lib, model, entry, params, ctx, signal).finally(() => {
      this.releaseModel(entry);
      this.releaseSlot();
    });
    this.inFlight.add(work);
    void work.then(
      () => this.inFlight.delete(work),
      () => this.inFlight.delete(work),
    );
    return { result: await raceAbort(work, signal) };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.closeController.abort(new Error('llama-cpp engine closed'));
    await Promise.allSettled([...this.inFlight]);
    const entries = [...this.models.values()];
    this.models.clear();
    await Promise.allSettled(entries.map((e) => e.context?.then((c) => c.dispose())));
    await Promise.allSettled(entries.map((e) => e.promise.then((m) => m.dispose())));
    await Promise.allSettled([...this.disposing]);
    const llama = this.llama;
    this.llama = null;
    if (llama) await llama.then((l) => l.dispose()).catch(() => {});
  }

  // ---- generation -------------------------------------------------------------------------

  /** The model's shared context; a failed creation is not remembered. */
  private contextOf(entry: ModelEntry, model: LlamaModel): Promise<LlamaContext> {
    entry.context ??= model
      .createContext({
        contextSize: Math.min(this.contextSize, model.trainContextSize || this.contextSize),
        sequences: this.maxConcurrent,
        threads: this.threads,
      })
      .catch((err: unknown) => {
        entry.context = null;
        throw err;
      });
    return entry.context;
  }

  private async generate(
    lib: NodeLlamaCpp,
    model: LlamaModel,
    entry: ModelEntry,
    p: GenerationParams,
    ctx: EngineContext,
    signal: AbortSignal,
  ): Promise<Record<string, unknown>> {
    throwIfAborted(signal);
    let sequence;
    try {
      // The engine's slots hold generations to maxConcurrent, so a sequence is free here.
      sequence = (await this.contextOf(entry, model)).getSequence();
    } catch (err) {
      throw new RetryableEngineError('CONTEXT_CREATE_FAILED', `llama-cpp: could not create a context: ${errMessage(err)}`, { cause: err });
    }
    const completion = new lib.LlamaCompletion({ contextSequence: sequence });
    try {
      let tokens = 0;
      let lastReported = 0;
      // Stop strings are matched here, on the text as streamed by onTextChunk. node-llama-cpp's
      // own `customStopTriggers` matches against each token detokenized on its own, which drops
      // the leading space of SentencePiece word pieces ("▁the" -> "the"), so a stop such as
      // " the" or "two words" would never match there.
      let text = '';
      let stopAt = -1;
      const maxStopLen = Math.max(0, ...p.stop.map((s) => s.length));
      const stopController = new AbortController();
      const options: LlamaCompletionGenerationOptions = {
        // Stopping via this signal returns the completion so far instead of throwing; a real
        // abort (ctx.signal / close) is told apart below and rejects.
        signal: p.stop.length > 0 ? AbortSignal.any([signal, stopController.signal]) : signal,
        stopOnAbortSignal: p.stop.length > 0,
        maxTokens: p.maxTokens,
        temperature: p.temperature,
        repeatPenalty: p.repetitionPenalty === undefined ? false : { penalty: p.repetitionPenalty, lastTokens: 64 },
        onToken: (chunk: Token[]) => {
          if (stopAt >= 0) return;
          tokens += chunk.length;
          const progress = Math.min(1, tokens / p.maxTokens);
          if (progress - lastReported >= 0.01 || (progress === 1 && lastReported < 1)) {
            lastReported = progress;
            ctx.reportProgress(progress);
          }
        },
      };
      // Streamed to subscribers as it comes, holding back a possible stop string's prefix.
      let emitted = 0;
      options.onTextChunk = (chunk: string) => {
        if (stopAt >= 0) return;
        const from = Math.max(0, text.length - maxStopLen + 1);
        text += chunk;
        for (const s of p.stop) {
          const i = text.indexOf(s, from);
          if (i >= 0 && (stopAt < 0 || i < stopAt)) stopAt = i;
        }
        if (stopAt >= 0) stopController.abort();
        const safeEnd = stopAt >= 0 ? stopAt : text.length - Math.max(0, maxStopLen - 1);
        if (safeEnd > emitted) {
          ctx.reportOutput?.(text.slice(emitted, safeEnd));
          emitted = safeEnd;
        }
      };
      if (p.temperature > 0) {
        if (p.topK !== undefined) options.topK = p.topK;
        if (p.topP !== undefined) options.topP = p.topP;
        if (p.seed !== undefined) options.seed = p.seed;
      }

      const started = performance.now();
      const res = await completion.generateCompletionWithMeta(p.prompt, options);
      const seconds = (performance.now() - started) / 1000;
      throwIfAborted(signal);
      const stopReason = res.metadata.stopReason;
      const stopped = stopAt >= 0;
      if (stopReason === 'abort' && !stopped) throw abortError(signal);
      const generated = stopped ? text.slice(0, stopAt) : res.response;
      if (generated.length > emitted && generated.startsWith(text.slice(0, emitted))) ctx.reportOutput?.(generated.slice(emitted));
      return {
        generated_text: generated,
        tokens_generated: tokens,
        inference_time: seconds,
        tokens_per_second: seconds > 0 ? tokens / seconds : 0,
        finish_reason: !stopped && stopReason === 'maxTokens' ? 'length' : 'stop',
      };
    } catch (err) {
      if (signal.aborted) throw abortError(signal);
      if (err instanceof EngineError || err instanceof RetryableEngineError) throw err;
      throw new EngineError('GENERATION_FAILED', `llama-cpp: generation failed: ${errMessage(err)}`, { cause: err });
    } finally {
      completion.dispose();
      // Clears the sequence's cache and gives it back before the slot is freed.
      await sequence.dispose().catch(() => {});
    }
  }

  // ---- slots ------------------------------------------------------------------------------

  private acquireSlot(signal: AbortSignal): Promise<void> {
    if (this.running < this.maxConcurrent) {
      this.running++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const grant = () => {
        signal.removeEventListener('abort', onAbort);
        resolve(); // `running` was kept incremented by the releaser
      };
      const onAbort = () => {
        const i = this.slotWaiters.indexOf(grant);
        if (i >= 0) this.slotWaiters.splice(i, 1);
        reject(abortError(signal));
      };
      this.slotWaiters.push(grant);
      signal.addEventListener('abort', onAbort, { once: true });
    });
  }

  private releaseSlot(): void {
    const next = this.slotWaiters.shift();
    if (next) next();
    else this.running--;
  }

  // ---- models -----------------------------------------------------------------------------

  private getLib(): Promise<NodeLlamaCpp> {
    this.lib ??= import('node-llama-cpp').catch((err: unknown) => {
      this.lib = null;
      throw new EngineError('BACKEND_UNAVAILABLE', `llama-cpp: node-llama-cpp could not be loaded: ${errMessage(err)}`, { cause: err });
    });
    return this.lib;
  }

  private getLlama(): Promise<Llama> {
    if (this.closed) return Promise.reject(new RetryableEngineError('ENGINE_CLOSED', 'llama-cpp engine is shut down'));
    this.llama ??= (async () => {
      const lib = await this.getLib();
      const base = { build: 'never', maxThreads: this.threads, skipDownload: true, progressLogs: false } as const;
      try {
        return await lib.getLlama({ ...base, gpu: this.gpu });
      } catch (err) {
        if (this.gpu === 'auto') return await lib.getLlama({ ...base, gpu: false });
        throw err;
      }
    })().catch((err: unknown) => {
      this.llama = null;
      if (err instanceof EngineError) throw err;
      throw new EngineError(
        'BACKEND_UNAVAILABLE',
        `llama-cpp: could not load the llama.cpp binary (gpu: ${String(this.gpu)}): ${errMessage(err)}`,
        { cause: err },
      );
    });
    return this.llama;
  }

  private async acquireModel(task: EngineTask): Promise<{ lib: NodeLlamaCpp; model: LlamaModel; entry: ModelEntry }> {
    const lib = await this.getLib();
    const key = await this.resolveModelPath(lib, task);
    let entry = this.models.get(key);
    if (entry) {
      this.models.delete(key); // re-insert: most recently used
      this.models.set(key, entry);
    } else {
      entry = { key, promise: this.loadModel(key), refs: 0, evicted: false, context: null };
      this.models.set(key, entry);
      const loading = entry;
      loading.promise.catch(() => {
        if (this.models.get(key) === loading) this.models.delete(key);
      });
    }
    entry.refs++;
    this.evictOverflow();
    try {
      return { lib, model: await entry.promise, entry };
    } catch (err) {
      this.releaseModel(entry);
      throw err;
    }
  }

  private releaseModel(entry: ModelEntry): void {
    entry.refs--;
    if (entry.evicted && entry.refs === 0) this.disposeEntry(entry);
    else if (!this.closed) this.evictOverflow(); // an entry kept because it was in use may go now
  }

  private evictOverflow(): void {
    for (const [key, e] of this.models) {
      if (this.models.size <= this.maxLoadedModels) break;
      if (e.refs > 0) continue; // in use: keep it until later
      this.models.delete(key);
      e.evicted = true;
      this.disposeEntry(e);
    }
  }

  private disposeEntry(entry: ModelEntry): void {
    const context = entry.context;
    entry.context = null;
    const p = Promise.resolve(context?.then((c) => c.dispose()).catch(() => {}))
      .then(() => entry.promise)
      .then((m) => m.dispose())
      .catch(() => {});
    this.disposing.add(p);
    void p.finally(() => this.disposing.delete(p));
  }

  private async loadModel(modelPath: string): Promise<LlamaModel> {
    try {
      const st = await stat(modelPath);
      if (!st.isFile()) throw new Error('not a file');
    } catch (err) {
      throw new EngineError('MODEL_LOAD_FAILED', `llama-cpp: model file not found or unreadable: ${modelPath} (${errMessage(err)})`, {
        cause: err,
      });
    }
    const llama = await this.getLlama();
    try {
      return await llama.loadModel({ modelPath });
    } catch (err) {
      throw new EngineError('MODEL_LOAD_FAILED', `llama-cpp: could not load model ${modelPath}: ${errMessage(err)}`, { cause: err });
    }
  }

  private async resolveModelPath(lib: NodeLlamaCpp, task: EngineTask): Promise<string> {
    const { model_path: modelPath, model_uri: modelUri } = task.modelOptions;
    if (typeof modelPath === 'string' && modelPath.trim() !== '') return resolvePath(process.cwd(), modelPath);
    if (typeof modelUri === 'string' && modelUri.trim() !== '') {
      // One resolution (download) per URI, shared by the tasks that wait for it and remembered
      // once it succeeds; a task that gives up (abort) leaves it running for the next one.
      // Failures are not remembered.
      let resolving = this.resolving.get(modelUri);
      if (!resolving) {
        resolving = this.download(lib, modelUri).catch((err: unknown) => {
          this.resolving.delete(modelUri);
          throw new EngineError(
            'MODEL_LOAD_FAILED',
            `llama-cpp: could not resolve or download model ${modelUri} into ${this.modelsDir}: ${errMessage(err)}`,
            { cause: err },
          );
        });
        this.resolving.set(modelUri, resolving);
      }
      return await resolving;
    }
    throw new EngineError('MODEL_LOAD_FAILED', `llama-cpp: model "${task.modelName}" has neither options.model_path nor options.model_uri`);
  }

  /**
   * resolveModelFile with a stall timeout. In node-llama-cpp 3.21.1 its `signal` only reaches the
   * download itself, not the lookup before it (which retries for minutes when offline), so the
   * wait is cut here: no progress for `downloadStallTimeoutMs` fails it (the lookup is left to
   * finish in the background).
   */
  private download(lib: NodeLlamaCpp, uri: string): Promise<string> {
    const stall = new AbortController();
    const link = linkSignals([stall.signal, this.closeController.signal]);
    const signal = link.signal;
    let timer: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(
        () => stall.abort(new Error(`no progress for ${this.downloadStallTimeoutMs / 1000} s (offline, or the host is unreachable?)`)),
        this.downloadStallTimeoutMs,
      );
      timer.unref?.();
    };
    arm();
    const resolving = lib.resolveModelFile(uri, { directory: this.modelsDir, cli: false, signal, onProgress: arm });
    return raceAbort(resolving, signal).finally(() => {
      clearTimeout(timer);
      link.dispose();
    });
  }
}

// ---- parameters ---------------------------------------------------------------------------

interface GenerationParams {
  prompt: string;
  maxTokens: number;
  temperature: number;
  topK?: number;
  topP?: number;
  seed?: number;
  repetitionPenalty?: number;
  stop: string[];
}

function readParams(task: EngineTask): GenerationParams {
  const input = task.inputData;
  const params = task.parameters ?? {};
  const prompt = input.prompt;
  if (typeof prompt !== 'string' || prompt.trim() === '') throw new EngineError('INVALID_INPUT', 'input_data.prompt must be a non-empty string');
  const system = typeof input.system_prompt === 'string' && input.system_prompt.trim() !== '' ? input.system_prompt : undefined;

  const num = (k: string): number | undefined => (typeof params[k] === 'number' && Number.isFinite(params[k]) ? (params[k] as number) : undefined);
  const maxTokens = Math.max(1, Math.floor(num('max_tokens') ?? num('max_length') ?? DEFAULT_MAX_TOKENS));
  // do_sample=false or temperature=0: greedy. Otherwise sample at `temperature` (default 0.8).
  const temperature = params.do_sample === false ? 0 : Math.max(0, num('temperature') ?? DEFAULT_TEMPERATURE);
  const stopParam = params.stop;
  const stop = (typeof stopParam === 'string' ? [stopParam] : Array.isArray(stopParam) ? stopParam : []).filter(
    (s): s is string => typeof s === 'string' && s.length > 0,
  );
  const topK = num('top_k');
  const seed = num('seed');
  return {
    prompt: system ? `${system}\n\n${prompt}` : prompt,
    maxTokens,
    temperature,
    topK: topK === undefined ? undefined : Math.floor(topK),
    topP: num('top_p'),
    seed: seed === undefined ? undefined : Math.floor(seed),
    repetitionPenalty: num('repetition_penalty'),
    stop,
  };
}

// ---- helpers ------------------------------------------------------------------------------

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The abort reason as an Error (a reason that is already one is passed on as is). */
function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  return new Error(`aborted: ${String(reason)}`, { cause: reason });
}

/** A signal that aborts (with the same reason) when any of `signals` does; `dispose` unhooks it. */
function linkSignals(signals: AbortSignal[]): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const hooks: Array<() => void> = [];
  const dispose = () => {
    for (const h of hooks.splice(0)) h();
  };
  for (const s of signals) {
    if (s.aborted) {
      dispose();
      controller.abort(s.reason);
      break;
    }
    const onAbort = () => {
      dispose();
      controller.abort(s.reason);
    };
    s.addEventListener('abort', onAbort, { once: true });
    hooks.push(() => s.removeEventListener('abort', onAbort));
  }
  return { signal: controller.signal, dispose };
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw abortError(signal);
}

/** Settles with `p`, or rejects as soon as `signal` aborts (leaving `p` to finish on its own). */
function raceAbort<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    void p.catch(() => {});
    return Promise.reject(abortError(signal));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => {
      void p.catch(() => {});
      reject(abortError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
