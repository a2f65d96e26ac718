import { afterEach, describe, expect, it } from 'vitest';
import { MemoryRateLimitStore } from '../src/server/rate-limit.js';
import { expectErrorShape, json, startServer, type TestServer } from './helpers/server.js';

describe('rate limiting over HTTP', () => {
  let srv: TestServer | null = null;
  afterEach(async () => {
    await srv?.close();
    srv = null;
  });

  it('allows the burst, then answers 429 RATE_LIMITED with Retry-After and reset headers', async () => {
    srv = await startServer({ env: { TASK_MANAGER_RATE_LIMIT: 'true' } });
    const remaining: number[] = [];
    for (let i = 0; i < 20; i++) {
      const res = await fetch(`${srv.url}/tasks?limit=1`);
      expect(res.status).toBe(200);
      remaining.push(Number(res.headers.get('x-ratelimit-remaining')));
      const reset = Number(res.headers.get('x-ratelimit-reset'));
      expect(reset).toBeGreaterThan(Date.now() / 1000);
      expect(reset).toBeLessThanOrEqual(Math.ceil(Date.now() / 1000) + 10);
    }
    expect(remaining).toEqual(Array.from({ length: 20 }, (_, i) => 19 - i));
    // Limit, Remaining and Reset describe the same (binding) window.
    const limited = await fetch(`${srv.url}/tasks`);
    expect(limited.status).toBe(429);
    expect(limited.headers.get('x-ratelimit-remaining')).toBe('0');
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(Number(limited.headers.get('retry-after'))).toBeLessThanOrEqual(10);
    expect(limited.headers.get('x-ratelimit-reset')).toMatch(/^\d{10}$/);
    const body = await json(limited);
    expectErrorShape(body, 'RATE_LIMITED');
    // 404s and bad requests count too, and get the same answer.
    expect((await fetch(`${srv.url}/nope`)).status).toBe(429);
  });

  it('exempts /health and /metrics', async () => {
    srv = await startServer({ env: { TASK_MANAGER_RATE_LIMIT: 'true', TASK_MANAGER_RATE_LIMIT_BURST: '2' } });
    for (let i = 0; i < 2; i++) expect((await fetch(`${srv.url}/tasks`)).status).toBe(200);
    expect((await fetch(`${srv.url}/tasks`)).status).toBe(429);
    for (let i = 0; i < 5; i++) {
      const h = await fetch(`${srv.url}/health`);
      expect(h.status).toBe(200);
      expect(h.headers.get('x-ratelimit-remaining')).toBeNull();
      expect((await fetch(`${srv.url}/metrics`)).status).toBe(200);
    }
  });

  it('enforces the per-minute quota separately from the burst window', async () => {
    srv = await startServer({
      env: { TASK_MANAGER_RATE_LIMIT: 'true', TASK_MANAGER_RATE_LIMIT_PER_MINUTE: '5', TASK_MANAGER_RATE_LIMIT_BURST: '100' },
    });
    for (let i = 0; i < 5; i++) expect((await fetch(`${srv.url}/tasks`)).status).toBe(200);
    const res = await fetch(`${srv.url}/tasks`);
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(10);
  });
});

describe('MemoryRateLimitStore', () => {
  const windows = [
    { limit: 100, windowMs: 60_000 },
    { limit: 20, windowMs: 10_000 },
  ];

  it('resets the burst window after it passes but keeps the minute count', async () => {
    const s = new MemoryRateLimitStore();
    const t0 = 1_000_000;
    for (let i = 0; i < 20; i++) expect((await s.hit('ip', windows, t0)).allowed).toBe(true);
    const blocked = await s.hit('ip', windows, t0 + 5_000);
    expect(blocked).toEqual({ allowed: false, limit: 20, remaining: 0, resetAt: t0 + 10_000 });
    const after = await s.hit('ip', windows, t0 + 10_001);
    expect(after.allowed).toBe(true);
    expect(after.remaining).toBe(19);
    await s.close();
  });

  it('limits at 100 per minute even when every burst window has room', async () => {
    const s = new MemoryRateLimitStore();
    const t0 = 0;
    let allowed = 0;
    for (let second = 0; second < 60; second++) {
      for (let i = 0; i < 5; i++) if ((await s.hit('ip', windows, t0 + second * 1000 + i)).allowed) allowed++;
    }
    expect(allowed).toBe(100);
    expect((await s.hit('ip', windows, t0 + 60_001)).allowed).toBe(true);
    await s.close();
  });

  it('keeps clients apart', async () => {
    const s = new MemoryRateLimitStore();
    for (let i = 0; i < 20; i++) await s.hit('a', windows, 0);
    expect((await s.hit('a', windows, 1)).allowed).toBe(false);
    expect((await s.hit('b', windows, 1)).allowed).toBe(true);
    await s.close();
  });
});
