import { EventEmitter } from 'node:events';
import { createHash, randomBytes } from 'node:crypto';
import pg from 'pg';
import type { EventBus, TaskEvent } from '../../core/events.js';
import type { TaskLogEvent } from '../../core/store.js';
import type { TaskRecord } from '../../core/task.js';

/** NOTIFY payloads must stay under 8000 bytes; one over it fails the whole statement. */
export const MAX_PAYLOAD = 7900;

interface Wire {
  o: string; // origin node
  e: Omit<TaskEvent, 'task'> & {
    task: TaskRecord;
    /** The task came without its inputs and result: read it back. */
    partial?: true;
    /** The output entries came as their id range (after `logAfter`, up to `logLast`, `logCount` of them): read them back. */
    logAfter?: number;
    logLast?: number;
    logCount?: number;
  };
}

export interface PgEventBusOptions {
  pool: pg.Pool;
  clientConfig: pg.ClientConfig;
  channel: string;
  /** Loads the full task when an event arrived without its inputs and result (too big for NOTIFY). */
  hydrate: (id: string) => Promise<TaskRecord | null>;
  /** Loads streamed output that was too big for NOTIFY (it is in the task's log before it is announced). */
  loadLog: (taskId: string, afterId: number, limit: number) => Promise<TaskLogEvent[]>;
  onError?: (err: unknown) => void;
}

/**
 * Task events for every node: delivered locally at once, and to other nodes through
 * LISTEN/NOTIFY. Events of one turn of the event loop go out in one NOTIFY statement. What
 * does not fit a NOTIFY goes as a reference (the task's id, the ids of its log entries) and
 * is read back from the store by the nodes that receive it, in the order sent.
 */
export class PgEventBus implements EventBus {
  readonly nodeId = randomBytes(6).toString('hex');
  /** How this node's own notifications begin (see wirePayload): they come back to it, and are not parsed. */
  private readonly ownPrefix = `{"o":${JSON.stringify(this.nodeId)},`;
  /** Where workers' wakes go between nodes (see EventBus.wakeWorker): a name under PostgreSQL's 63 bytes. */
  private readonly wakeChannel: string;
  /** Where lost notifications are reported; settable once a logger exists. */
  onError: ((err: unknown) => void) | null;
  /**
   * Received events are handed on in order: while one is being read back, those after it
   * wait in this chain; otherwise they go at once.
   */
  private delivered: Promise<void> = Promise.resolve();
  private readingBack = 0;
  private readonly emitter = new EventEmitter();
  private outbox: string[] = [];
  private flushScheduled = false;
  private listener: pg.Client | null = null;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private ready: Promise<void>;

  constructor(private readonly opts: PgEventBusOptions) {
    this.onError = opts.onError ?? null;
    this.wakeChannel = `tm_wake_${createHash('sha256').update(opts.channel).digest('hex').slice(0, 32)}`;
    this.emitter.setMaxListeners(0);
    this.ready = this.listen();
  }

  /** Resolves once this node listens, so nothing published after it is missed. */
  whenListening(): Promise<void> {
    return this.ready;
  }

  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client(this.opts.clientConfig);
    client.on('notification', (msg) => (msg.channel === this.wakeChannel ? this.receiveWake(msg.payload ?? '') : this.receive(msg.payload ?? '')));
    client.on('error', (err) => {
      this.onError?.(err);
      this.scheduleReconnect(client);
    });
    client.on('end', () => this.scheduleReconnect(client));
    try {
      await client.connect();
      await client.query(`LISTEN ${this.opts.channel}; LISTEN ${this.wakeChannel}`);
      this.listener = client;
    } catch (err) {
      this.onError?.(err);
      this.scheduleReconnect(client);
    }
  }

  private scheduleReconnect(client: pg.Client): void {
    if (this.closed || this.reconnectTimer) return;
    if (this.listener === client) this.listener = null;
    client.end().catch(() => {});
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.ready = this.listen();
    }, 500);
    this.reconnectTimer.unref();
  }

  private receive(payload: string): void {
    if (payload.startsWith(this.ownPrefix)) return;
    let wire: Wire;
    try {
      wire = JSON.parse(payload) as Wire;
    } catch {
      return;
    }
    if (wire.o === this.nodeId) return;
    const { partial, logAfter, logLast, logCount, ...event } = wire.e;
    if (!partial && logAfter === undefined) {
      if (this.readingBack === 0) this.emitter.emit('event', event);
      else
        this.delivered = this.delivered.then(() => {
          this.emitter.emit('event', event);
        });
      return;
    }
    const id = event.task.id;
    const full = Promise.all([
      partial ? this.opts.hydrate(id).then((t) => t ?? event.task) : event.task,
      logAfter !== undefined ? this.readLog(id, logAfter, logLast ?? Infinity, logCount ?? 0) : event.log,
    ]).then(
      ([task, log]): TaskEvent => (log === undefined ? { ...event, task } : { ...event, task, log }),
      (err) => {
        this.onError?.(err);
        return logAfter === undefined ? (event as TaskEvent) : null;
      },
    );
    this.readingBack++;
    this.delivered = this.delivered.then(async () => {
      const e = await full;
      this.readingBack--;
      if (e) this.emitter.emit('event', e);
    });
  }

  /**
   * The output entries of one announcement. On PostgreSQL a task's log ids come from one
   * sequence, so a status entry written meanwhile may fall inside the range: only output
   * and progress up to the last id are taken.
   */
  private async readLog(taskId: string, after: number, last: number, count: number): Promise<TaskLogEvent[]> {
    const rows = await this.opts.loadLog(taskId, after, count + 64);
    return rows.filter((e) => e.id <= last && e.type !== 'status').slice(0, count);
  }

  publish(event: TaskEvent): void {
    this.emitter.emit('event', event);
    if (this.closed) return;
    this.outbox.push(wirePayload(this.nodeId, event));
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  wakeWorker(workerId: string): void {
    if (this.closed) return;
    // Rare, and on a channel of their own: a node from before wakes went across never sees one.
    this.opts.pool
      .query('SELECT pg_notify($1, $2)', [this.wakeChannel, JSON.stringify({ o: this.nodeId, w: workerId })])
      .catch((err) => this.onError?.(err));
  }

  private receiveWake(payload: string): void {
    if (payload.startsWith(this.ownPrefix)) return;
    try {
      const { w } = JSON.parse(payload) as { w?: unknown };
      if (typeof w === 'string') this.emitter.emit('wake', w);
    } catch {
      // not ours
    }
  }

  onWorkerWake(listener: (workerId: string) => void): () => void {
    this.emitter.on('wake', listener);
    return () => this.emitter.off('wake', listener);
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.outbox;
    this.outbox = [];
    if (!batch.length) return;
    // Lost notifications cost latency only: waiting leases also re-check when their wait ends.
    this.opts.pool
      // Named: prepared once per connection instead of parsed on every flush.
      .query({ name: 'task_manager_notify', text: 'SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', values: [this.opts.channel, batch] })
      .catch((err) => this.onError?.(err));
  }

  subscribe(listener: (event: TaskEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }

  async close(): Promise<void> {
    this.flush();
    this.closed = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.emitter.removeAllListeners();
    await this.listener?.end().catch(() => {});
    this.listener = null;
  }
}

/**
 * The NOTIFY text for an event, under MAX_PAYLOAD: whole when it fits; else without the
 * task's inputs and result, and with streamed output as the ids of its log entries; else
 * (a task too large even so) as its id alone.
 */
export function wirePayload(origin: string, event: TaskEvent): string {
  const whole = JSON.stringify({ o: origin, e: event } satisfies Wire);
  if (Buffer.byteLength(whole) <= MAX_PAYLOAD) return whole;
  const { log, ...rest } = event;
  const ref = log?.length ? { logAfter: log[0].id - 1, logLast: log[log.length - 1].id, logCount: log.length } : {};
  const slim = { ...event.task, inputData: {}, parameters: {}, result: null };
  const smaller = JSON.stringify({ o: origin, e: { ...rest, ...(log && !log.length ? { log } : {}), task: slim, partial: true, ...ref } } satisfies Wire);
  if (Buffer.byteLength(smaller) <= MAX_PAYLOAD) return smaller;
  const bare = { id: event.task.id } as TaskRecord;
  return JSON.stringify({ o: origin, e: { type: event.type, at: event.at, task: bare, partial: true, ...ref } } satisfies Wire);
}
