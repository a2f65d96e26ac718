import { Writable } from 'node:stream';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { isoTime } from '../src/core/iso-time.js';
import { Metrics } from '../src/server/metrics.js';
import { requestLogger } from '../src/server/request-log.js';

describe('isoTime', () => {
  const same = (t: number) => expect(isoTime(t)).toBe(new Date(t).toISOString());

  it('formats as Date#toISOString across days, alternating between two days, and at the edges', () => {
    const now = Date.now();
    for (let t = now - 3 * 86_400_000; t < now + 3 * 86_400_000; t += 997_003) same(t);
    // A creation time and an estimate days later, alternating (the create response's pair).
    for (let i = 0; i < 1000; i++) {
      same(now + i);
      same(now + 5 * 86_400_000 + i * 61_001);
    }
    for (const t of [0, -1, 1, 59_999, 86_399_999, 86_400_000, -86_400_000, -86_400_001, 253402300799999, 253402300800000, -62167219200001, 8.64e15, -8.64e15]) same(t);
    // Fractions drop toward zero, as a Date's time value does.
    for (const t of [1.5, -1.5, 1700000000123.7, -1700000000123.7]) same(t);
  });

  it('matches on random times from 1340 to 2603', () => {
    for (let i = 0; i < 20_000; i++) same(Math.floor((Math.random() - 0.3) * 2e13));
  });

  it('throws RangeError for what Date cannot hold, as toISOString does', () => {
    for (const t of [Number.NaN, Number.POSITIVE_INFINITY, 8.64e15 + 1]) expect(() => isoTime(t)).toThrow(RangeError);
  });
});

describe('requestLogger', () => {
  const capture = (level: string) => {
    const lines: Array<Record<string, unknown>> = [];
    const stream = new Writable({
      write(chunk, _enc, cb) {
        for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l));
        cb();
      },
    });
    return { lines, root: pino({ level }, stream) };
  };

  it('logs with the request bindings at enabled levels, children included', () => {
    const { lines, root } = capture('info');
    const log = requestLogger(root, { reqId: 'req_1' }, {});
    log.info({ a: 1 }, 'hello');
    log.debug('not at info');
    log.child({ worker: 'w' }).warn('from a child');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatchObject({ reqId: 'req_1', a: 1, msg: 'hello', level: 30 });
    expect(lines[1]).toMatchObject({ reqId: 'req_1', worker: 'w', msg: 'from a child', level: 40 });
    expect(log.level).toBe('info');
  });

  it('builds no child while nothing is logged at an enabled level', () => {
    const { lines, root } = capture('warn');
    let children = 0;
    const counting = Object.create(root, {
      child: { value: (b: Record<string, unknown>, o?: Record<string, unknown>) => (children++, root.child(b, o)) },
    });
    const log = requestLogger(counting, { reqId: 'req_2' }, {});
    log.info('dropped');
    log.debug('dropped');
    log.trace('dropped');
    expect(children).toBe(0);
    log.error('kept');
    log.warn('kept too');
    expect(children).toBe(1);
    expect(lines.map((l) => [l.reqId, l.msg])).toEqual([
      ['req_2', 'kept'],
      ['req_2', 'kept too'],
    ]);
  });

  it('builds the child at once when the route sets its own level', () => {
    const { lines, root } = capture('warn');
    const log = requestLogger(root, { reqId: 'req_3' }, { level: 'debug' });
    log.debug('route-level debug');
    expect(lines).toMatchObject([{ reqId: 'req_3', msg: 'route-level debug' }]);
  });
});

describe('Metrics.observeHttp', () => {
  it('keeps one series per method, route and status', async () => {
    const m = new Metrics();
    m.observeHttp('POST', '/tasks', 201, 0.002);
    m.observeHttp('POST', '/tasks', 201, 0.2);
    m.observeHttp('GET', '/tasks', 200, 0.0005);
    m.observeHttp('POST', '/tasks', 422, 0.001);
    const text = await m.registry.metrics();
    const count = (labels: string) => Number(new RegExp(`task_manager_http_request_duration_seconds_count\\{${labels}\\} (\\d+)`).exec(text)?.[1]);
    expect(count('method="POST",route="/tasks",status_code="201"')).toBe(2);
    expect(count('method="GET",route="/tasks",status_code="200"')).toBe(1);
    expect(count('method="POST",route="/tasks",status_code="422"')).toBe(1);
    expect(text).toMatch(/task_manager_http_request_duration_seconds_bucket\{le="0.0025",method="POST",route="\/tasks",status_code="201"\} 1/);
  });
});
