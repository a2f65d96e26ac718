import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { EventBus, TaskEvent } from '../../core/events.js';
import type { TaskRecord } from '../../core/task.js';

const MAX_PAYLOAD = 7900; // NOTIFY payloads must stay under 8000 bytes

interface Wire {
  o: string; // origin node
  e: Omit<TaskEvent, 'task'> & { task: TaskRecord; partial?: true };
}

export interface PgEventBusOptions {
  pool: pg.Pool;
  clientConfig: pg.ClientConfig;
  channel: string;
  /** Loads the full task when an event arrived without its inputs and result (too big for NOTIFY). */
  hydrate: (id: string) => Promise<TaskRecord | null>;
  onError?: (err: unknown) => void;
}

/**
 * Task events for every node: delivered locally at once, and to other nodes through
 * LISTEN/NOTIFY. Events of one turn of the event loop go out in one NOTIFY statement.
 */
export class PgEventBus implements EventBus {
  readonly nodeId = randomBytes(6).toString('hex');
  private readonly emitter = new EventEmitter();
  private outbox: string[] = [];
  private flushScheduled = false;
  private listener: pg.Client | null = null;
  private closed = false;
  private reconnectTimer: NodeJS.Timeout | null = null;
  private ready: Promise<void>;

  constructor(private readonly opts: PgEventBusOptions) {
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
    client.on('notification', (msg) => this.receive(msg.payload ?? ''));
    client.on('error', (err) => {
      this.opts.onError?.(err);
      this.scheduleReconnect(client);
    });
    client.on('end', () => this.scheduleReconnect(client));
    try {
      await client.connect();
      await client.query(`LISTEN ${this.opts.channel}`);
      this.listener = client;
    } catch (err) {
      this.opts.onError?.(err);
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
    let wire: Wire;
    try {
      wire = JSON.parse(payload) as Wire;
    } catch {
      return;
    }
    if (wire.o === this.nodeId) return;
    const { partial, ...event } = wire.e;
    if (!partial) {
      this.emitter.emit('event', event);
      return;
    }
    this.opts.hydrate(event.task.id).then(
      (task) => this.emitter.emit('event', { ...event, task: task ?? event.task }),
      () => this.emitter.emit('event', event),
    );
  }

  publish(event: TaskEvent): void {
    this.emitter.emit('event', event);
    if (this.closed) return;
    let payload = JSON.stringify({ o: this.nodeId, e: event } satisfies Wire);
    if (Buffer.byteLength(payload) > MAX_PAYLOAD) {
      const slim = { ...event.task, inputData: {}, parameters: {}, result: null };
      payload = JSON.stringify({ o: this.nodeId, e: { ...event, task: slim, partial: true } } satisfies Wire);
    }
    this.outbox.push(payload);
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => this.flush());
    }
  }

  private flush(): void {
    this.flushScheduled = false;
    const batch = this.outbox;
    this.outbox = [];
    if (!batch.length) return;
    // Lost notifications cost latency only: waiting leases also re-check when their wait ends.
    this.opts.pool
      .query('SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p', [this.opts.channel, batch])
      .catch((err) => this.opts.onError?.(err));
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
