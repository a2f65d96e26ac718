/** `TaskManagerClient`: the typed SDK over the REST API, SSE and WebSocket. */
import {
  errorFromBody,
  NetworkError,
  RateLimitedError,
  TaskManagerError,
  WaitTimeoutError,
} from './errors.js';
import { TaskEventsSocket, type FilterSubscription, type TaskEventListener, type TaskSubscription } from './events-socket.js';
import { parseSse } from './sse.js';
import {
  isFinalStatus,
  type CancelledTask,
  type CreatedTask,
  type CreateTaskInput,
  type Health,
  type ListTasksOptions,
  type Task,
  type TaskFilter,
  type TaskList,
  type TaskStreamEvent,
  type TaskSummary,
} from './types.js';
import {
  abortReason,
  findWebSocket,
  isAbortError,
  linkedController,
  sleep,
  throwIfAborted,
  type WebSocketConstructor,
} from './util.js';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface TaskManagerClientOptions {
  /** Server base URL, e.g. `http://127.0.0.1:8002` (a path prefix is kept). */
  baseUrl: string;
  /** A fetch implementation (default: the global `fetch`). */
  fetch?: FetchLike;
  /** Headers sent with every HTTP request (and WebSocket handshake where the runtime allows). */
  headers?: Record<string, string>;
  /**
   * WebSocket constructor for live updates. Default: the global `WebSocket`, else the `ws`
   * package when installed (Node 20). `false` or `null` disables WebSocket use: `waitForTask`
   * then long-polls.
   */
  WebSocket?: WebSocketConstructor | false | null;
  /**
   * Retries of safe requests (GET, DELETE, and POST with an idempotency key) after a network
   * error, `429` (honouring `Retry-After`) or `503 SERVICE_UNAVAILABLE`. Default 2; 0 disables.
   */
  maxRetries?: number;
  /** The longest pause before a retry; a longer `Retry-After` is not waited for. Default 10 000 ms. */
  maxRetryDelayMs?: number;
}

export interface CreateTaskOptions {
  /** Makes retries safe: the same key with the same body returns the same task (kept 24 h). */
  idempotencyKey?: string;
  /** Seconds to wait for the task to be final before answering (`Prefer: wait=N`); the answer is then the whole task. */
  wait?: number;
  signal?: AbortSignal;
}

export interface GetTaskOptions {
  /** Seconds to wait for the task to be final before answering (`Prefer: wait=N`, capped by the server). */
  wait?: number;
  signal?: AbortSignal;
}

export interface WaitForTaskOptions {
  /** Give up after this long with `WaitTimeoutError` (default: wait indefinitely). */
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Pause between polls when the server answers without waiting (default 1000 ms). */
  pollIntervalMs?: number;
}

export interface StreamOptions {
  signal?: AbortSignal;
  /** Resume after this event id (an earlier event's `event_id`): nothing before it is sent again. */
  lastEventId?: number | string;
  /** Consecutive failed reconnects before giving up with `NetworkError` (default 8). */
  maxReconnects?: number;
  /** Base pause before a reconnect (default: the server's `retry:`, else 1000 ms), doubled per failure. */
  reconnectDelayMs?: number;
}

export interface IterateTasksOptions extends ListTasksOptions {
  /** Page size (default: `limit`, else 100). */
  pageSize?: number;
}

/** A subscription on its own connection: `close()` ends both. */
export type OwnedSubscription<S> = S & { socket: TaskEventsSocket; close(): void };

/** Every task across pages: `for await (const t of it)`; `it.pages()` yields the raw pages. */
export class TaskPages implements AsyncIterable<TaskSummary> {
  constructor(
    private readonly client: TaskManagerClient,
    private readonly query: IterateTasksOptions,
  ) {}

  async *pages(): AsyncGenerator<TaskList> {
    const { pageSize, limit, offset, ...filters } = this.query;
    const size = pageSize ?? limit ?? 100;
    let at = offset ?? 0;
    for (;;) {
      const page = await this.client.listTasks({ ...filters, limit: size, offset: at });
      yield page;
      at += page.tasks.length;
      if (page.tasks.length < size || at >= page.total) return;
    }
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<TaskSummary> {
    // Offset paging over a list that grows at the front can show a task twice; never yield it twice.
    const seen = new Set<string>();
    for await (const page of this.pages()) {
      for (const t of page.tasks) {
        if (seen.has(t.task_id)) continue;
        seen.add(t.task_id);
        yield t;
      }
    }
  }

  /** Every task as an array (mind the size). */
  async toArray(): Promise<TaskSummary[]> {
    const out: TaskSummary[] = [];
    for await (const t of this) out.push(t);
    return out;
  }
}

interface RequestSpec {
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** Safe to send again after a failure. */
  retryable: boolean;
}

/** Marker: the WebSocket path could not be used; long-poll instead. */
class WebSocketUnavailable extends Error {}

export class TaskManagerClient {
  readonly baseUrl: string;
  private readonly fetchImpl: FetchLike;
  private readonly headers: Record<string, string>;
  private readonly wsOption: WebSocketConstructor | false | null | undefined;
  private readonly maxRetries: number;
  private readonly maxRetryDelayMs: number;
  private wsLookup: Promise<{ ctor: WebSocketConstructor; acceptsOptions: boolean } | null> | undefined;

  constructor(options: TaskManagerClientOptions) {
    if (!options || typeof options.baseUrl !== 'string' || !/^https?:\/\//i.test(options.baseUrl)) {
      throw new TypeError('TaskManagerClient: baseUrl must be an http(s) URL');
    }
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    const f = options.fetch ?? (globalThis as { fetch?: FetchLike }).fetch;
    if (typeof f !== 'function') throw new TypeError('TaskManagerClient: no fetch in this runtime; pass options.fetch');
    // Called unbound: browsers refuse `fetch` invoked on another object.
    this.fetchImpl = (input, init) => f(input, init);
    this.headers = { ...options.headers };
    this.wsOption = options.WebSocket;
    this.maxRetries = Math.max(0, options.maxRetries ?? 2);
    this.maxRetryDelayMs = options.maxRetryDelayMs ?? 10_000;
  }

  // --- REST --------------------------------------------------------------------------------

  /** `POST /tasks`. With `wait`, the answer is the whole task (final, or as it is after `wait` seconds). */
  createTask(input: CreateTaskInput, opts: CreateTaskOptions & { wait: number }): Promise<Task>;
  createTask(input: CreateTaskInput, opts?: CreateTaskOptions): Promise<CreatedTask>;
  async createTask(input: CreateTaskInput, opts: CreateTaskOptions = {}): Promise<CreatedTask | Task> {
    const headers: Record<string, string> = {};
    if (opts.idempotencyKey !== undefined) headers['idempotency-key'] = opts.idempotencyKey;
    if (opts.wait !== undefined) headers.prefer = `wait=${formatSeconds(opts.wait)}`;
    const res = await this.send({
      method: 'POST',
      path: '/tasks',
      body: input,
      headers,
      signal: opts.signal,
      retryable: opts.idempotencyKey !== undefined,
    });
    return this.json(res);
  }

  /** `GET /tasks/{id}`; with `wait`, answers once the task is final or after `wait` seconds. */
  async getTask(taskId: string, opts: GetTaskOptions = {}): Promise<Task> {
    const res = await this.send({
      method: 'GET',
      path: `/tasks/${encodeURIComponent(taskId)}`,
      headers: opts.wait !== undefined ? { prefer: `wait=${formatSeconds(opts.wait)}` } : undefined,
      signal: opts.signal,
      retryable: true,
    });
    return this.json(res);
  }

  /** `GET /tasks`: one page. */
  async listTasks(query: ListTasksOptions = {}, opts: { signal?: AbortSignal } = {}): Promise<TaskList> {
    const res = await this.send({ method: 'GET', path: '/tasks', query: { ...query }, signal: opts.signal, retryable: true });
    return this.json(res);
  }

  /** Every task matching `query`, page after page. */
  iterateTasks(query: IterateTasksOptions = {}): TaskPages {
    return new TaskPages(this, query);
  }

  /** `DELETE /tasks/{id}`: cancels a pending or running task. */
  async cancelTask(taskId: string, opts: { signal?: AbortSignal } = {}): Promise<CancelledTask> {
    const res = await this.send({ method: 'DELETE', path: `/tasks/${encodeURIComponent(taskId)}`, signal: opts.signal, retryable: true });
    return this.json(res);
  }

  /** `GET /health` (its body also when the server answers 503 unhealthy). */
  async health(opts: { signal?: AbortSignal } = {}): Promise<Health> {
    let res: Response;
    try {
      res = await this.send({ method: 'GET', path: '/health', signal: opts.signal, retryable: true });
    } catch (err) {
      if (err instanceof TaskManagerError && err.status === 503 && err.details.body && typeof err.details.body === 'object') {
        return err.details.body as Health;
      }
      throw err;
    }
    return this.json(res);
  }

  // --- Waiting -----------------------------------------------------------------------------

  /**
   * Resolves with the task once it is final (completed, failed or cancelled). Follows it over
   * the WebSocket when one is available, else (or when the socket fails) long-polls
   * `GET /tasks/{id}` with `Prefer: wait`. Rejects with `WaitTimeoutError` after `timeoutMs`,
   * `TaskNotFoundError` for an unknown id, or the signal's reason when aborted.
   */
  async waitForTask(taskId: string, opts: WaitForTaskOptions = {}): Promise<Task> {
    const { controller, dispose } = linkedController(opts.signal);
    const timeout = new WaitTimeoutError({
      code: 'WAIT_TIMEOUT',
      message: `Task ${taskId} was not final after ${opts.timeoutMs} ms`,
      status: 0,
      details: { task_id: taskId, timeout_ms: opts.timeoutMs },
    });
    const timer = opts.timeoutMs !== undefined ? setTimeout(() => controller.abort(timeout), Math.max(0, opts.timeoutMs)) : undefined;
    const state: { last: Task | null } = { last: null };
    const signal = controller.signal;
    try {
      try {
        const viaWs = await this.waitViaWebSocket(taskId, signal, state);
        if (viaWs) return viaWs;
        // The socket saw the final update, which carries a summary: fetch the whole task.
        const task = await this.getTask(taskId, { signal });
        state.last = task;
        if (isFinalStatus(task.status)) return task;
      } catch (err) {
        // The socket's own troubles mean "poll instead"; the API's answers (unknown task) do not.
        if (!(err instanceof WebSocketUnavailable) && !(err instanceof NetworkError)) throw err;
      }
      return await this.waitViaPolling(taskId, signal, opts.pollIntervalMs ?? 1000, state);
    } catch (err) {
      if (signal.aborted && signal.reason === timeout) {
        throw new WaitTimeoutError({
          code: 'WAIT_TIMEOUT',
          message: timeout.message + (state.last ? ` (last status: ${state.last.status})` : ''),
          status: 0,
          details: { task_id: taskId, timeout_ms: opts.timeoutMs, last_status: state.last?.status ?? null },
          lastTask: state.last,
        });
      }
      throw err;
    } finally {
      if (timer) clearTimeout(timer);
      dispose();
    }
  }

  /** The final task via one WebSocket subscription; null when the final state must still be fetched. */
  private async waitViaWebSocket(taskId: string, signal: AbortSignal, state: { last: Task | null }): Promise<Task | null> {
    const socket = await this.connectEvents(signal).catch((err) => {
      if (isAbortError(err) || signal.aborted) throw signal.aborted ? abortReason(signal) : err;
      throw new WebSocketUnavailable(String(err));
    });
    if (!socket) throw new WebSocketUnavailable('no WebSocket');
    let onAbort = () => {};
    try {
      return await new Promise<Task | null>((resolve, reject) => {
        onAbort = () => reject(abortReason(signal));
        if (signal.aborted) return onAbort();
        signal.addEventListener('abort', onAbort, { once: true });
        socket.onClose((err) => reject(err ?? new WebSocketUnavailable('closed')));
        socket
          .subscribeTask(taskId, (e) => {
            if (e.type === 'task.update' && isFinalStatus(e.status)) resolve(null);
          })
          .then((sub) => {
            state.last = sub.snapshot;
            if (isFinalStatus(sub.snapshot.status)) resolve(sub.snapshot);
          }, reject);
      });
    } finally {
      signal.removeEventListener('abort', onAbort);
      socket.close();
    }
  }

  private async waitViaPolling(taskId: string, signal: AbortSignal, pollIntervalMs: number, state: { last: Task | null }): Promise<Task> {
    for (;;) {
      throwIfAborted(signal);
      const started = Date.now();
      const task = await this.getTask(taskId, { wait: 30, signal });
      state.last = task;
      if (isFinalStatus(task.status)) return task;
      // A server (or proxy) that did not wait: do not spin.
      if (Date.now() - started < 100) await sleep(pollIntervalMs, signal);
    }
  }

  // --- Streaming (SSE) ---------------------------------------------------------------------

  /**
   * The task's events — status changes, progress, streamed output — in order, from
   * `GET /tasks/{id}/events`. Reconnects with `Last-Event-ID` when the connection drops, so
   * nothing is lost or repeated; ends after the final status. Breaking out of the loop or
   * aborting `signal` closes the connection; resume later with `lastEventId` set to the last
   * `event_id` seen.
   */
  stream(taskId: string, opts: StreamOptions = {}): AsyncIterable<TaskStreamEvent> {
    return { [Symbol.asyncIterator]: () => this.streamEvents(taskId, opts) };
  }

  private async *streamEvents(taskId: string, opts: StreamOptions): AsyncGenerator<TaskStreamEvent> {
    const { signal } = opts;
    const maxReconnects = opts.maxReconnects ?? 8;
    let lastId = opts.lastEventId === undefined ? undefined : String(opts.lastEventId);
    let serverRetryMs: number | undefined;
    let failures = 0;
    let retryAfterMs = 0;
    let lastError: unknown;
    const url = `${this.baseUrl}/tasks/${encodeURIComponent(taskId)}/events`;
    for (;;) {
      throwIfAborted(signal);
      if (failures > 0) {
        if (failures > maxReconnects) {
          throw new NetworkError({
            code: 'NETWORK_ERROR',
            message: `Event stream of ${taskId} lost after ${maxReconnects} reconnects: ${describe(lastError)}`,
            status: 0,
            cause: lastError,
          });
        }
        // First reconnect at once (a dropped connection), then back off.
        const base = opts.reconnectDelayMs ?? serverRetryMs ?? 1000;
        const delay = Math.max(retryAfterMs, failures > 1 ? Math.min(30_000, base * 2 ** (failures - 2)) : 0);
        retryAfterMs = 0;
        if (delay > 0) await sleep(delay, signal);
      }
      const { controller, dispose } = linkedController(signal);
      let res: Response;
      try {
        res = await this.fetchImpl(url, {
          method: 'GET',
          headers: { ...this.headers, accept: 'text/event-stream', ...(lastId !== undefined ? { 'last-event-id': lastId } : {}) },
          signal: controller.signal,
        });
      } catch (err) {
        dispose();
        if (signal?.aborted) throw abortReason(signal);
        lastError = err;
        failures++;
        continue;
      }
      if (!res.ok) {
        dispose();
        const err = await this.errorOf(res);
        if (err instanceof RateLimitedError || res.status >= 502) {
          retryAfterMs = err instanceof RateLimitedError && err.retryAfter !== null ? err.retryAfter * 1000 : 0;
          lastError = err;
          failures++;
          continue;
        }
        throw err;
      }
      if (!res.body || !/^text\/event-stream/i.test(res.headers.get('content-type') ?? '')) {
        dispose();
        controller.abort();
        throw new TaskManagerError({
          code: 'INVALID_RESPONSE',
          message: `Expected text/event-stream from ${url}, got ${res.headers.get('content-type') ?? 'nothing'}`,
          status: res.status,
        });
      }
      try {
        for await (const msg of parseSse(res.body)) {
          if (msg.retry !== undefined) serverRetryMs = msg.retry;
          if (msg.event === 'end') return;
          if (!msg.data) continue;
          let event: TaskStreamEvent;
          try {
            event = JSON.parse(msg.data);
          } catch {
            continue;
          }
          if (msg.id !== undefined) lastId = msg.id;
          else if (typeof event.event_id === 'number') lastId = String(event.event_id);
          failures = 0;
          if (event.type !== 'status' && event.type !== 'progress' && event.type !== 'output') continue;
          yield event;
          if (event.type === 'status' && isFinalStatus(event.status)) return;
        }
        lastError = new Error('the server closed the stream before the task was final');
      } catch (err) {
        if (signal?.aborted) throw abortReason(signal);
        lastError = err;
      } finally {
        controller.abort();
        dispose();
      }
      failures++;
    }
  }

  // --- WebSocket ---------------------------------------------------------------------------

  /** The WebSocket URL of `/ws/tasks`. */
  get webSocketUrl(): string {
    return `${this.baseUrl.replace(/^http/i, 'ws')}/ws/tasks`;
  }

  /**
   * Opens one `/ws/tasks` connection for any number of subscriptions. Rejects with
   * `NetworkError` when it cannot connect, or a TypeError when no WebSocket is available.
   */
  async openEventsSocket(opts: { signal?: AbortSignal } = {}): Promise<TaskEventsSocket> {
    const socket = await this.connectEvents(opts.signal);
    if (!socket) throw new TypeError('No WebSocket implementation: pass options.WebSocket (or install "ws" on Node 20)');
    return socket;
  }

  /**
   * Subscribes on a connection of its own: to one task (`{ task_id }`) or to every task matching
   * a filter (`{ status?, task_type?, model_name? }`; all tasks when omitted). `onEvent`
   * receives each `task.update`, `task.progress` and `task.output`; `close()` ends it.
   */
  async subscribe(target: { task_id: string }, onEvent: TaskEventListener): Promise<OwnedSubscription<TaskSubscription>>;
  async subscribe(filter: TaskFilter | undefined, onEvent: TaskEventListener): Promise<OwnedSubscription<FilterSubscription>>;
  async subscribe(
    target: TaskFilter | { task_id: string } | undefined,
    onEvent: TaskEventListener,
  ): Promise<OwnedSubscription<TaskSubscription | FilterSubscription>> {
    const socket = await this.openEventsSocket();
    try {
      const sub =
        target && 'task_id' in target ? await socket.subscribeTask(target.task_id, onEvent) : await socket.subscribe((target ?? {}) as TaskFilter, onEvent);
      return Object.assign(sub, { socket, close: () => socket.close() });
    } catch (err) {
      socket.close();
      throw err;
    }
  }

  /** An open socket, or null when this client has no WebSocket. */
  private async connectEvents(signal?: AbortSignal): Promise<TaskEventsSocket | null> {
    const found = await this.findWebSocket();
    if (!found) return null;
    throwIfAborted(signal);
    const hasHeaders = Object.keys(this.headers).length > 0;
    const ws = found.acceptsOptions && hasHeaders ? new found.ctor(this.webSocketUrl, { headers: this.headers }) : new found.ctor(this.webSocketUrl);
    const socket = new TaskEventsSocket(ws);
    const onAbort = () => socket.close();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await socket.ready;
    } catch (err) {
      socket.close();
      if (signal?.aborted) throw abortReason(signal);
      throw err;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    return socket;
  }

  private findWebSocket(): Promise<{ ctor: WebSocketConstructor; acceptsOptions: boolean } | null> {
    if (this.wsOption === false || this.wsOption === null) return Promise.resolve(null);
    if (this.wsOption) return Promise.resolve({ ctor: this.wsOption, acceptsOptions: false });
    this.wsLookup ??= findWebSocket();
    return this.wsLookup;
  }

  // --- HTTP plumbing -----------------------------------------------------------------------

  private async send(spec: RequestSpec): Promise<Response> {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(spec.query ?? {})) if (v !== undefined && v !== null) qs.set(k, String(v));
    const search = qs.toString();
    const url = `${this.baseUrl}${spec.path}${search ? `?${search}` : ''}`;
    const headers: Record<string, string> = { accept: 'application/json', ...this.headers, ...spec.headers };
    if (spec.body !== undefined) headers['content-type'] = 'application/json';
    const body = spec.body === undefined ? undefined : JSON.stringify(spec.body);
    for (let attempt = 0; ; attempt++) {
      throwIfAborted(spec.signal);
      let res: Response;
      try {
        res = await this.fetchImpl(url, { method: spec.method, headers, body, signal: spec.signal });
      } catch (err) {
        if (spec.signal?.aborted) throw abortReason(spec.signal);
        const netErr = new NetworkError({
          code: 'NETWORK_ERROR',
          message: `${spec.method} ${url} failed: ${describe(err)}`,
          status: 0,
          cause: err,
        });
        if (spec.retryable && attempt < this.maxRetries) {
          await sleep(backoff(attempt), spec.signal);
          continue;
        }
        throw netErr;
      }
      if (res.ok) return res;
      const err = await this.errorOf(res);
      if (spec.retryable && attempt < this.maxRetries) {
        let delay: number | null = null;
        if (err instanceof RateLimitedError) delay = err.retryAfter !== null ? err.retryAfter * 1000 : backoff(attempt);
        else if (err.code === 'SERVICE_UNAVAILABLE') delay = backoff(attempt);
        if (delay !== null && delay <= this.maxRetryDelayMs) {
          await sleep(delay, spec.signal);
          continue;
        }
      }
      throw err;
    }
  }

  private async json<T>(res: Response): Promise<T> {
    const text = await res.text();
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new TaskManagerError({
        code: 'INVALID_RESPONSE',
        message: `Expected JSON from the server (HTTP ${res.status}), got: ${text.slice(0, 120)}`,
        status: res.status,
        requestId: res.headers.get('x-request-id'),
      });
    }
  }

  private async errorOf(res: Response): Promise<TaskManagerError> {
    let text = '';
    try {
      text = await res.text();
    } catch {
      /* body lost: build the error from the status alone */
    }
    let body: unknown = text;
    try {
      body = JSON.parse(text);
    } catch {
      /* not JSON */
    }
    return errorFromBody(res.status, body, res.headers);
  }
}

/** Seconds for a `Prefer: wait=` value: a non-negative number with at most 3 decimals. */
function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) throw new TypeError(`wait must be a non-negative number of seconds, got ${s}`);
  return String(Math.round(s * 1000) / 1000);
}

const backoff = (attempt: number) => Math.min(5000, 200 * 2 ** attempt) * (0.75 + Math.random() * 0.5);

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
  const why = cause && typeof cause === 'object' ? (cause.code ?? cause.message) : undefined;
  return why ? `${err.message} (${String(why)})` : err.message;
}
