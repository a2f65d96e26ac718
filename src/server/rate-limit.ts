import type { FastifyInstance } from 'fastify';
import { AppError } from '../core/errors.js';
import type { RateDecision, RateLimitStore, RateWindow } from '../core/rate-limit.js';
import { sendError } from './error-handling.js';

export type { RateLimitStore };

interface Counter {
  count: number;
  resetAt: number;
}

export class MemoryRateLimitStore implements RateLimitStore {
  private readonly counters = new Map<string, Counter[]>();
  private readonly sweeper: NodeJS.Timeout;

  constructor() {
    // Drop idle clients so memory follows the active set, not every IP ever seen.
    this.sweeper = setInterval(() => {
      const now = Date.now();
      for (const [k, cs] of this.counters) if (cs.every((c) => c.resetAt <= now)) this.counters.delete(k);
    }, 60_000);
    this.sweeper.unref();
  }

  async hit(key: string, windows: RateWindow[], now: number): Promise<RateDecision> {
    let counters = this.counters.get(key);
    if (!counters) {
      counters = windows.map((w) => ({ count: 0, resetAt: now + w.windowMs }));
      this.counters.set(key, counters);
    }
    counters.forEach((c, i) => {
      if (c.resetAt <= now) {
        c.count = 0;
        c.resetAt = now + windows[i].windowMs;
      }
    });
    const blocked = counters.map((c, i) => c.count >= windows[i].limit);
    if (blocked.some(Boolean)) {
      const resetAt = Math.max(...counters.filter((_, i) => blocked[i]).map((c) => c.resetAt));
      const i = counters.findIndex((c, j) => blocked[j] && c.resetAt === resetAt);
      return { allowed: false, limit: windows[i].limit, remaining: 0, resetAt };
    }
    for (const c of counters) c.count++;
    let best = 0;
    counters.forEach((c, i) => {
      if (windows[i].limit - c.count < windows[best].limit - counters![best].count) best = i;
    });
    return { allowed: true, limit: windows[best].limit, remaining: windows[best].limit - counters[best].count, resetAt: counters[best].resetAt };
  }

  async close(): Promise<void> {
    clearInterval(this.sweeper);
  }
}

export interface RateLimitOptions {
  perMinute: number;
  burst: number;
  burstWindowSeconds: number;
  store: RateLimitStore;
  exempt: (url: string, method: string) => boolean;
}

/** Per-client-IP limits: a per-minute quota and a short burst window, both enforced. */
export function installRateLimit(app: FastifyInstance, opts: RateLimitOptions): void {
  const windows: RateWindow[] = [
    { limit: opts.perMinute, windowMs: 60_000 },
    { limit: opts.burst, windowMs: opts.burstWindowSeconds * 1000 },
  ];
  app.addHook('onRequest', async (request, reply) => {
    if (opts.exempt(request.url, request.method)) return;
    const now = Date.now();
    let d: RateDecision;
    try {
      d = await opts.store.hit(request.ip, windows, now);
    } catch (err) {
      // Fail open: a limiter outage must not take the API down with it.
      request.log.warn({ err }, 'rate limiter unavailable; request allowed');
      return;
    }
    const reset = Math.ceil(d.resetAt / 1000);
    // Limit, Remaining and Reset all describe the window that binds now.
    reply.header('X-RateLimit-Limit', d.limit);
    reply.header('X-RateLimit-Remaining', d.remaining);
    reply.header('X-RateLimit-Reset', reset);
    if (!d.allowed) {
      const retryAfter = Math.max(1, Math.ceil((d.resetAt - now) / 1000));
      return sendError(
        reply,
        new AppError('RATE_LIMITED', `Rate limit exceeded; retry in ${retryAfter} s`, {
          details: { limit_per_minute: opts.perMinute, burst: opts.burst, burst_window_seconds: opts.burstWindowSeconds },
          headers: { 'retry-after': String(retryAfter) },
        }),
      );
    }
  });
}
