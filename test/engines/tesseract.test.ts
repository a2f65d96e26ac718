/** The tesseract engine with the installed tesseract.js and @tesseract.js-data/eng (no network). */
import { afterAll, describe, expect, it } from 'vitest';
import { EngineError, type EngineContext, type EngineTask } from '../../src/core/engine.js';
import { sniffImage } from '../../src/core/media.js';
import { TesseractEngine, decodeImage } from '../../src/engines/tesseract.js';
import { renderTextPng } from '../helpers/png-text.js';

const engines: TesseractEngine[] = [];
function newEngine(opts: ConstructorParameters<typeof TesseractEngine>[0] = {}): TesseractEngine {
  const e = new TesseractEngine({ timeoutMs: 30_000, ...opts });
  engines.push(e);
  return e;
}
const engine = newEngine();

afterAll(async () => {
  await Promise.all(engines.map((e) => e.close()));
});

const HELLO_PNG = renderTextPng('HELLO WORLD 42');

function task(image: string, parameters: Record<string, unknown> = {}): EngineTask {
  return { id: 'tsk_ocr', taskType: 'image_to_text', modelName: 'tesseract-eng', inputData: { image }, parameters, modelOptions: { language: 'eng' } };
}

function ctx(signal: AbortSignal = new AbortController().signal, onProgress: (p: number) => void = () => {}): EngineContext {
  return { signal, reportProgress: onProgress };
}

const normalize = (s: unknown) => String(s).toUpperCase().replace(/\s+/g, ' ').trim();

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error('expected the promise to reject');
}

async function expectCode(p: Promise<unknown>, code: string): Promise<EngineError> {
  const err = await rejection(p);
  expect(err).toBeInstanceOf(EngineError);
  expect((err as EngineError).code).toBe(code);
  return err as EngineError;
}

describe('png-text helper', () => {
  it('writes a PNG', () => {
    expect(sniffImage(HELLO_PNG)?.format).toBe('png');
    expect(HELLO_PNG.readUInt32BE(16)).toBeGreaterThan(HELLO_PNG.readUInt32BE(20)); // wider than tall
  });
});

describe('TesseractEngine', () => {
  it('reads rendered text from base64', async () => {
    const progress: number[] = [];
    const out = await engine.run(task(HELLO_PNG.toString('base64')), ctx(undefined, (p) => progress.push(p)));
    const r = out.result;
    const text = normalize(r.text);
    expect(text).toContain('HELLO');
    expect(text).toContain('WORLD');
    expect(r.confidence as number).toBeGreaterThan(50);
    expect(r.confidence as number).toBeLessThanOrEqual(100);
    expect(r.words).toBeGreaterThanOrEqual(2);
    expect(r.language).toBe('eng');
    expect(typeof r.inference_time).toBe('number');
    expect(out.artifacts ?? []).toEqual([]);
    expect(progress.at(-1)).toBe(1);
    expect(progress.every((p, i) => p >= 0 && p <= 1 && (i === 0 || p >= progress[i - 1]))).toBe(true);
  });

  it('reads a data URL (with line-wrapped base64) on the reused worker', async () => {
    const b64 = HELLO_PNG.toString('base64').replace(/(.{76})/g, '$1\n');
    const out = await engine.run(task(`data:image/png;base64,${b64}`, { mode: 'ocr', language: 'eng' }), ctx());
    const text = normalize(out.result.text);
    expect(text).toContain('HELLO');
    expect(text).toContain('WORLD');
    expect(out.result.confidence as number).toBeGreaterThan(50);
  });

  it('refuses input that is not a known image format', async () => {
    await expectCode(engine.run(task('!!!not base64!!!'), ctx()), 'INVALID_INPUT');
    await expectCode(engine.run(task(Buffer.from('hello, I am plain text').toString('base64')), ctx()), 'INVALID_INPUT');
    await expectCode(engine.run(task('data:text/plain;base64,aGVsbG8='), ctx()), 'INVALID_INPUT');
    expect(() => decodeImage('')).toThrow(EngineError);
  });

  it('a truncated image with a valid signature is INVALID_INPUT, and the worker stays usable', async () => {
    await expectCode(engine.run(task(HELLO_PNG.subarray(0, 64).toString('base64')), ctx()), 'INVALID_INPUT');
    const out = await engine.run(task(HELLO_PNG.toString('base64')), ctx());
    expect(normalize(out.result.text)).toContain('HELLO');
  });

  it('caption mode is UNSUPPORTED', async () => {
    const err = await expectCode(engine.run(task(HELLO_PNG.toString('base64'), { mode: 'caption' }), ctx()), 'UNSUPPORTED');
    expect(err.message).toMatch(/OCR only/);
  });

  it('a language that is not installed is INVALID_INPUT (instead of hanging)', async () => {
    await expectCode(engine.run(task(HELLO_PNG.toString('base64'), { language: 'fra' }), ctx()), 'INVALID_INPUT');
  });

  it('abort during recognition rejects promptly; the next run gets a fresh worker', async () => {
    const big = renderTextPng('THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG 0123456789', { scale: 10 });
    const ac = new AbortController();
    let abortedAt = 0;
    const p = engine.run(
      task(big.toString('base64')),
      ctx(ac.signal, (progress) => {
        // Past 0.1 the worker reports recognition progress: abort mid-job.
        if (progress > 0.1 && !abortedAt) {
          abortedAt = Date.now();
          ac.abort('cancel');
        }
      }),
    );
    const err = await rejection(p);
    expect(abortedAt).toBeGreaterThan(0);
    expect((err as Error).name).toBe('AbortError');
    expect(Date.now() - abortedAt).toBeLessThan(1000);

    const out = await engine.run(task(HELLO_PNG.toString('base64')), ctx());
    expect(normalize(out.result.text)).toContain('WORLD');
  });

  it('abort while the worker is still starting rejects promptly', async () => {
    const cold = newEngine();
    const ac = new AbortController();
    const p = cold.run(task(HELLO_PNG.toString('base64')), ctx(ac.signal));
    setTimeout(() => ac.abort('shutdown'), 30);
    const t0 = Date.now();
    const err = await rejection(p);
    expect((err as Error).name).toBe('AbortError');
    expect(Date.now() - t0).toBeLessThan(1000);
    await cold.close();
  });
});
