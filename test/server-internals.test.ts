import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { newTaskId, uuidv7 } from '../src/core/ids.js';
import { isoTime } from '../src/core/iso-time.js';
import { startServer } from './helpers/server.js';
import { Metrics } from '../src/server/metrics.js';
import { requestLogger } from '../src/server/request-log.js';
import { createdJson } from '../src/server/serialize.js';
import { loadCatalog } from '../src/server/app.js';
import { newTaskRecord, type TaskRecord } from '../src/core/task.js';
import { EtaEstimator } from '../src/scheduler/eta-estimator.js';

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
  it('keeps one series per method, route and status, with cumulative buckets, sum and count', async () => {
    const m = new Metrics();
    m.observeHttp('POST', '/tasks', 201, 0.002);
    m.observeHttp('POST', '/tasks', 201, 0.2);
    m.observeHttp('GET', '/tasks', 200, 0.0005);
    m.observeHttp('POST', '/tasks', 422, 0.001);
    m.observeHttp('GET', '/tasks', 200, 7);
    const text = await m.render([]);
    const value = (series: string, labels: string) =>
      Number(
        new RegExp(`^task_manager_http_request_duration_seconds_${series}\\{${labels.replace(/[+.]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(text)?.[1],
      );
    const post201 = 'method="POST",route="/tasks",status_code="201"';
    expect(value('count', post201)).toBe(2);
    expect(value('sum', post201)).toBeCloseTo(0.202, 9);
    expect(value('count', 'method="GET",route="/tasks",status_code="200"')).toBe(2);
    expect(value('count', 'method="POST",route="/tasks",status_code="422"')).toBe(1);
    expect(value('bucket', `le="0.001",${post201}`)).toBe(0);
    expect(value('bucket', `le="0.0025",${post201}`)).toBe(1);
    expect(value('bucket', `le="0.1",${post201}`)).toBe(1);
    expect(value('bucket', `le="0.25",${post201}`)).toBe(2);
    expect(value('bucket', `le="+Inf",${post201}`)).toBe(2);
    // A value on a bound counts in that bucket; one above every bound only in +Inf.
    expect(value('bucket', 'le="0.001",method="POST",route="/tasks",status_code="422"')).toBe(1);
    expect(value('bucket', 'le="2.5",method="GET",route="/tasks",status_code="200"')).toBe(1);
    expect(value('bucket', 'le="+Inf",method="GET",route="/tasks",status_code="200"')).toBe(2);
    expect(text).toMatch(/^# TYPE task_manager_http_request_duration_seconds histogram$/m);
    // The process metrics still come with it.
    expect(text).toMatch(/^task_manager_process_cpu_user_seconds_total /m);
  });
});

describe('uuidv7', () => {
  const RE = /^([0-9a-f]{8})-([0-9a-f]{4})-7([0-9a-f]{3})-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

  it('writes RFC 9562 version 7 ids whose first 48 bits are the time', () => {
    const at = Date.now() + 10 ** 9; // ahead of any id made before in this file
    for (const now of [at, at + 1, at + 86_400_000]) {
      const m = RE.exec(uuidv7(now));
      expect(m).not.toBeNull();
      expect(parseInt(m![1] + m![2], 16)).toBe(now);
    }
  });

  it('sorts in creation order within a millisecond, across milliseconds and past the counter', () => {
    const base = Date.now() + 3 * 10 ** 9;
    const ids: string[] = [];
    for (let i = 0; i < 5000; i++) ids.push(uuidv7(base)); // more than the 12-bit counter holds
    for (let i = 0; i < 50; i++) ids.push(uuidv7(base + 1 + Math.floor(i / 10)));
    ids.push(uuidv7(base - 5)); // a clock step back still sorts after
    expect([...ids].sort()).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    for (const id of ids) expect(id).toMatch(RE);
  });

  it('is unique over many calls', () => {
    const ids = new Set<string>();
    for (let i = 0; i < 100_000; i++) ids.add(newTaskId());
    expect(ids.size).toBe(100_000);
  });
});

describe('createdJson', () => {
  const record = (over: Partial<TaskRecord>): TaskRecord => ({ ...newTaskRecord({
    id: newTaskId(),
    taskType: 'text_generation',
    modelName: 'tiny-llama',
    inputData: { prompt: 'x' },
    parameters: {},
    priority: 0,
    maxAttempts: 3,
    timeoutMs: 60_000,
    createdAt: Date.now(),
  }), ...over });

  it('writes the text JSON.stringify gives for the same fields, in the same order', () => {
    const names = ['tiny-llama', 'a "quoted" \\ name', 'ünï\u2028cødé\n\t', '😀', ''];
    const cases: Array<[TaskRecord, number | null, number | null]> = [];
    for (const modelName of names) {
      cases.push([record({ modelName }), Date.now() + 1234, 0]);
      cases.push([record({ modelName, priority: -100, status: 'completed' as const }), null, null]);
      cases.push([record({ modelName, priority: 100, createdAt: 0 }), 1.5, 41]);
    }
    for (const [t, eta, position] of cases) {
      const expected = JSON.stringify({
        task_id: t.id,
        status: t.status,
        task_type: t.taskType,
        model_name: t.modelName,
        priority: t.priority,
        created_at: new Date(t.createdAt).toISOString(),
        estimated_completion: eta === null ? null : new Date(eta).toISOString(),
        queue_position: position,
      });
      expect(createdJson(t, eta, position)).toBe(expected);
    }
  });
});

describe('HTTP latency metrics through a listening server', () => {
  for (const logger of [undefined, false] as const) {
    it(`counts every finished request by route and status (logger ${logger === false ? 'off' : 'on'})`, async () => {
      const srv = await startServer({ logger });
      try {
        const body = JSON.stringify({ task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'hi' } });
        for (let i = 0; i < 3; i++) {
          const res = await fetch(`${srv.url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
          expect(res.status).toBe(201);
        }
        expect((await fetch(`${srv.url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' })).status).toBe(400);
        expect((await fetch(`${srv.url}/no-such-route`)).status).toBe(404);
        const text = await (await fetch(`${srv.url}/metrics`)).text();
        const count = (labels: string) =>
          Number(new RegExp(`^task_manager_http_request_duration_seconds_count\\{${labels}\\} (\\d+)$`, 'm').exec(text)?.[1]);
        expect(count('method="POST",route="/tasks",status_code="201"')).toBe(3);
        expect(count('method="POST",route="/tasks",status_code="400"')).toBe(1);
        expect(count('method="GET",route="unmatched",status_code="404"')).toBe(1);
      } finally {
        await srv.close();
      }
    });
  }
});

describe('loadCatalog', () => {
  it("resolves a relative model_path against the catalog file's directory, not the working directory", () => {
    const dir = mkdtempSync(join(tmpdir(), 'catalog-'));
    const file = join(dir, 'models.json');
    writeFileSync(
      file,
      JSON.stringify({
        models: [
          { name: 'a', task_type: 'text_generation', engine: 'llama-cpp', options: { model_path: 'weights/a.gguf' } },
          { name: 'b', task_type: 'text_generation', engine: 'llama-cpp', options: { model_path: '/srv/b.gguf' } },
          { name: 'c', task_type: 'text_generation', engine: 'llama-cpp', options: { model_uri: 'hf:org/repo/c.gguf' } },
        ],
      }),
    );
    const catalog = loadCatalog(file);
    expect(catalog.get('a')!.options.model_path).toBe(join(dir, 'weights/a.gguf'));
    expect(catalog.get('b')!.options.model_path).toBe('/srv/b.gguf');
    expect(catalog.get('c')!.options).toEqual({ model_uri: 'hf:org/repo/c.gguf' });
    // The shipped catalog finds the shipped model from anywhere.
    const shipped = loadCatalog(fileURLToPath(new URL('../config/models.json', import.meta.url))).get('tiny-llama')!.options.model_path as string;
    expect(shipped).toBe(fileURLToPath(new URL('../models/tiny-llama.gguf', import.meta.url)));
    expect(existsSync(shipped)).toBe(true);
  });
});

describe('EtaEstimator', () => {
  const model = { taskType: 'text_generation' as const, modelName: 'm' };
  const MEAN = 1000;
  const NOW = 1_000_000;
  const eta = (slots: number) => {
    const e = new EtaEstimator(() => slots);
    e.seed(model, MEAN);
    // In mean run times after now.
    return (ahead: number, running = 0) => (e.estimate(model, ahead, NOW, null, running) - NOW) / MEAN;
  };

  it('starts a task at once while a slot is free, after the tasks ahead fill the slots otherwise', () => {
    const four = eta(4);
    expect([0, 1, 2, 3].map((a) => four(a))).toEqual([1, 1, 1, 1]);
    // Four start now; the fifth and the sixth get the first slots to come free, after one run.
    expect([4, 5, 7, 8].map((a) => four(a))).toEqual([2, 2, 2, 3]);
  });

  it('counts a running task as half done: its slot comes free half a run from now on average', () => {
    const one = eta(1);
    expect(one(0, 1)).toBe(1.5);
    expect(one(2, 1)).toBe(3.5);
    const two = eta(2);
    // One slot busy, one free: the first in line takes the free one, the next the busy one.
    expect([0, 1, 2, 3].map((a) => two(a, 1))).toEqual([1, 1.5, 2, 2.5]);
    expect([0, 1, 2].map((a) => two(a, 2))).toEqual([1.5, 1.5, 2.5]);
    // More running than slots (workers left since): every slot is busy, no more.
    expect(two(0, 9)).toBe(two(0, 2));
  });

  it('assumes one slot when no worker serves the model, and a started task ends a mean run after its start', () => {
    const none = eta(0);
    expect([0, 1].map((a) => none(a))).toEqual([1, 2]);
    expect(none(0, 1)).toBe(1.5);
    const e = new EtaEstimator(() => 1);
    e.seed(model, MEAN);
    expect(e.estimate(model, 0, NOW, NOW - 400)).toBe(NOW + 600);
    expect(e.estimate(model, 0, NOW, NOW - 4000)).toBe(NOW);
  });
});
