/**
 * Real inference through node-llama-cpp on a tiny random-weight GGUF that
 * scripts/make-tiny-gguf.mjs writes into a temp dir.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineError, type EngineContext, type EngineTask } from '../../src/core/engine.js';
import { LlamaCppEngine } from '../../src/engines/llama-cpp.js';

const SCRIPT = resolve(import.meta.dirname, '../../scripts/make-tiny-gguf.mjs');
// One thread by default: on this tiny model a token is a few microseconds of math, so with 2
// threads llama.cpp's thread hand-off dominates, and when the 2 cores are also busy with other
// test files its spin-waiting threads slow generation ~100x (measured: ~1000 tok/s with 1
// thread vs ~10-70 tok/s with 2 on a loaded 2-core box). LLAMA_TEST_THREADS overrides.
const THREADS = Number(process.env.LLAMA_TEST_THREADS) || 1;

let dir: string;
let modelPath: string;
let engine: LlamaCppEngine;

function makeGguf(out: string, ...extra: string[]): void {
  const r = spawnSync(process.execPath, [SCRIPT, out, ...extra], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`make-tiny-gguf failed: ${r.stderr || r.stdout}`);
}

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

let seq = 0;
function task(parameters: Record<string, unknown>, opts: { prompt?: string; system?: string; modelOptions?: Record<string, unknown> } = {}): EngineTask {
  return {
    id: `t${++seq}`,
    taskType: 'text_generation',
    modelName: 'tiny-llama',
    inputData: { prompt: opts.prompt ?? 'Once upon a time', ...(opts.system ? { system_prompt: opts.system } : {}) },
    parameters,
    modelOptions: opts.modelOptions ?? { model_path: modelPath },
  };
}

function context(signal: AbortSignal = new AbortController().signal, onProgress?: (p: number) => void): EngineContext & { progress: number[] } {
  const progress: number[] = [];
  return {
    signal,
    progress,
    reportProgress(p: number) {
      progress.push(p);
      onProgress?.(p);
    },
  };
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'llama-cpp-test-'));
  modelPath = join(dir, 'tiny-llama.gguf');
  makeGguf(modelPath);
  engine = new LlamaCppEngine({ threads: THREADS, contextSize: 2048, gpu: false });
});

afterAll(async () => {
  await engine?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('make-tiny-gguf.mjs', () => {
  it('writes the same bytes every run and skips an up-to-date file', () => {
    const other = join(dir, 'again.gguf');
    makeGguf(other);
    expect(sha256(other)).toBe(sha256(modelPath));
    const skipped = spawnSync(process.execPath, [SCRIPT, other], { encoding: 'utf8' });
    expect(skipped.status).toBe(0);
    expect(skipped.stdout).toMatch(/skipped/);
    makeGguf(other, '--force');
    expect(sha256(other)).toBe(sha256(modelPath));
    const size = readFileSync(modelPath).length;
    expect(size).toBeGreaterThan(500_000);
    expect(size).toBeLessThan(1_000_000);
    expect(readFileSync(modelPath).subarray(0, 4).toString('ascii')).toBe('GGUF');
  });
});

describe('LlamaCppEngine', () => {
  it('generates exactly max_tokens tokens and reports increasing progress in [0, 1]', async () => {
    const ctx = context();
    const { result } = await engine.run(task({ max_tokens: 16, temperature: 0.8, seed: 7 }), ctx);
    expect(typeof result.generated_text).toBe('string');
    expect((result.generated_text as string).trim().length).toBeGreaterThan(0);
    expect(result.tokens_generated).toBe(16);
    expect(result.finish_reason).toBe('length');
    expect(result.inference_time).toBeGreaterThan(0);
    expect(result.tokens_per_second).toBeGreaterThan(0);
    expect(ctx.progress.length).toBeGreaterThan(0);
    for (let i = 0; i < ctx.progress.length; i++) {
      expect(ctx.progress[i]).toBeGreaterThanOrEqual(0);
      expect(ctx.progress[i]).toBeLessThanOrEqual(1);
      if (i > 0) expect(ctx.progress[i]).toBeGreaterThan(ctx.progress[i - 1]);
    }
    expect(ctx.progress.at(-1)).toBe(1);
  });

  it('is deterministic: greedy twice, and the same seed at temperature 0.8 twice', async () => {
    const greedy = { max_tokens: 24, temperature: 0, seed: 42 };
    const a = await engine.run(task(greedy), context());
    const b = await engine.run(task(greedy), context());
    expect(a.result.generated_text).toBe(b.result.generated_text);
    const sampled = { max_tokens: 24, temperature: 0.8, seed: 42 };
    const c = await engine.run(task(sampled), context());
    const d = await engine.run(task(sampled), context());
    expect(c.result.generated_text).toBe(d.result.generated_text);
    const greedyByFlag = await engine.run(task({ max_tokens: 24, do_sample: false, temperature: 1.5 }), context());
    expect(greedyByFlag.result.generated_text).toBe(a.result.generated_text);
  });

  it('truncates at a stop sequence and reports finish_reason stop', async () => {
    const params = { max_tokens: 48, temperature: 0 };
    const full = (await engine.run(task(params), context())).result.generated_text as string;
    const words = full.trim().split(/\s+/);
    expect(words.length).toBeGreaterThan(4);
    // A word that first shows up after the start (the random model repeats itself a lot).
    const stopWord = words.slice(2).find((w) => full.indexOf(` ${w}`) > 0) as string;
    expect(stopWord).toBeDefined();
    const stop = ` ${stopWord}`;
    const cut = await engine.run(task({ ...params, stop: [stop, 'never-generated-xyz'] }), context());
    expect(cut.result.finish_reason).toBe('stop');
    expect(cut.result.generated_text).toBe(full.slice(0, full.indexOf(stop)));
    expect(cut.result.tokens_generated as number).toBeLessThan(48);
    const asString = await engine.run(task({ ...params, stop }), context());
    expect(asString.result.generated_text).toBe(cut.result.generated_text);
    // A stop spanning two words (several tokens).
    const twoWords = `${words[3]} ${words[4]}`;
    const cut2 = await engine.run(task({ ...params, stop: twoWords }), context());
    expect(cut2.result.finish_reason).toBe('stop');
    expect(cut2.result.generated_text).toBe(full.slice(0, full.indexOf(twoWords)));
  });

  it('honours system_prompt, top_k, top_p and repetition_penalty', async () => {
    const plain = await engine.run(task({ max_tokens: 16, temperature: 0 }), context());
    const withSystem = await engine.run(task({ max_tokens: 16, temperature: 0 }, { system: 'You are terse.' }), context());
    expect(withSystem.result.tokens_generated).toBe(16);
    expect(withSystem.result.generated_text).not.toBe(plain.result.generated_text);
    const tuned = await engine.run(
      task({ max_length: 12, temperature: 1, top_k: 5, top_p: 0.9, repetition_penalty: 1.3, seed: 1 }),
      context(),
    );
    expect(tuned.result.tokens_generated).toBe(12);
  });

  it('stops promptly on abort and rejects with the reason', async () => {
    const controller = new AbortController();
    let abortedAt = 0;
    const ctx = context(controller.signal, () => {
      if (!abortedAt) {
        abortedAt = performance.now();
        controller.abort('cancelled by test');
      }
    });
    const err = await engine.run(task({ max_tokens: 20_000, temperature: 0.8, seed: 3 }), ctx).then(
      () => null,
      (e: unknown) => e,
    );
    const latency = performance.now() - abortedAt;
    const afterStart = performance.now();
    expect(abortedAt).toBeGreaterThan(0);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/cancelled by test/);
    expect(latency).toBeLessThan(1000);
    // The engine is usable again right after: the aborted generation really stopped (a run
    // waits for the previous one to unwind, and 20 000 tokens would take many seconds).
    const after = await engine.run(task({ max_tokens: 4 }), context());
    expect(after.result.tokens_generated).toBe(4);
    expect(performance.now() - afterStart).toBeLessThan(1500);
  });

  it('a task waiting behind another can be aborted while it waits', async () => {
    const first = new AbortController();
    let firstStarted!: () => void;
    const started = new Promise<void>((r) => (firstStarted = r));
    const running = engine.run(task({ max_tokens: 20_000 }), context(first.signal, () => firstStarted()));
    await started;
    const second = new AbortController();
    const waiting = engine.run(task({ max_tokens: 8 }), context(second.signal));
    const t0 = performance.now();
    second.abort(new Error('gave up waiting'));
    await expect(waiting).rejects.toThrow('gave up waiting');
    expect(performance.now() - t0).toBeLessThan(200);
    first.abort('done');
    await expect(running).rejects.toThrow(/done/);
  });

  it('rejects at once when the signal is already aborted', async () => {
    const controller = new AbortController();
    const reason = new Error('shutdown');
    controller.abort(reason);
    await expect(engine.run(task({ max_tokens: 8 }), context(controller.signal))).rejects.toBe(reason);
  });

  it('fails with MODEL_LOAD_FAILED for a missing or broken model file', async () => {
    const missing = engine.run(task({ max_tokens: 4 }, { modelOptions: { model_path: join(dir, 'nope.gguf') } }), context());
    await expect(missing).rejects.toBeInstanceOf(EngineError);
    await expect(missing).rejects.toMatchObject({ code: 'MODEL_LOAD_FAILED' });

    const broken = join(dir, 'broken.gguf');
    writeFileSync(broken, Buffer.alloc(4096, 7));
    await expect(engine.run(task({ max_tokens: 4 }, { modelOptions: { model_path: broken } }), context())).rejects.toMatchObject({
      name: 'EngineError',
      code: 'MODEL_LOAD_FAILED',
    });

    await expect(engine.run(task({ max_tokens: 4 }, { modelOptions: {} }), context())).rejects.toMatchObject({
      code: 'MODEL_LOAD_FAILED',
    });
    // An hf: URI that cannot be fetched (offline here; a 404 online) fails the same way, and
    // promptly: node-llama-cpp's lookup ignores its signal and retries for minutes offline.
    const hfEngine = new LlamaCppEngine({ threads: THREADS, modelsDir: join(dir, 'hf'), downloadStallTimeoutMs: 1500 });
    try {
      const t0 = performance.now();
      await expect(
        hfEngine.run(task({ max_tokens: 4 }, { modelOptions: { model_uri: 'hf:no-such-user-x/no-such-model-x/none.gguf' } }), context()),
      ).rejects.toMatchObject({ name: 'EngineError', code: 'MODEL_LOAD_FAILED' });
      expect(performance.now() - t0).toBeLessThan(10_000);
    } finally {
      await hfEngine.close();
    }

    // The good model still works after failures (and after being evicted by none of them).
    const ok = await engine.run(task({ max_tokens: 4 }), context());
    expect(ok.result.tokens_generated).toBe(4);
  });

  it('runs concurrent tasks on one model without mixing them up', async () => {
    const params = { max_tokens: 12, temperature: 0 };
    const solo = await engine.run(task(params, { prompt: 'The world' }), context());
    const results = await Promise.all([
      engine.run(task(params, { prompt: 'The world' }), context()),
      engine.run(task(params, { prompt: 'The world' }), context()),
      engine.run(task(params, { prompt: 'The world' }), context()),
    ]);
    for (const r of results) expect(r.result.generated_text).toBe(solo.result.generated_text);
  });

  it('with maxConcurrent, runs generations at once in one context, each as it would run alone, and frees each sequence for the next', async () => {
    const params = { max_tokens: 40, temperature: 0 };
    const prompts = ['The world', 'Once upon a time', 'Hello there, my friend'];
    const alone: string[] = [];
    for (const prompt of prompts) alone.push((await engine.run(task(params, { prompt }), context())).result.generated_text as string);
    const parallel = new LlamaCppEngine({ threads: THREADS, contextSize: 512, gpu: false, maxConcurrent: 3 });
    try {
      expect(parallel.capacity).toBe(3);
      for (let round = 0; round < 2; round++) {
        const firstTokenAt: number[] = [];
        const endedAt: number[] = [];
        const results = await Promise.all(
          prompts.map((prompt, i) =>
            parallel.run(task(params, { prompt }), context(undefined, () => (firstTokenAt[i] ??= performance.now()))).then((r) => ((endedAt[i] = performance.now()), r)),
          ),
        );
        expect(results.map((r) => r.result.generated_text)).toEqual(alone);
        // Decoded together: the last one had its first token before the first one ended.
        expect(firstTokenAt[2]).toBeLessThan(endedAt[0]);
      }
      // A generation stopped mid-batch leaves the others as they would be alone.
      const stop = new AbortController();
      const stopped = parallel.run(task({ max_tokens: 20_000 }), context(stop.signal, () => stop.abort('cancelled')));
      const [kept] = await Promise.all([parallel.run(task(params, { prompt: prompts[1] }), context()), expect(stopped).rejects.toThrow(/cancelled/)]);
      expect(kept.result.generated_text).toBe(alone[1]);
      // A fourth run waits for a sequence; with all three given back, three more run again.
      const again = await Promise.all([0, 1, 2, 0].map((i) => parallel.run(task(params, { prompt: prompts[i] }), context())));
      expect(again.map((r) => r.result.generated_text)).toEqual([alone[0], alone[1], alone[2], alone[0]]);
    } finally {
      await parallel.close();
    }
  });

  it('keeps at most maxLoadedModels models loaded (LRU)', async () => {
    const copy = join(dir, 'copy.gguf');
    makeGguf(copy);
    const small = new LlamaCppEngine({ threads: THREADS, contextSize: 256, maxLoadedModels: 1 });
    try {
      const loaded = () => [...(small as unknown as { models: Map<string, unknown> }).models.keys()];
      const a = await small.run(task({ max_tokens: 6, temperature: 0 }), context());
      expect(loaded()).toEqual([modelPath]);
      const b = await small.run(task({ max_tokens: 6, temperature: 0 }, { modelOptions: { model_path: copy } }), context());
      expect(loaded()).toEqual([copy]);
      expect(b.result.generated_text).toBe(a.result.generated_text);
      const again = await small.run(task({ max_tokens: 6, temperature: 0 }), context());
      expect(again.result.generated_text).toBe(a.result.generated_text);
      expect(loaded()).toEqual([modelPath]);
    } finally {
      await small.close();
    }
    await expect(small.run(task({ max_tokens: 2 }), context())).rejects.toMatchObject({ code: 'ENGINE_CLOSED' });
  });

  it('resolves a relative model_path against the working directory', async () => {
    const rel = relative(process.cwd(), modelPath);
    expect(isAbsolute(rel)).toBe(false);
    const { result } = await engine.run(task({ max_tokens: 4 }, { modelOptions: { model_path: rel } }), context());
    expect(result.tokens_generated).toBe(4);
  });
});
