/** The espeak engine against the real Debian espeak-ng binary. */
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineError, type EngineContext, type EngineResult, type EngineTask } from '../../src/core/engine.js';
import { EspeakEngine, parseWav } from '../../src/engines/espeak.js';

let tempDir: string;
let engine: EspeakEngine;

beforeAll(async () => {
  tempDir = await mkdtemp(join(tmpdir(), 'espeak-test-'));
  engine = new EspeakEngine({ tempDir });
});

afterAll(async () => {
  await engine?.close();
  if (tempDir) await rm(tempDir, { recursive: true, force: true });
});

function task(text: string, parameters: Record<string, unknown> = {}, modelOptions: Record<string, unknown> = { voice: 'en' }): EngineTask {
  return { id: 'tsk_test', taskType: 'text_to_speech', modelName: 'espeak-ng', inputData: { text }, parameters, modelOptions };
}

function ctx(signal: AbortSignal = new AbortController().signal, progress: number[] = []): EngineContext {
  return { signal, reportProgress: (p) => progress.push(p) };
}

async function speak(text: string, parameters: Record<string, unknown> = {}): Promise<EngineResult> {
  return engine.run(task(text, parameters), ctx());
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

/** Processes whose command line mentions `needle` (Linux /proc). */
async function processesMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.includes(needle)) pids.push(Number(entry));
  }
  return pids;
}

describe('EspeakEngine', () => {
  it('speaks "Hello world" into a valid 22050 Hz WAV artifact', async () => {
    const progress: number[] = [];
    const out = await engine.run(task('Hello world'), ctx(undefined, progress));
    expect(out.artifacts).toHaveLength(1);
    const art = out.artifacts![0];
    expect(art.name).toBe('speech.wav');
    expect(art.contentType).toBe('audio/wav');
    const wav = art.data;
    expect(wav.toString('ascii', 0, 4)).toBe('RIFF');
    expect(wav.toString('ascii', 8, 12)).toBe('WAVE');
    expect(wav.readUInt32LE(4)).toBe(wav.length - 8); // -w writes true sizes
    const info = parseWav(wav);
    expect(info.sampleRate).toBe(22050);
    expect(info.channels).toBe(1);
    expect(info.bitsPerSample).toBe(16);

    const r = out.result;
    expect(r).toMatchObject({ audio: 'speech.wav', format: 'wav', sample_rate: 22050, channels: 1, voice: 'en' });
    expect(r.duration_seconds).toBeGreaterThan(0.5);
    expect(r.duration_seconds).toBeLessThan(3);
    expect(r.duration_seconds).toBeCloseTo(info.durationSeconds, 2);
    expect(typeof r.inference_time).toBe('number');
    expect(r.inference_time as number).toBeGreaterThanOrEqual(0);
    expect(progress.at(-1)).toBe(1);
    expect(await readdir(tempDir)).toEqual([]);
  });

  it('longer text gives longer audio', async () => {
    const short = await speak('Hello world');
    const long = await speak('Hello world. This sentence is quite a bit longer than the first one, so it takes longer to say.');
    expect(long.result.duration_seconds as number).toBeGreaterThan((short.result.duration_seconds as number) * 2);
  });

  it('speed 2 is shorter than speed 1, and pitch and voice parameters are accepted', async () => {
    const text = 'The quick brown fox jumps over the lazy dog.';
    const normal = await speak(text, { speed: 1 });
    const fast = await speak(text, { speed: 2, pitch: 80, voice: 'en-us' });
    expect(fast.result.voice).toBe('en-us');
    expect(fast.result.duration_seconds as number).toBeLessThan((normal.result.duration_seconds as number) * 0.75);
  });

  it('text that looks like options is spoken, not parsed', async () => {
    const evil = join(tempDir, 'evil.wav');
    const out = await speak(`--help -v xx -w ${evil}`);
    expect(out.result.duration_seconds as number).toBeGreaterThan(0.5);
    expect(await readdir(tempDir)).toEqual([]);
  });

  it('an unknown voice is INVALID_INPUT', async () => {
    const err = await rejection(speak('Hello', { voice: 'nosuchvoice' }));
    expect(err).toBeInstanceOf(EngineError);
    expect((err as EngineError).code).toBe('INVALID_INPUT');
    expect((err as EngineError).message).toMatch(/nosuchvoice/);
    expect(await readdir(tempDir)).toEqual([]);
  });

  it('a missing binary is ENGINE_UNAVAILABLE', async () => {
    const missing = new EspeakEngine({ binary: '/nonexistent/espeak-ng', tempDir });
    const err = await rejection(missing.run(task('Hello'), ctx()));
    expect((err as EngineError).code).toBe('ENGINE_UNAVAILABLE');
    expect(await readdir(tempDir)).toEqual([]);
  });

  it('abort kills espeak-ng promptly and leaves no temp files', async () => {
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(200); // ~9000 chars, ~0.7 s of CPU
    const ac = new AbortController();
    const t0 = Date.now();
    const p = engine.run(task(text), ctx(ac.signal));
    // Abort once espeak-ng is running (its command line names the temp directory).
    while ((await processesMentioning(tempDir)).length === 0) {
      if (Date.now() - t0 > 2000) throw new Error('espeak-ng did not start');
      await new Promise((r) => setTimeout(r, 5));
    }
    const abortedAt = Date.now();
    ac.abort('cancel');
    const err = await rejection(p);
    expect(Date.now() - abortedAt).toBeLessThan(1000);
    expect((err as Error).name).toBe('AbortError');
    expect(await processesMentioning(tempDir)).toEqual([]);
    expect(await readdir(tempDir)).toEqual([]);
  });

  it('an already-aborted signal rejects without running anything', async () => {
    const ac = new AbortController();
    ac.abort('shutdown');
    const err = await rejection(engine.run(task('Hello'), ctx(ac.signal)));
    expect((err as Error).name).toBe('AbortError');
  });
});
