#!/usr/bin/env node
// Tokens/s of the llama-cpp engine on the tiny random-weight GGUF.
// Needs a build first: npx tsc -p tsconfig.json   (or npm run build)
//
// Usage: node bench/llama-tokens.mjs [--threads N] [--tokens N] [--runs N] [--model PATH] [--parallel N]
// Defaults: 2 threads, 256 tokens, 3 runs (after one warm-up), models/tiny-llama.gguf
// (written by scripts/make-tiny-gguf.mjs if missing). Prints one line per run and then
// `llama_tokens_per_s=N` (the median of the runs).
// With --parallel N (N > 1), then times rounds of 2N generations started together, on an
// engine that runs one at a time and on one that runs N at once in one context (batched, as
// TASK_MANAGER_LLAMA_PARALLEL=N does), alternating, and ends with
// `parallel=N sequential_tokens_per_s=N batched_tokens_per_s=N ratio=R` (medians of the rounds).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(import.meta.url), '../..');
const args = process.argv.slice(2);
const arg = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : dflt;
};
const threads = Number(arg('threads', process.env.LLAMA_THREADS ?? 2));
const maxTokens = Number(arg('tokens', 256));
const runs = Number(arg('runs', 3));
const modelPath = resolve(arg('model', resolve(root, 'models/tiny-llama.gguf')));
const parallel = Math.max(1, Math.floor(Number(arg('parallel', 1))));

const enginePath = resolve(root, 'dist/engines/llama-cpp.js');
if (!existsSync(enginePath)) {
  console.error(`missing ${enginePath}: run \`npx tsc -p tsconfig.json\` first`);
  process.exit(1);
}
if (!existsSync(modelPath)) {
  const r = spawnSync(process.execPath, [resolve(root, 'scripts/make-tiny-gguf.mjs'), modelPath], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const { LlamaCppEngine } = await import(enginePath);
const engine = new LlamaCppEngine({ threads, contextSize: 2048, gpu: false });
const ctx = { signal: new AbortController().signal, reportProgress() {} };
const task = (i) => ({
  id: `bench-${i}`,
  taskType: 'text_generation',
  modelName: 'tiny-llama',
  inputData: { prompt: 'Once upon a time' },
  parameters: { max_tokens: maxTokens, temperature: 0.8, seed: i },
  modelOptions: { model_path: modelPath },
});

try {
  await engine.run({ ...task(0), parameters: { max_tokens: 8 } }, ctx); // load + warm-up
  const rates = [];
  for (let i = 1; i <= runs; i++) {
    const { result } = await engine.run(task(i), ctx);
    if (result.tokens_generated !== maxTokens) throw new Error(`run ${i}: ${result.tokens_generated} tokens, wanted ${maxTokens}`);
    rates.push(result.tokens_per_second);
    console.log(
      `run ${i}: ${result.tokens_generated} tokens in ${result.inference_time.toFixed(3)} s = ${result.tokens_per_second.toFixed(1)} tok/s`,
    );
  }
  rates.sort((a, b) => a - b);
  const median = rates[Math.floor(rates.length / 2)];
  console.log(`threads=${threads} tokens=${maxTokens} runs=${runs} min=${rates[0].toFixed(1)} max=${rates.at(-1).toFixed(1)}`);
  console.log(`llama_tokens_per_s=${median.toFixed(1)}`);
} finally {
  await engine.close();
}

if (parallel > 1) {
  /** Tokens/s over 2N generations started together on an engine running `n` at once. */
  const round = async (n, seed) => {
    const e = new LlamaCppEngine({ threads, contextSize: 2048, gpu: false, maxConcurrent: n });
    try {
      await e.run({ ...task(0), parameters: { max_tokens: 8 } }, ctx);
      const t0 = performance.now();
      const out = await Promise.all(Array.from({ length: 2 * parallel }, (_, i) => e.run(task(seed + i), ctx)));
      const seconds = (performance.now() - t0) / 1000;
      const tokens = out.reduce((sum, r) => sum + r.result.tokens_generated, 0);
      if (tokens !== 2 * parallel * maxTokens) throw new Error(`${tokens} tokens, wanted ${2 * parallel * maxTokens}`);
      return tokens / seconds;
    } finally {
      await e.close();
    }
  };
  const seq = [];
  const batched = [];
  for (let i = 0; i < runs; i++) {
    seq.push(await round(1, 100 * i));
    batched.push(await round(parallel, 100 * i));
    console.log(`round ${i + 1}: ${2 * parallel} generations, one at a time ${seq[i].toFixed(1)} tok/s, ${parallel} at once ${batched[i].toFixed(1)} tok/s`);
  }
  const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const ratios = seq.map((x, i) => batched[i] / x);
  console.log(
    `parallel=${parallel} sequential_tokens_per_s=${med(seq).toFixed(1)} batched_tokens_per_s=${med(batched).toFixed(1)} ratio=${med(ratios).toFixed(2)}`,
  );
}
