import http from 'node:http';
import https from 'node:https';
import type { EngineArtifact } from '../core/engine.js';
import type { LeasedTask } from '../core/store.js';
import type { ModelRef, TaskError, TaskRecord, TaskType } from '../core/task.js';
import { modelToWire } from '../core/worker-protocol.js';
import type { ArtifactRef, LeaseState, WorkerInfo, WorkerTransport } from './transport.js';

export interface HttpTransportOptions {
  /** Base URL of any Task Manager node, e.g. http://10.0.0.5:8002 */
  serverUrl: string;
  /** The server's TASK_MANAGER_WORKER_TOKEN. */
  token: string;
  /** Send requests through this instead of node:http (for proxies or instrumentation). */
  fetch?: typeof fetch;
  /**
   * A request that hears nothing for this long fails (default 30 s; a lease long-poll gets
   * its wait on top). A server that vanished without closing the connection would otherwise
   * hold the worker for as long as TCP takes to notice, minutes.
   */
  requestTimeoutMs?: number;
  /** First wait before a report is sent again (default 200 ms, doubling up to 2 s). */
  retryBaseMs?: number;
}

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

interface WireTask {
  task_id: string;
  lease_token: string;
  task_type: TaskType;
  model_name: string;
  input_data: Record<string, unknown>;
  parameters: Record<string, unknown>;
  priority: number;
  attempts: number;
  timeout_seconds: number;
  started_at: string;
}

/** The longest wait between two tries of a report. */
const MAX_RETRY_WAIT_MS = 2_000;
/** The most completions one request carries (the server takes up to 1,024). */
const MAX_COMPLETIONS = 512;
const COMPLETIONS_BYTES = 1 << 20;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const transient = (err: unknown) => !(err instanceof HttpError) || err.status >= 500 || err.status === 429;

/**
 * Remote workers: the same runtime, talking to any node over the worker protocol. One lease
 * long-poll stays open even when every slot is busy, because that is how cancels arrive
 * within a second; heartbeats of one turn of the event loop go out in one request.
 */
export class HttpTransport implements WorkerTransport {
  readonly pollsForCancels = true;
  private readonly base: string;
  private readonly fetchFn: typeof fetch | null;
  /** Kept-alive connections: a worker talks to one node all day, several requests at a time. */
  private readonly agent: http.Agent;
  private readonly lib: typeof http | typeof https;
  private info: WorkerInfo | null = null;
  private readonly held = new Set<string>();
  private readonly cancelListeners = new Set<(taskId: string) => void>();
  private readonly beats = new PerTurn<Beat>((batch) => void this.sendBeats(batch));
  private readonly completions = new PerTurn<Completion>((all) => {
    for (const batch of completionRequests(all)) void this.sendCompletions(batch);
  });
  /** Cleared when the server predates POST /workers/{id}/complete: one request per task then. */
  private completeMany = true;
  /** False once the server refuses a lease scoped to some of the worker's models. */
  private scopedLeases = true;
  /** The server's lease length, learnt at registration: how long a report is worth retrying. */
  private leaseMs = 30_000;

  constructor(private readonly opts: HttpTransportOptions) {
    this.base = opts.serverUrl.replace(/\/+$/, '');
    this.fetchFn = opts.fetch ?? null;
    this.lib = new URL(this.base).protocol === 'https:' ? https : http;
    this.agent = new this.lib.Agent({ keepAlive: true, maxSockets: 64 });
  }

  /** One request; node:http costs a fraction of fetch's CPU per call. */
  private send(
    method: string,
    path: string,
    headers: Record<string, string>,
    payload: string | Buffer | undefined,
    signal: AbortSignal | undefined,
    timeoutMs: number,
  ): Promise<{ status: number; text: string }> {
    if (this.fetchFn) {
      const timeout = AbortSignal.timeout(timeoutMs);
      return this.fetchFn(`${this.base}${path}`, { method, headers, body: payload, signal: signal ? AbortSignal.any([signal, timeout]) : timeout }).then(
        async (res) => ({ status: res.status, text: await res.text() }),
        (err) => {
          throw timeout.aborted && !signal?.aborted ? timedOut(method, path, timeoutMs) : err;
        },
      );
    }
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (!settled) (settled = true), fn();
      };
      if (payload !== undefined) headers['content-length'] = String(Buffer.byteLength(payload));
      const req = this.lib.request(`${this.base}${path}`, { method, headers, agent: this.agent, signal }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => settle(() => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') })));
        res.on('error', (err) => settle(() => reject(err)));
        // An abort or a dropped connection after the headers may end the response with
        // neither 'end' nor 'error': without this the caller would wait forever.
        res.on('close', () => settle(() => reject(Object.assign(new Error(`${method} ${path}: connection closed before the response ended`), { code: 'ECONNRESET' }))));
      });
      req.on('error', (err) => settle(() => reject(err)));
      req.setTimeout(timeoutMs, () => req.destroy(timedOut(method, path, timeoutMs)));
      req.end(payload);
    });
  }

  get workerId(): string {
    if (!this.info) throw new Error('worker is not registered');
    return this.info.workerId;
  }

  private async call<T>(
    method: string,
    path: string,
    body?: unknown,
    opts: { signal?: AbortSignal; raw?: Buffer; contentType?: string; waitMs?: number } = {},
  ): Promise<T> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.opts.token}` };
    let payload: string | Buffer | undefined;
    if (opts.raw) {
      payload = opts.raw;
      headers['content-type'] = opts.contentType ?? 'application/octet-stream';
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers['content-type'] = 'application/json';
    }
    const res = await this.send(method, path, headers, payload, opts.signal, (opts.waitMs ?? 0) + (this.opts.requestTimeoutMs ?? 30_000));
    const text = res.text;
    const json = text ? JSON.parse(text) : undefined;
    if (res.status < 200 || res.status >= 300) {
      const e = json?.error ?? {};
      throw new HttpError(res.status, e.code ?? 'HTTP_ERROR', e.message ?? `${method} ${path} answered ${res.status}`, e.details ?? {});
    }
    return json as T;
  }

  /**
   * Reports are sent again on transient failures (at least five tries) for as long as the
   * lease may still be held: a network blip shorter than a lease does not cost the task a
   * second run, and the worker keeps heartbeating it meanwhile.
   */
  private async withRetry<T>(fn: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.leaseMs;
    for (let i = 0; ; i++) {
      try {
        return await fn();
      } catch (err) {
        const wait = Math.min((this.opts.retryBaseMs ?? 200) * 2 ** i, MAX_RETRY_WAIT_MS);
        if (!transient(err) || (i >= 4 && Date.now() + wait > deadline)) throw err;
        await sleep(wait);
      }
    }
  }

  async register(info: WorkerInfo): Promise<void> {
    const res = await this.call<{ worker_id: string; lease_seconds?: number }>('POST', '/workers/register', {
      worker_id: info.workerId,
      models: info.models.map(modelToWire),
      concurrency: info.concurrency,
      hardware: info.hardware ?? {},
      // Anything else still leased to this id was left by an earlier process: take it back now.
      running_task_ids: [...this.held],
    });
    this.info = { ...info, workerId: res.worker_id };
    if (res.lease_seconds) this.leaseMs = res.lease_seconds * 1000;
  }

  async unregister(): Promise<void> {
    if (!this.info) return;
    await this.call('DELETE', `/workers/${encodeURIComponent(this.workerId)}`).catch(() => {});
    this.info = null;
    this.agent.destroy();
  }

  async lease(models: ModelRef[], limit: number, waitMs: number, signal: AbortSignal): Promise<LeasedTask[]> {
    const body: Record<string, unknown> = { max_tasks: limit, wait_seconds: waitMs / 1000, running: [...this.held] };
    // Some of the worker's engines are full: ask only for the others' models.
    const scoped = this.scopedLeases && limit > 0 && this.info !== null && models.length < this.info.models.length;
    if (scoped) body.models = models.map((m) => ({ task_type: m.taskType, model_name: m.modelName }));
    let res: { tasks: WireTask[]; cancelled: string[] };
    try {
      res = await this.call('POST', `/workers/${encodeURIComponent(this.workerId)}/lease`, body, { signal, waitMs });
    } catch (err) {
      if (signal.aborted) return [];
      if (scoped && err instanceof HttpError && err.details.field === 'models' && err.details.reason === 'Unknown field') {
        // A server from before scoped leases: lease for every model, as it did.
        this.scopedLeases = false;
        return [];
      }
      if (err instanceof HttpError && err.code === 'WORKER_NOT_FOUND' && this.info) {
        // The server forgot us (offline too long, or unregistered): announce ourselves again.
        await this.register(this.info);
        return [];
      }
      throw err;
    }
    this.cancelledSeen(res.cancelled);
    return res.tasks.map((t) => {
      this.held.add(t.task_id);
      return { task: toRecord(t, this.workerId), leaseToken: t.lease_token };
    });
  }

  private cancelledSeen(ids: string[]): void {
    for (const id of ids) {
      // A cancelled task is over for us: stop reporting it as running.
      this.held.delete(id);
      for (const l of this.cancelListeners) l(id);
    }
  }

  /**
   * Asks the node to answer this worker's waiting lease poll now, with what it has leased:
   * a poll request aborted here could lose tasks the node has already sent. Best effort: if
   * this request fails, the poll ends when its wait does.
   */
  wake(): void {
    if (!this.info) return;
    const body = { max_tasks: 0, wait_seconds: 0, running: [...this.held], wake: true };
    this.call<{ tasks: WireTask[]; cancelled: string[] }>('POST', `/workers/${encodeURIComponent(this.workerId)}/lease`, body).then(
      (res) => this.cancelledSeen(res.cancelled),
      () => {},
    );
  }

  heartbeat(taskId: string, leaseToken: string, progress?: number): Promise<LeaseState> {
    return this.beats.add({ task_id: taskId, lease_token: leaseToken, progress });
  }

  private async sendBeats(batch: Array<Queued<Beat>>): Promise<void> {
    try {
      const res = await this.call<{ cancelled: string[]; lost: string[] }>('POST', `/workers/${encodeURIComponent(this.workerId)}/heartbeat`, {
        tasks: batch.map(({ item: { task_id, lease_token, progress } }) => (progress === undefined ? { task_id, lease_token } : { task_id, lease_token, progress })),
      });
      for (const { item, resolve } of batch) resolve(res.cancelled.includes(item.task_id) ? 'cancelled' : res.lost.includes(item.task_id) ? 'stale' : 'ok');
    } catch (err) {
      for (const b of batch) b.reject(err);
    }
  }

  private async leaseWrite(taskId: string, action: string, body: unknown): Promise<LeaseState> {
    try {
      await this.withRetry(() => this.call('POST', `/workers/${encodeURIComponent(this.workerId)}/tasks/${encodeURIComponent(taskId)}/${action}`, body));
      return 'ok';
    } catch (err) {
      if (err instanceof HttpError && err.code === 'LEASE_CONFLICT') return err.details.reason === 'cancelled' ? 'cancelled' : 'stale';
      throw err;
    } finally {
      this.held.delete(taskId);
    }
  }

  /** Completions of one turn of the event loop go out in one request. */
  complete(taskId: string, leaseToken: string, result: Record<string, unknown>): Promise<LeaseState> {
    if (!this.completeMany) return this.leaseWrite(taskId, 'complete', { lease_token: leaseToken, result });
    return this.completions.add({ task_id: taskId, lease_token: leaseToken, result });
  }

  private async sendCompletions({ batch, payload }: CompletionRequest): Promise<void> {
    const settle = (b: (typeof batch)[number], fn: () => void) => {
      this.held.delete(b.item.task_id);
      fn();
    };
    let res: { results: Array<{ task_id: string; outcome: 'completed' | 'cancelled' | 'stale' }> };
    try {
      res = await this.withRetry(() =>
        this.call('POST', `/workers/${encodeURIComponent(this.workerId)}/complete`, undefined, { raw: payload, contentType: 'application/json' }),
      );
    } catch (err) {
      if (err instanceof HttpError && err.status === 404 && err.code === 'ROUTE_NOT_FOUND') {
        this.completeMany = false;
        for (const { item, resolve, reject } of batch) this.leaseWrite(item.task_id, 'complete', { lease_token: item.lease_token, result: item.result }).then(resolve, reject);
        return;
      }
      for (const b of batch) settle(b, () => b.reject(err));
      return;
    }
    batch.forEach((b, i) => {
      const outcome = res.results[i]?.outcome;
      settle(b, () => b.resolve(outcome === 'completed' ? 'ok' : outcome === 'cancelled' ? 'cancelled' : 'stale'));
    });
  }

  fail(taskId: string, leaseToken: string, error: TaskError, retryable: boolean): Promise<LeaseState> {
    return this.leaseWrite(taskId, 'fail', { lease_token: leaseToken, error, retryable });
  }

  release(taskId: string, leaseToken: string): Promise<LeaseState> {
    return this.leaseWrite(taskId, 'release', { lease_token: leaseToken });
  }

  async appendEvents(taskId: string, leaseToken: string, events: Array<{ progress?: number; text?: string }>): Promise<LeaseState> {
    try {
      await this.call('POST', `/workers/${encodeURIComponent(this.workerId)}/tasks/${encodeURIComponent(taskId)}/events`, { lease_token: leaseToken, events });
      return 'ok';
    } catch (err) {
      if (err instanceof HttpError && err.code === 'LEASE_CONFLICT') return err.details.reason === 'cancelled' ? 'cancelled' : 'stale';
      throw err;
    }
  }

  putArtifact(taskId: string, leaseToken: string, artifact: EngineArtifact): Promise<ArtifactRef> {
    const path = `/workers/${encodeURIComponent(this.workerId)}/tasks/${encodeURIComponent(taskId)}/artifacts/${encodeURIComponent(artifact.name)}?lease_token=${encodeURIComponent(leaseToken)}`;
    return this.withRetry(() => this.call<ArtifactRef>('PUT', path, undefined, { raw: artifact.data, contentType: artifact.contentType }));
  }

  onCancel(listener: (taskId: string) => void): () => void {
    this.cancelListeners.add(listener);
    return () => this.cancelListeners.delete(listener);
  }
}

function timedOut(method: string, path: string, ms: number): Error {
  return Object.assign(new Error(`${method} ${path}: no answer within ${ms} ms`), { code: 'ETIMEDOUT' });
}

type Queued<T> = { item: T; resolve: (s: LeaseState) => void; reject: (e: unknown) => void };

/** Gathers the calls of one turn of the event loop, for one request. */
class PerTurn<T> {
  private items: Array<Queued<T>> = [];
  private scheduled = false;

  constructor(private readonly send: (batch: Array<Queued<T>>) => void) {}

  add(item: T): Promise<LeaseState> {
    return new Promise((resolve, reject) => {
      this.items.push({ item, resolve, reject });
      if (this.scheduled) return;
      this.scheduled = true;
      setImmediate(() => {
        this.scheduled = false;
        const batch = this.items;
        this.items = [];
        this.send(batch);
      });
    });
  }
}

type Beat = { task_id: string; lease_token: string; progress?: number };
type Completion = { task_id: string; lease_token: string; result: Record<string, unknown> };
interface CompletionRequest {
  batch: Array<Queued<Completion>>;
  payload: Buffer;
}

/** Splits completions into requests of up to MAX_COMPLETIONS or about COMPLETIONS_BYTES (a larger result goes alone). */
function completionRequests(all: Array<Queued<Completion>>): CompletionRequest[] {
  const out: CompletionRequest[] = [];
  let batch: Array<Queued<Completion>> = [];
  let parts: string[] = [];
  let bytes = 0;
  const close = () => {
    if (batch.length) out.push({ batch, payload: Buffer.from(`{"tasks":[${parts.join(',')}]}`) });
    (batch = []), (parts = []), (bytes = 0);
  };
  for (const q of all) {
    const part = JSON.stringify(q.item);
    if (batch.length >= MAX_COMPLETIONS || (batch.length > 0 && bytes + part.length > COMPLETIONS_BYTES)) close();
    batch.push(q);
    parts.push(part);
    bytes += part.length + 1;
  }
  close();
  return out;
}

function toRecord(t: WireTask, workerId: string): TaskRecord {
  const startedAt = Date.parse(t.started_at);
  return {
    id: t.task_id,
    status: 'running',
    taskType: t.task_type,
    modelName: t.model_name,
    inputData: t.input_data,
    parameters: t.parameters,
    priority: t.priority,
    attempts: t.attempts,
    maxAttempts: t.attempts,
    timeoutMs: t.timeout_seconds * 1000,
    createdAt: startedAt,
    startedAt,
    completedAt: null,
    cancelledAt: null,
    updatedAt: startedAt,
    workerId,
    leaseToken: t.lease_token,
    leaseExpiresAt: null,
    progress: null,
    result: null,
    error: null,
    webhookUrl: null,
    webhookEvents: null,
  };
}
