/** `TaskEventsSocket`: many task and filter subscriptions over one `/ws/tasks` connection. */
import { errorFromBody, NetworkError, STATUS_BY_CODE, type TaskManagerError } from './errors.js';
import type {
  ServerMessage,
  Task,
  TaskEvent,
  TaskFilter,
  TaskSummary,
  WsError,
  WsFilterSnapshot,
  WsTaskSnapshot,
} from './types.js';
import { messageText, type WebSocketLike } from './util.js';

export type TaskEventListener = (event: TaskEvent) => void;

export interface TaskSubscription {
  /** The server's subscription id (`sub_1`, …). */
  readonly id: string;
  readonly taskId: string;
  /** The task as it was right after subscribing; later changes arrive as events. */
  readonly snapshot: Task;
  unsubscribe(): Promise<void>;
}

export interface FilterSubscription {
  readonly id: string;
  readonly filter: TaskFilter;
  /** Up to 100 newest matching tasks at subscription time, and how many match in all. */
  readonly snapshot: { tasks: TaskSummary[]; total: number };
  unsubscribe(): Promise<void>;
}

type Handler = (msg: ServerMessage) => 'done' | 'more' | 'ignore';

interface PendingRequest {
  handle: Handler;
  reject: (err: unknown) => void;
}

const CONTROL = new Set(['subscribed', 'snapshot', 'unsubscribed', 'pong', 'error']);

export function wsErrorToError(msg: WsError): TaskManagerError {
  const status = (STATUS_BY_CODE as Record<string, number>)[msg.error?.code] ?? 400;
  return errorFromBody(status, msg);
}

/**
 * One WebSocket connection carrying any number of subscriptions. Requests (subscribe,
 * unsubscribe, ping) go one at a time so each answer is matched to its request; events are
 * routed to the listener of each subscription they belong to, and to `onEvent` listeners.
 * Open one with `TaskManagerClient.openEventsSocket()`.
 */
export class TaskEventsSocket {
  private readonly eventListeners = new Set<TaskEventListener>();
  private readonly closeListeners = new Set<(err: TaskManagerError | null) => void>();
  private readonly taskSubs = new Map<string, { taskId: string; listener?: TaskEventListener }>();
  private readonly filterSubs = new Map<string, { filter: TaskFilter; listener?: TaskEventListener }>();
  /** task_type and model_name of tasks seen, to route progress and output to filter subscriptions. */
  private readonly known = new Map<string, { task_type: string; model_name: string }>();
  private pending: PendingRequest | null = null;
  private chain: Promise<unknown> = Promise.resolve();
  private closedWith: TaskManagerError | null | undefined;
  /** Resolves once the connection is open; rejects when it cannot be opened. */
  readonly ready: Promise<void>;

  private rejectReady: (err: unknown) => void = () => {};

  constructor(private readonly ws: WebSocketLike) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.rejectReady = reject;
      ws.addEventListener('open', () => resolve());
      ws.addEventListener('error', (ev: { message?: string; error?: unknown }) => {
        const err = new NetworkError({
          code: 'NETWORK_ERROR',
          message: `WebSocket error${ev?.message ? `: ${ev.message}` : ''}`,
          status: 0,
          cause: ev?.error,
        });
        reject(err);
        this.shutdown(err);
      });
      ws.addEventListener('close', (ev: { code?: number; reason?: string }) => {
        const err =
          this.closedWith === undefined && ev?.code !== 1000
            ? new NetworkError({ code: 'NETWORK_ERROR', message: `WebSocket closed (${ev?.code ?? '?'}${ev?.reason ? ` ${ev.reason}` : ''})`, status: 0 })
            : null;
        reject(err ?? new NetworkError({ code: 'NETWORK_ERROR', message: 'WebSocket closed', status: 0 }));
        this.shutdown(err);
      });
    });
    this.ready.catch(() => {}); // observed through the requests that await it
    ws.addEventListener('message', (ev: { data: unknown }) => {
      let msg: ServerMessage;
      try {
        msg = JSON.parse(messageText(ev.data));
      } catch {
        return;
      }
      if (msg && typeof msg === 'object') this.onMessage(msg);
    });
  }

  /** True until the connection closes. */
  get open(): boolean {
    return this.closedWith === undefined;
  }

  /** Every task event this connection receives, whichever subscription it is for. */
  onEvent(listener: TaskEventListener): () => void {
    this.eventListeners.add(listener);
    return () => this.eventListeners.delete(listener);
  }

  /** Called once when the connection ends: with null after `close()`, else with the error. */
  onClose(listener: (err: TaskManagerError | null) => void): () => void {
    if (this.closedWith !== undefined) {
      queueMicrotask(() => listener(this.closedWith ?? null));
      return () => {};
    }
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /** Follows one task: resolves with its snapshot; `listener` receives its later events. */
  async subscribeTask(taskId: string, listener?: TaskEventListener): Promise<TaskSubscription> {
    let subscriptionId = '';
    const snapshot = await this.request<WsTaskSnapshot>({ action: 'subscribe', task_id: taskId }, (msg, done) => {
      if (msg.type === 'subscribed' && msg.task_id === taskId && !subscriptionId) {
        subscriptionId = msg.subscription_id;
        // From here on events for the task may arrive before the snapshot: route them already.
        this.taskSubs.set(subscriptionId, { taskId, listener });
        return 'more';
      }
      if (msg.type === 'snapshot' && msg.subscription_id === subscriptionId) return done(msg as WsTaskSnapshot);
      return 'ignore';
    });
    this.remember(snapshot.task);
    return { id: subscriptionId, taskId, snapshot: snapshot.task, unsubscribe: () => this.unsubscribe(subscriptionId) };
  }

  /** Follows every task matching `filter` (all tasks when empty), including ones created later. */
  async subscribe(filter: TaskFilter = {}, listener?: TaskEventListener): Promise<FilterSubscription> {
    let subscriptionId = '';
    const snapshot = await this.request<WsFilterSnapshot>({ action: 'subscribe', filter }, (msg, done) => {
      if (msg.type === 'subscribed' && msg.filter && !subscriptionId) {
        subscriptionId = msg.subscription_id;
        this.filterSubs.set(subscriptionId, { filter, listener });
        return 'more';
      }
      if (msg.type === 'snapshot' && msg.subscription_id === subscriptionId) return done(msg as WsFilterSnapshot);
      return 'ignore';
    });
    for (const t of snapshot.tasks) this.remember(t);
    return {
      id: subscriptionId,
      filter,
      snapshot: { tasks: snapshot.tasks, total: snapshot.total },
      unsubscribe: () => this.unsubscribe(subscriptionId),
    };
  }

  async unsubscribe(subscriptionId: string): Promise<void> {
    if (!this.taskSubs.has(subscriptionId) && !this.filterSubs.has(subscriptionId)) return;
    this.taskSubs.delete(subscriptionId);
    this.filterSubs.delete(subscriptionId);
    if (!this.open) return;
    await this.request({ action: 'unsubscribe', subscription_id: subscriptionId }, (msg, done) =>
      msg.type === 'unsubscribed' && msg.subscription_id === subscriptionId ? done(undefined) : 'ignore',
    );
  }

  /** Round trip to the server; resolves with the latency in milliseconds. */
  async ping(): Promise<number> {
    const start = Date.now();
    await this.request({ action: 'ping' }, (msg, done) => (msg.type === 'pong' ? done(undefined) : 'ignore'));
    return Date.now() - start;
  }

  close(): void {
    if (this.closedWith !== undefined) return;
    this.shutdown(null);
    try {
      this.ws.close(1000);
    } catch {
      /* already closing */
    }
  }

  private request<T>(body: object, handler: (msg: ServerMessage, done: (v: T) => 'done') => 'done' | 'more' | 'ignore'): Promise<T> {
    const run = () =>
      new Promise<T>((resolve, reject) => {
        if (this.closedWith !== undefined) {
          return reject(this.closedWith ?? new NetworkError({ code: 'NETWORK_ERROR', message: 'WebSocket is closed', status: 0 }));
        }
        let value: T;
        const done = (v: T): 'done' => {
          value = v;
          return 'done';
        };
        this.pending = {
          handle: (msg) => {
            if (msg.type === 'error') {
              reject(wsErrorToError(msg));
              return 'done';
            }
            const r = handler(msg, done);
            if (r === 'done') resolve(value);
            return r;
          },
          reject,
        };
        try {
          this.ws.send(JSON.stringify(body));
        } catch (err) {
          this.pending = null;
          reject(new NetworkError({ code: 'NETWORK_ERROR', message: 'WebSocket send failed', status: 0, cause: err }));
        }
      });
    const p = this.chain.then(() => this.ready).then(run);
    this.chain = p.catch(() => {});
    return p;
  }

  private onMessage(msg: ServerMessage): void {
    if (CONTROL.has(msg.type)) {
      const pending = this.pending;
      if (pending && pending.handle(msg) === 'done' && this.pending === pending) this.pending = null;
      return;
    }
    if (msg.type !== 'task.update' && msg.type !== 'task.progress' && msg.type !== 'task.output') return;
    if (msg.type === 'task.update') this.remember(msg.task);
    for (const l of this.eventListeners) safeCall(l, msg);
    for (const sub of this.taskSubs.values()) if (sub.listener && sub.taskId === msg.task_id) safeCall(sub.listener, msg);
    for (const sub of this.filterSubs.values()) if (sub.listener && this.matches(sub.filter, msg)) safeCall(sub.listener, msg);
  }

  private matches(f: TaskFilter, e: TaskEvent): boolean {
    if (f.status && f.status !== e.status) return false;
    const info = e.type === 'task.update' ? e.task : this.known.get(e.task_id);
    // Unknown task (no update seen yet): the server sent it because some filter matched.
    if (!info) return true;
    return (!f.task_type || f.task_type === info.task_type) && (!f.model_name || f.model_name === info.model_name);
  }

  private remember(t: { task_id: string; task_type: string; model_name: string }): void {
    if (this.known.size > 10_000) this.known.clear();
    this.known.set(t.task_id, { task_type: t.task_type, model_name: t.model_name });
  }

  private shutdown(err: TaskManagerError | null): void {
    if (this.closedWith !== undefined) return;
    this.closedWith = err;
    // Closed before it opened: whoever awaits `ready` learns now (a no-op once open).
    this.rejectReady(err ?? new NetworkError({ code: 'NETWORK_ERROR', message: 'WebSocket closed before it opened', status: 0 }));
    const pending = this.pending;
    this.pending = null;
    pending?.reject(err ?? new NetworkError({ code: 'NETWORK_ERROR', message: 'WebSocket closed', status: 0 }));
    for (const l of this.closeListeners) safeCall(l, err);
    this.closeListeners.clear();
  }
}

function safeCall<A>(fn: (a: A) => void, a: A): void {
  try {
    fn(a);
  } catch (err) {
    // A listener's bug must not break the socket; surface it without swallowing.
    queueMicrotask(() => {
      throw err;
    });
  }
}
