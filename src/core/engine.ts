import type { TaskType } from './task.js';

export interface EngineTask {
  id: string;
  taskType: TaskType;
  modelName: string;
  inputData: Record<string, unknown>;
  parameters: Record<string, unknown>;
  /** Options from the model catalog entry (file paths, remote URLs, voices). */
  modelOptions: Record<string, unknown>;
}

export interface EngineContext {
  /** Aborted on cancel, timeout or shutdown; an engine must stop promptly. */
  signal: AbortSignal;
  /** Progress in [0, 1]; cheap to call often. */
  reportProgress(progress: number): void;
  /** Streams partial output (generated text) to subscribers as it is produced; cheap to call per token. */
  reportOutput?(text: string): void;
}

/** A binary output (audio, image) kept with the task and served at /tasks/{id}/artifacts/{name}. */
export interface EngineArtifact {
  /** File name, unique within the task: letters, digits, '.', '_' and '-'. */
  name: string;
  contentType: string;
  data: Buffer;
}

export interface EngineResult {
  /** JSON result. Where it refers to an artifact, the worker adds `url`, `content_type` and `size`. */
  result: Record<string, unknown>;
  artifacts?: EngineArtifact[];
}

export interface Engine {
  readonly name: string;
  readonly taskTypes: readonly TaskType[];
  /**
   * How many runs the engine works on at once, across all its models; runs beyond it wait
   * inside the engine. A worker leases no more tasks for an engine than it has room for, so a
   * task shows as running only once it can start and another worker can take the rest.
   * Unset: no limit of the engine's own (the worker's concurrency applies).
   */
  readonly capacity?: number;
  run(task: EngineTask, ctx: EngineContext): Promise<EngineResult>;
  close?(): Promise<void>;
}

/** Thrown by an engine for a failure that another attempt may not repeat (a lost device). */
export class RetryableEngineError extends Error {
  readonly code: string;
  constructor(code: string, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'RetryableEngineError';
    this.code = code;
  }
}

/** Thrown by an engine for a failure with a stable code (bad input for this model, unloadable model). */
export class EngineError extends Error {
  readonly code: string;
  constructor(code: string, message: string, opts?: { cause?: unknown }) {
    super(message, opts);
    this.name = 'EngineError';
    this.code = code;
  }
}
