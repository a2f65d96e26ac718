/**
 * Sends the webhook deliveries the store queues (a trigger adds one, in the transition's own
 * transaction, whenever a task with a webhook enters a subscribed status). At least once:
 * a delivery is claimed for a while, POSTed, and recorded; a crash before the record lets the
 * claim lapse and another pass (on this node or another) sends it again. Receivers
 * de-duplicate by the `id` field / `x-taskmanager-delivery` header.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import { isAppError } from '../core/errors.js';
import type { EventBus } from '../core/events.js';
import type { DeliveryResult, TaskStore, WebhookDelivery } from '../core/store.js';
import type { TaskRecord } from '../core/task.js';
import { makeGuardedLookup, PRIVATE_ADDRESS_CODE, validateWebhookUrl } from './url-guard.js';

export interface WebhookLogger {
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
}

export interface WebhookDispatcherOptions {
  store: TaskStore;
  /** When given, a pass runs right after any task event, not only on the interval. */
  bus?: EventBus;
  /** HMAC-SHA256 key of `x-taskmanager-signature`. */
  secret: string;
  /** Lets deliveries go to private / loopback addresses (tests, trusted networks). */
  allowPrivate: boolean;
  /** The task's JSON in the payload (the API's shape); may be async. */
  serialize: (task: TaskRecord) => Record<string, unknown> | Promise<Record<string, unknown>>;
  /** Poll interval for due retries (default 1000). */
  intervalMs?: number;
  /** Hard limit on one attempt, connect to last byte (default 10000). */
  timeoutMs?: number;
  /** Attempts before a delivery is given up as failed (default 8). */
  maxAttempts?: number;
  /** Wait after attempt n fails is backoffMs[n-1]; the last value repeats. */
  backoffMs?: number[];
  /** Deliveries claimed per pass (default 20). */
  batch?: number;
  /** Deliveries in flight at once across passes (default: batch). */
  concurrency?: number;
  log?: WebhookLogger;
}

export const DEFAULT_BACKOFF_MS = [1000, 5000, 30_000, 120_000, 600_000, 1_800_000, 3_600_000];
export const SIGNATURE_HEADER = 'x-taskmanager-signature';
export const USER_AGENT = 'task-manager-webhooks/1';
/** Response bytes read (and discarded) before the connection is dropped. */
const RESPONSE_CAP = 16 * 1024;
const ERROR_MAX = 300;

/** `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>` (Stripe-style). */
export function signPayload(secret: string, timestamp: number, body: string | Buffer): string {
  const mac = createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
  return `t=${timestamp},v1=${mac}`;
}

/**
 * Checks an `x-taskmanager-signature` header against the raw request body: the HMAC must
 * match (constant-time; any of several `v1=` entries, for secret rotation) and `t` must be
 * within `toleranceSeconds` of `now` (epoch ms), which rejects replays. Never throws.
 */
export function verifySignature(
  secret: string,
  header: string | undefined | null,
  body: string | Buffer,
  toleranceSeconds = 300,
  now: number = Date.now(),
): boolean {
  if (typeof header !== 'string' || header.length > 4096) return false;
  let t: number | null = null;
  const sigs: string[] = [];
  for (const part of header.split(',')) {
    const eq = part.indexOf('=');
    if (eq === -1) continue;
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    if (k === 't' && /^\d{1,12}$/.test(v)) t = Number(v);
    else if (k === 'v1' && /^[0-9a-f]{64}$/i.test(v)) sigs.push(v.toLowerCase());
  }
  if (t === null || sigs.length === 0) return false;
  if (Math.abs(now / 1000 - t) > toleranceSeconds) return false;
  const expected = Buffer.from(createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex'), 'utf8');
  let ok = false;
  for (const s of sigs) ok = timingSafeEqual(expected, Buffer.from(s, 'utf8')) || ok;
  return ok;
}

interface AttemptOutcome {
  statusCode: number | null;
  error: string | null;
}

/** The origin and path of a URL, for logs (no query: it may carry a token). */
function redact(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '(invalid url)';
  }
}

function describeError(err: unknown): string {
  const e = err as NodeJS.ErrnoException | null;
  let msg: string;
  switch (e?.code) {
    case PRIVATE_ADDRESS_CODE:
      msg = `refused: resolves to a private address (${(e as { address?: string }).address ?? '?'})`;
      break;
    case 'ECONNREFUSED':
      msg = 'connection refused';
      break;
    case 'ECONNRESET':
      msg = 'connection reset';
      break;
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      msg = `DNS lookup failed (${e.code})`;
      break;
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      msg = `unreachable (${e.code})`;
      break;
    default:
      msg = e?.code ? `${e.code}: ${e.message}` : String(e?.message ?? err);
  }
  return msg.slice(0, ERROR_MAX);
}

export class WebhookDispatcher {
  private readonly store: TaskStore;
  private readonly intervalMs: number;
  private readonly timeoutMs: number;
  private readonly maxAttempts: number;
  private readonly backoffMs: number[];
  private readonly batch: number;
  private readonly concurrency: number;
  private readonly lookup: LookupFunction;
  // Own agents without keep-alive: a pooled socket never skips the guarded lookup, and
  // another dispatcher's (allowPrivate) sockets are never shared.
  private readonly httpAgent = new http.Agent({ keepAlive: false });
  private readonly httpsAgent = new https.Agent({ keepAlive: false });
  private timer: NodeJS.Timeout | null = null;
  private wakeHandle: NodeJS.Immediate | null = null;
  private unsubscribe: (() => void) | null = null;
  private stopped = false;
  /** Slots taken by claimed (or being claimed) deliveries. */
  private busy = 0;
  private readonly passes = new Set<Promise<number>>();
  private readonly aborts = new Set<AbortController>();

  constructor(private readonly opts: WebhookDispatcherOptions) {
    this.store = opts.store;
    this.intervalMs = opts.intervalMs ?? 1000;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.maxAttempts = Math.max(1, opts.maxAttempts ?? 8);
    this.backoffMs = opts.backoffMs && opts.backoffMs.length > 0 ? opts.backoffMs : DEFAULT_BACKOFF_MS;
    this.batch = Math.max(1, opts.batch ?? 20);
    this.concurrency = Math.max(1, opts.concurrency ?? this.batch);
    this.lookup = makeGuardedLookup({ allowPrivate: opts.allowPrivate });
  }

  start(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
    this.timer.unref();
    if (this.opts.bus) {
      this.unsubscribe = this.opts.bus.subscribe((e) => {
        // Only a status change of a task with a webhook can queue a delivery.
        if (e.type === 'progress') return;
        if (e.task && e.task.webhookUrl === null) return;
        this.wake();
      });
    }
    this.wake(); // whatever came due while we were down
  }

  /** Runs a pass soon; events of one turn of the event loop share it. */
  private wake(): void {
    if (this.wakeHandle || this.stopped) return;
    this.wakeHandle = setImmediate(() => {
      this.wakeHandle = null;
      void this.tick();
    });
  }

  /**
   * One pass: claims due deliveries (as many as free slots allow, up to `batch`), sends
   * them concurrently, records each outcome. Resolves with the number attempted; never
   * rejects. Passes may overlap: claims are exclusive in the store.
   */
  tick(): Promise<number> {
    if (this.stopped) return Promise.resolve(0);
    const slots = Math.min(this.batch, this.concurrency - this.busy);
    if (slots <= 0) return Promise.resolve(0);
    this.busy += slots;
    const pass = this.pass(slots).finally(() => {
      this.passes.delete(pass);
    });
    this.passes.add(pass);
    return pass;
  }

  private async pass(slots: number): Promise<number> {
    let held = slots;
    try {
      let claimed: WebhookDelivery[];
      try {
        claimed = await this.store.claimDeliveries(Date.now(), slots, this.timeoutMs + 5000);
      } catch (err) {
        this.opts.log?.warn({ err }, 'webhook pass: claiming deliveries failed');
        return 0;
      }
      // Give back the slots this pass did not fill.
      this.busy -= held - claimed.length;
      held = claimed.length;
      await Promise.all(
        claimed.map((d) =>
          this.deliver(d)
            .catch((err) => this.opts.log?.warn({ err, deliveryId: d.id, taskId: d.taskId }, 'webhook delivery crashed'))
            .finally(() => {
              this.busy -= 1;
              held -= 1;
            }),
        ),
      );
      // A full batch suggests more are due: go again rather than wait for the interval.
      if (claimed.length === slots && claimed.length === this.batch) this.wake();
      return claimed.length;
    } finally {
      this.busy -= held;
    }
  }

  private async deliver(d: WebhookDelivery): Promise<void> {
    const attempt = d.attempts + 1;
    const event = `task.${d.event}`;
    let outcome: AttemptOutcome;
    const task = await this.store.getTask(d.taskId);
    if (!task) {
      outcome = { statusCode: null, error: 'task not found' };
    } else {
      let body: string | null = null;
      try {
        body = JSON.stringify({
          id: `whd_${d.id}`,
          event,
          created_at: new Date(d.createdAt).toISOString(),
          attempt,
          task: await this.opts.serialize(task),
        });
      } catch (err) {
        this.opts.log?.warn({ err, deliveryId: d.id, taskId: d.taskId }, 'webhook delivery: building the payload failed');
      }
      outcome =
        body === null
          ? { statusCode: null, error: 'payload could not be built' }
          : await this.post(d.url, body, { event, deliveryId: `whd_${d.id}` });
    }

    const now = Date.now();
    const ok = outcome.statusCode !== null && outcome.statusCode >= 200 && outcome.statusCode < 300;
    const retryAt =
      ok || !task || attempt >= this.maxAttempts
        ? null
        : now + this.backoffMs[Math.min(attempt - 1, this.backoffMs.length - 1)];
    const result: DeliveryResult = ok
      ? { ok: true, statusCode: outcome.statusCode, error: null, retryAt: null }
      : {
          ok: false,
          statusCode: outcome.statusCode,
          error: outcome.error ?? `HTTP ${outcome.statusCode}`,
          retryAt,
        };
    try {
      await this.store.recordDelivery(d.id, result, now);
    } catch (err) {
      // The claim lapses and the delivery is sent again: at least once.
      this.opts.log?.warn({ err, deliveryId: d.id, taskId: d.taskId }, 'webhook delivery: recording the outcome failed');
      return;
    }
    if (!ok) {
      const info = {
        deliveryId: d.id,
        taskId: d.taskId,
        event,
        url: redact(d.url),
        attempt,
        statusCode: result.statusCode,
        error: result.error,
        retryAt: retryAt === null ? null : new Date(retryAt).toISOString(),
      };
      if (retryAt === null) this.opts.log?.warn(info, 'webhook delivery failed; giving up');
      else this.opts.log?.info(info, 'webhook delivery failed; will retry');
    }
  }

  /** One POST: resolves with the status code, or an error message; never rejects. */
  private post(rawUrl: string, body: string, meta: { event: string; deliveryId: string }): Promise<AttemptOutcome> {
    let url: URL;
    try {
      // Checked again at send time: the URL may predate the guard or a config change.
      url = validateWebhookUrl(rawUrl, { allowPrivate: this.opts.allowPrivate });
    } catch (err) {
      const reason = isAppError(err) ? (err.details?.reason as string | undefined) : undefined;
      const msg =
        reason === 'private_address' || reason === 'localhost_not_allowed'
          ? 'refused: private address'
          : `refused: ${isAppError(err) ? err.message : String(err)}`;
      return Promise.resolve({ statusCode: null, error: msg.slice(0, ERROR_MAX) });
    }

    const timestamp = Math.floor(Date.now() / 1000);
    const isHttps = url.protocol === 'https:';
    const ac = new AbortController();
    this.aborts.add(ac);

    return new Promise<AttemptOutcome>((resolve) => {
      let settled = false;
      const finish = (o: AttemptOutcome) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.aborts.delete(ac);
        resolve(o);
        if (!req.destroyed) req.destroy();
      };
      const timer = setTimeout(() => finish({ statusCode: null, error: `timeout after ${this.timeoutMs} ms` }), this.timeoutMs);

      const req = (isHttps ? https : http).request(url, {
        method: 'POST',
        agent: isHttps ? this.httpsAgent : this.httpAgent,
        lookup: this.lookup,
        signal: ac.signal,
        headers: {
          'content-type': 'application/json',
          'content-length': Buffer.byteLength(body),
          'user-agent': USER_AGENT,
          'x-taskmanager-event': meta.event,
          'x-taskmanager-delivery': meta.deliveryId,
          [SIGNATURE_HEADER]: signPayload(this.opts.secret, timestamp, body),
        },
      });
      req.on('response', (res) => {
        const statusCode = res.statusCode ?? null;
        let read = 0;
        res.on('data', (chunk: Buffer) => {
          read += chunk.length;
          if (read > RESPONSE_CAP) finish({ statusCode, error: null }); // enough; drop the rest
        });
        res.on('end', () => finish({ statusCode, error: null }));
        res.on('error', () => finish({ statusCode, error: null }));
        res.on('aborted', () => finish({ statusCode, error: null }));
      });
      req.on('error', (err) => {
        if (ac.signal.aborted) finish({ statusCode: null, error: 'aborted: dispatcher stopping' });
        else finish({ statusCode: null, error: describeError(err) });
      });
      req.end(body);
    });
  }

  /**
   * Stops the loop and waits for deliveries in flight, at most `timeoutMs` (each attempt is
   * bounded by it anyway); any still running then are aborted and their claims lapse, so
   * they are sent again later. Call before the store closes.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.wakeHandle) clearImmediate(this.wakeHandle);
    this.wakeHandle = null;
    this.unsubscribe?.();
    this.unsubscribe = null;
    if (this.passes.size > 0) {
      let t: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((r) => {
        t = setTimeout(r, this.timeoutMs + 1000);
        t.unref();
      });
      await Promise.race([Promise.allSettled([...this.passes]), deadline]);
      clearTimeout(t);
      if (this.passes.size > 0) {
        for (const ac of this.aborts) ac.abort();
        await Promise.race([Promise.allSettled([...this.passes]), new Promise((r) => setTimeout(r, 1000).unref())]);
      }
    }
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
  }
}
