#!/usr/bin/env node
// Tokens/s of the llama-cpp engine on the tiny random-weight GGUF.
// Needs a build first: npx tsc -p tsconfig.json   (or npm run build)
//
// Usage: node bench/llama-tokens.mjs [--threads N] [--tokens N] [--runs N] [--model PATH]
// Defaults: 2 threads, 256 tokens, 3 runs (after one warm-up), models/tiny-llama.gguf
// (written by scripts/make-tiny-gguf.mjs if missing). Prints one line per run and then
// `llama_tokens_per_s=N` (the median of the runs).
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
