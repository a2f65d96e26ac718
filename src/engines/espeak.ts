/**
 * Text to speech with the espeak-ng binary (Debian's `espeak-ng`).
 *
 * The binary runs without a shell; the text goes in on stdin (`--stdin`), so it can never be
 * read as an option, and the audio is written with `-w file.wav` (the `--stdout` WAV header
 * carries bogus sizes). Each run gets its own temporary directory, removed whatever happens.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EngineError, RetryableEngineError, type Engine, type EngineContext, type EngineResult, type EngineTask } from '../core/engine.js';
import type { TaskType } from '../core/task.js';

export interface EspeakEngineOptions {
  /** Binary to run (looked up on PATH unless absolute). Default `espeak-ng`. */
  binary?: string;
  /** Longest text accepted, in characters. Default 10 000 (the API's own limit). */
  maxTextChars?: number;
  /** Where the per-run temporary directories go. Default the OS temp directory. */
  tempDir?: string;
}

export interface WavInfo {
  sampleRate: number;
  channels: number;
  bitsPerSample: number;
  byteRate: number;
  dataBytes: number;
  durationSeconds: number;
}

const NORMAL_WPM = 175;
const MIN_WPM = 80;
const MAX_WPM = 450;
const VOICE_PATTERN = /^[A-Za-z0-9_+.][A-Za-z0-9_+.-]{0,63}$/;
const STDERR_LIMIT = 16 * 1024;
/** espeak-ng prints these (on stderr, usually with exit status 1) for a voice it cannot load. */
const UNKNOWN_VOICE = /voice does not exist|could not load the specified (mbrola )?voice|mbrola voice/i;

export class EspeakEngine implements Engine {
  readonly name = 'espeak';
  readonly taskTypes: readonly TaskType[] = ['text_to_speech'];
  private readonly binary: string;
  private readonly maxTextChars: number;
  private readonly tempDir: string | undefined;
  private readonly children = new Set<ChildProcess>();

  constructor(opts: EspeakEngineOptions = {}) {
    this.binary = opts.binary ?? 'espeak-ng';
    this.maxTextChars = opts.maxTextChars ?? 10_000;
    this.tempDir = opts.tempDir;
  }

  async run(task: EngineTask, ctx: EngineContext): Promise<EngineResult> {
    const { signal } = ctx;
    throwIfAborted(signal);
    const started = performance.now();

    const text = task.inputData.text;
    if (typeof text !== 'string' || !/\S/.test(text)) throw new EngineError('INVALID_INPUT', 'input_data.text must be a non-blank string');
    if (text.length > this.maxTextChars) {
      throw new EngineError('INVALID_INPUT', `input_data.text is ${text.length} characters; the limit is ${this.maxTextChars}`);
    }
    const p = task.parameters;
    const voice = p.voice ?? task.modelOptions.voice ?? 'en';
    if (typeof voice !== 'string' || !VOICE_PATTERN.test(voice)) throw new EngineError('INVALID_INPUT', `Invalid voice: ${String(voice)}`);
    const speed = p.speed ?? 1;
    if (typeof speed !== 'number' || !Number.isFinite(speed) || speed <= 0) throw new EngineError('INVALID_INPUT', 'parameters.speed must be a positive number');
    const wpm = Math.round(Math.min(MAX_WPM, Math.max(MIN_WPM, NORMAL_WPM * speed)));
    const pitch = p.pitch ?? task.modelOptions.pitch ?? 50;
    if (typeof pitch !== 'number' || !Number.isInteger(pitch) || pitch < 0 || pitch > 99) {
      throw new EngineError('INVALID_INPUT', 'parameters.pitch must be an integer from 0 to 99');
    }
    const format = p.format ?? 'wav';
    if (format !== 'wav') throw new EngineError('INVALID_INPUT', `Unsupported format: ${String(format)}; only wav`);

    const dir = await mkdtemp(join(this.tempDir ?? tmpdir(), 'espeak-'));
    try {
      const wavPath = join(dir, 'speech.wav');
      ctx.reportProgress(0.05);
      // Normalise line breaks: in --stdin mode espeak-ng speaks the text as it reads it.
      const stdinText = text.replace(/\r\n?/g, '\n') + '\n';
      await this.exec(['-v', voice, '-s', String(wpm), '-p', String(pitch), '-w', wavPath, '--stdin'], stdinText, voice, signal);
      throwIfAborted(signal);
      ctx.reportProgress(0.9);

      let data: Buffer;
      try {
        data = await readFile(wavPath);
      } catch (err) {
        throw new EngineError('ENGINE_ERROR', 'espeak-ng produced no audio', { cause: err });
      }
      let info: WavInfo;
      try {
        info = parseWav(data);
      } catch (err) {
        throw new EngineError('ENGINE_ERROR', `espeak-ng wrote an unreadable WAV file: ${(err as Error).message}`, { cause: err });
      }
      ctx.reportProgress(1);
      return {
        result: {
          audio: 'speech.wav',
          format: 'wav',
          duration_seconds: round(info.durationSeconds, 3),
          sample_rate: info.sampleRate,
          channels: info.channels,
          voice,
          inference_time: round((performance.now() - started) / 1000, 3),
        },
        artifacts: [{ name: 'speech.wav', contentType: 'audio/wav', data }],
      };
    } finally {
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    }
  }

  /** Kills any synthesis still running. */
  async close(): Promise<void> {
    for (const child of this.children) child.kill('SIGKILL');
    this.children.clear();
  }

  /** Runs espeak-ng to completion; resolves once the process has exited, so its files are closed. */
  private exec(args: string[], input: string, voice: string, signal: AbortSignal): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = spawn(this.binary, args, { stdio: ['pipe', 'ignore', 'pipe'], shell: false, windowsHide: true });
      } catch (err) {
        reject(unavailable(this.binary, err));
        return;
      }
      this.children.add(child);
      let stderr = '';
      let settled = false;
      let spawnError: NodeJS.ErrnoException | null = null;
      let killTimer: NodeJS.Timeout | undefined;

      const finish = (err: Error | null) => {
        if (settled) return;
        settled = true;
        signal.removeEventListener('abort', onAbort);
        clearTimeout(killTimer);
        this.children.delete(child);
        if (err) reject(err);
        else resolve();
      };
      const onAbort = () => {
        child.kill('SIGKILL');
        // Settle on 'close' (so the temp directory is free to remove) but never wait long for it.
        killTimer = setTimeout(() => finish(abortError(signal)), 1000);
        killTimer.unref();
      };

      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (chunk: string) => {
        if (stderr.length < STDERR_LIMIT) stderr += chunk;
      });
      // The child may exit (bad voice) before reading its input: EPIPE is expected then.
      child.stdin!.on('error', () => {});
      child.on('error', (err: NodeJS.ErrnoException) => {
        spawnError = err;
        // A spawn failure emits no 'close' when the process never started.
        if (child.pid === undefined) finish(unavailable(this.binary, err));
      });
      child.on('close', (code, sig) => {
        if (signal.aborted) return finish(abortError(signal));
        if (spawnError) return finish(unavailable(this.binary, spawnError));
        const msg = stderr.trim().slice(0, 2000);
        if (UNKNOWN_VOICE.test(stderr)) return finish(new EngineError('INVALID_INPUT', `Unknown voice '${voice}': ${firstLine(msg)}`));
        if (sig) return finish(new RetryableEngineError('ENGINE_CRASHED', `espeak-ng was killed by ${sig}`));
        if (code !== 0) return finish(new EngineError('ENGINE_ERROR', `espeak-ng exited with status ${code}${msg ? `: ${msg}` : ''}`));
        if (/can't write to/i.test(stderr)) return finish(new EngineError('ENGINE_ERROR', `espeak-ng could not write its output: ${msg}`));
        finish(null);
      });

      if (signal.aborted) onAbort();
      else signal.addEventListener('abort', onAbort, { once: true });
      child.stdin!.end(input, 'utf8');
    });
  }
}

/** Reads a PCM WAV header: walks the RIFF chunks for `fmt ` and `data`. */
export function parseWav(buf: Buffer): WavInfo {
  if (buf.length < 12 || buf.toString('ascii', 0, 4) !== 'RIFF' || buf.toString('ascii', 8, 12) !== 'WAVE') {
    throw new Error('not a RIFF/WAVE file');
  }
  let fmt: { channels: number; sampleRate: number; byteRate: number; bitsPerSample: number } | null = null;
  let dataBytes: number | null = null;
  let off = 12;
  while (off + 8 <= buf.length) {
    const id = buf.toString('ascii', off, off + 4);
    let size = buf.readUInt32LE(off + 4);
    const body = off + 8;
    // Streams written before their length is known carry 0 or 0xFFFFFFFF: take what is there.
    if (size === 0xffffffff || body + size > buf.length) size = buf.length - body;
    if (id === 'fmt ') {
      if (size < 16) throw new Error('fmt chunk too short');
      fmt = {
        channels: buf.readUInt16LE(body + 2),
        sampleRate: buf.readUInt32LE(body + 4),
        byteRate: buf.readUInt32LE(body + 8),
        bitsPerSample: buf.readUInt16LE(body + 14),
      };
    } else if (id === 'data') {
      dataBytes = size === 0 && fmt ? buf.length - body : size;
      break;
    }
    off = body + size + (size & 1);
  }
  if (!fmt) throw new Error('no fmt chunk');
  if (dataBytes === null) throw new Error('no data chunk');
  if (fmt.channels < 1 || fmt.sampleRate < 1) throw new Error('bad fmt chunk');
  const byteRate = fmt.byteRate || (fmt.sampleRate * fmt.channels * fmt.bitsPerSample) / 8;
  if (!byteRate) throw new Error('bad byte rate');
  return { ...fmt, byteRate, dataBytes, durationSeconds: dataBytes / byteRate };
}

function unavailable(binary: string, err: unknown): EngineError {
  const code = (err as NodeJS.ErrnoException)?.code;
  const why = code === 'ENOENT' ? 'not found' : code === 'EACCES' ? 'not executable' : String((err as Error)?.message ?? err);
  return new EngineError('ENGINE_UNAVAILABLE', `espeak-ng binary '${binary}' ${why}`, { cause: err });
}

function abortError(signal: AbortSignal): Error {
  const reason = signal.reason;
  const err = new Error(`espeak-ng run aborted${reason !== undefined ? `: ${String(reason instanceof Error ? reason.message : reason)}` : ''}`);
  err.name = 'AbortError';
  return err;
}

function throwIfAborted(signal: AbortSignal): void {
  if (signal.aborted) throw abortError(signal);
}

function firstLine(s: string): string {
  return s.split('\n').find((l) => /error/i.test(l))?.trim() ?? s.split('\n')[0]?.trim() ?? '';
}

function round(n: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}
