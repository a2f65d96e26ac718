import type { Engine } from '../core/engine.js';
import { A1111Engine } from './a1111.js';
import { EspeakEngine } from './espeak.js';
import { LlamaCppEngine, type LlamaGpuOption } from './llama-cpp.js';
import { OpenAiEngine } from './openai.js';
import { TesseractEngine } from './tesseract.js';

export interface EngineSettings {
  llamaThreads?: number;
  llamaGpu?: LlamaGpuOption;
  /** Generations llama.cpp runs at once, batched (default 1). */
  llamaParallel?: number;
}

/** Every engine this build ships, by the name catalog entries use. Constructors are cheap: engines load lazily. */
export function createEngines(settings: EngineSettings = {}): Record<string, Engine> {
  return {
    'llama-cpp': new LlamaCppEngine({ threads: settings.llamaThreads, gpu: settings.llamaGpu, maxConcurrent: settings.llamaParallel }),
    espeak: new EspeakEngine(),
    tesseract: new TesseractEngine(),
    openai: new OpenAiEngine(),
    a1111: new A1111Engine(),
  };
}

export async function closeEngines(engines: Record<string, Engine>): Promise<void> {
  await Promise.all(Object.values(engines).map((e) => e.close?.().catch(() => {})));
}
