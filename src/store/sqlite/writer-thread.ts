// The SQLite store's writer thread: it owns the write connection, commits every batch it is
// sent in one transaction, fdatasyncs the WAL before acknowledging durable writes, and
// answers with the outcomes. The event loop that serves HTTP never waits on a commit.
import { closeSync, fdatasyncSync, openSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { parentPort, workerData } from 'node:worker_threads';
import { newHistogram, observe } from '../../core/histogram.js';
import type { CommitStats } from '../../core/store.js';
import { isDurable, openConnection, SqliteWriter, type Outcome, type WriteOp } from './writer.js';

export interface WriterInit {
  path: string;
  /** The WAL to fdatasync before acknowledging durable writes; null when not FULL. */
  walPath: string | null;
  maxBytes?: number;
}

/** From the store to this thread. */
export type ToWriter = { type: 'batch'; ids: number[]; ops: WriteOp[] } | { type: 'maxBytes'; bytes: number } | { type: 'close' };

export interface WireError {
  name: string;
  message: string;
  code?: string;
}

/** From this thread to the store. */
export type FromWriter =
  /** outcomes: null when every write succeeded with no value (creates), the common case. */
  | { type: 'done'; ids: number[]; outcomes: Array<{ ok: true; value: unknown } | { ok: false; err: WireError }> | null }
  | { type: 'failed'; ids: number[]; err: WireError }
  | { type: 'fatal'; err: WireError }
  /** At most once a second, after a change. */
  | { type: 'stats'; stats: CommitStats }
  | { type: 'closed' };

export const toWire = (err: unknown): WireError => {
  const e = err as { name?: string; message?: string; code?: string } | null;
  return { name: e?.name ?? 'Error', message: e?.message ?? String(err), code: typeof e?.code === 'string' ? e.code : undefined };
};

const port = parentPort!;
const init = workerData as WriterInit;
let writer: SqliteWriter | null = null;
let openError: WireError | null = null;
try {
  writer = new SqliteWriter(openConnection(init.path));
  if (init.maxBytes) writer.setMaxBytes(init.maxBytes);
} catch (err) {
  openError = toWire(err);
  port.postMessage({ type: 'fatal', err: openError } satisfies FromWriter);
}

let queue: Array<{ id: number; op: WriteOp }> = [];
let scheduled = false;
let walFd: number | null = null;

const SECONDS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1];
const stats: CommitStats = {
  groupWrites: newHistogram([1, 2, 5, 10, 25, 50, 100, 250, 500, 1000]),
  commitSeconds: newHistogram(SECONDS),
  fsyncSeconds: newHistogram(SECONDS),
};
let statsChanged = false;
const statsTimer = setInterval(() => {
  if (!statsChanged) return;
  statsChanged = false;
  port.postMessage({ type: 'stats', stats } satisfies FromWriter);
}, 1000);
statsTimer.unref();

port.on('message', (m: ToWriter) => {
  if (m.type === 'batch') {
    for (let i = 0; i < m.ids.length; i++) queue.push({ id: m.ids[i], op: m.ops[i] });
    // Everything that arrives in this turn commits together.
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  } else if (m.type === 'maxBytes') {
    flush();
    writer?.setMaxBytes(m.bytes);
  } else {
    flush();
    close();
  }
});

function flush(): void {
  scheduled = false;
  const batch = queue;
  queue = [];
  if (batch.length === 0) return;
  if (!writer) {
    port.postMessage({ type: 'failed', ids: batch.map((b) => b.id), err: openError! } satisfies FromWriter);
    return;
  }
  let outcomes: Outcome[];
  const started = performance.now();
  try {
    outcomes = writer.execute(batch.map((b) => b.op));
    observe(stats.commitSeconds, (performance.now() - started) / 1000);
    observe(stats.groupWrites, batch.length);
    statsChanged = true;
  } catch (err) {
    port.postMessage({ type: 'failed', ids: batch.map((b) => b.id), err: toWire(err) } satisfies FromWriter);
    return;
  }
  const now = new Reply();
  const later = new Reply();
  batch.forEach((b, i) => {
    const o = outcomes[i];
    (o.ok && init.walPath && isDurable(b.op) ? later : now).add(b.id, o);
  });
  // Worker-side writes are acknowledged on commit; creates and cancels once the WAL is on
  // disk. The fdatasync blocks this thread only: what arrives meanwhile is the next group.
  if (now.ids.length) port.postMessage(now.message());
  if (!later.ids.length) return;
  try {
    walFd ??= openSync(init.walPath!, 'r');
    const syncing = performance.now();
    fdatasyncSync(walFd);
    observe(stats.fsyncSeconds, (performance.now() - syncing) / 1000);
  } catch (err) {
    if (walFd !== null) closeQuietly(walFd);
    walFd = null; // reopen next time
    port.postMessage({ type: 'failed', ids: later.ids, err: { name: 'SqliteError', message: `fdatasync failed: ${String(err)}`, code: 'SQLITE_IOERR' } } satisfies FromWriter);
    return;
  }
  port.postMessage(later.message());
}

/** A 'done' message being built; its outcomes are sent only if one of them says something. */
class Reply {
  readonly ids: number[] = [];
  private readonly outcomes: Array<{ ok: true; value: unknown } | { ok: false; err: WireError }> = [];
  private plain = true;

  add(id: number, o: Outcome): void {
    this.ids.push(id);
    this.outcomes.push(o.ok ? o : { ok: false, err: toWire(o.err) });
    if (!o.ok || o.value !== undefined) this.plain = false;
  }

  message(): FromWriter {
    return { type: 'done', ids: this.ids, outcomes: this.plain ? null : this.outcomes };
  }
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already gone
  }
}

function close(): void {
  clearInterval(statsTimer);
  try {
    writer?.db.close();
  } catch {
    // closing is best effort; every acknowledged write is already committed
  }
  if (walFd !== null) closeQuietly(walFd);
  port.postMessage({ type: 'closed' } satisfies FromWriter);
  port.close();
}
