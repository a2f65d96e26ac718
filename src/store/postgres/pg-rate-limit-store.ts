import type pg from 'pg';
import type { RateDecision, RateLimitStore, RateWindow } from '../../core/rate-limit.js';

/** Rate-limit counters shared by every node, in an UNLOGGED table (see migration 001). */
export class PgRateLimitStore implements RateLimitStore {
  constructor(private readonly pool: pg.Pool) {}

  async hit(key: string, windows: RateWindow[], now: number): Promise<RateDecision> {
    const { rows } = await this.pool.query<{ o_window_ms: number; o_reset_at: number; o_count: number; o_allowed: boolean }>(
      'SELECT * FROM rate_limit_hit($1, $2, $3, $4)',
      [key, windows.map((w) => w.windowMs), windows.map((w) => w.limit), now],
    );
    const state = windows.map((w) => {
      const r = rows.find((x) => x.o_window_ms === w.windowMs)!;
      return { limit: w.limit, count: r.o_count, resetAt: r.o_reset_at };
    });
    const allowed = rows[0]?.o_allowed ?? true;
    if (!allowed) {
      const binding = state.filter((s) => s.count >= s.limit).reduce((a, b) => (b.resetAt > a.resetAt ? b : a));
      return { allowed, limit: binding.limit, remaining: 0, resetAt: binding.resetAt };
    }
    const tightest = state.reduce((a, b) => (b.limit - b.count < a.limit - a.count ? b : a));
    return { allowed, limit: tightest.limit, remaining: tightest.limit - tightest.count, resetAt: tightest.resetAt };
  }

  async close(): Promise<void> {}
}
