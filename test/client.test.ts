/** The TypeScript SDK (src/client) against a real server with a controllable engine. */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WS from 'ws';
import {
  ConflictError,
  IdempotencyKeyReusedError,
  ModelNotFoundError,
  NetworkError,
  parseSse,
  RateLimitedError,
  TaskManagerClient,
  TaskManagerError,
  TaskNotCancellableError,
  TaskNotFoundError,
  ValidationError,
  WaitTimeoutError,
  type TaskEvent,
  type TaskStreamEvent,
  type WebSocketConstructor,
} from '../src/client/index.js';
import { GateEngine } from './helpers/engines.js';
import { startServer, waitFor, type TestServer } from './helpers/server.js';

const llm = (prompt: string) => ({ task_type: 'text_generation' as const, model_name: 'test-llm', input_data: { prompt } });
/** No engine serves this model: its tasks stay pending. */
const parked = (prompt: string) => ({ task_type: 'text_generation' as const, model_name: 'unserved-llm', input_data: { prompt } });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A fetch that records each request's method, URL and headers. */
function recordingFetch() {
  const calls: Array<{ method: string; url: string; headers: Record<string, string> }> = [];
  const f = (input: string, init: RequestInit = {}) => {
    calls.push({ method: init.method ?? 'GET', url: input, headers: Object.fromEntries(new Headers(init.headers).entries()) });
    return fetch(input, init);
  };
  return { calls, fetch: f };
}

/** A `ws` WebSocket that counts the connections made through it. */
function countingWebSocket() {
  const state = { opened: 0 };
  class Counting extends WS {
    constructor(url: string) {
      super(url);
      state.opened++;
    }
  }
  return { state, ctor: Counting as unknown as WebSocketConstructor };
}

describe('TaskManagerClient', () => {
  let srv: TestServer;
  let engine: GateEngine;
  let client: TaskManagerClient;
  const runOf = (taskId: string) => waitFor(() => engine.runs.find((r) => r.task.id === taskId), 5000, `run of ${taskId}`);

  beforeAll(async () => {
    engine = new GateEngine();
    srv = await startServer({ engines: { gate: engine }, env: { TASK_MANAGER_WORKER_CONCURRENCY: '16' } });
    client = new TaskManagerClient({ baseUrl: srv.url });
  });
  afterAll(async () => {
    await srv.close();
  });

  it('imports nothing of the server at run time (browser-safe)', () => {
    const dir = join(import.meta.dirname, '../src/client');
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.ts'))) {
      const src = readFileSync(join(dir, file), 'utf8');
      for (const m of src.matchAll(/^\s*(import|export)\s+(type\s+)?[^;]*?from\s+'([^']+)'/gm)) {
        const [, , typeOnly, spec] = m;
        if (spec.startsWith('./')) continue;
        // Only type-only imports of the shared schemas/types may leave the folder.
        expect(typeOnly, `${file} imports ${spec} at run time`).toBeTruthy();
        expect(spec, `${file} imports ${spec}`).toMatch(/^(\.\.\/core\/|@sinclair\/typebox$)/);
      }
      expect(src, `${file} must not import node: modules`).not.toMatch(/from\s+'node:/);
    }
  });

  it('parseSse: any line ending, split anywhere, comments, multi-line data, retry', async () => {
    const text = ': hello\r\nretry: 2000\r\n\r\nid: 1\nevent: output\ndata: {"a":\ndata: 1}\n\nid: 2\revent: end\rdata: {}\r\r: keep-alive\n\ndata: unterminated';
    const bytes = new TextEncoder().encode(text);
    for (const size of [1, 2, 3, 7, bytes.length]) {
      const body = new ReadableStream<Uint8Array>({
        start(c) {
          for (let i = 0; i < bytes.length; i += size) c.enqueue(bytes.slice(i, i + size));
          c.close();
        },
      });
      const got = [];
      for await (const m of parseSse(body)) got.push(m);
      expect(got, `chunks of ${size}`).toEqual([
        { event: 'message', data: '', retry: 2000 },
        { id: '1', event: 'output', data: '{"a":\n1}' },
        { id: '2', event: 'end', data: '{}' },
      ]);
    }
  });

  it('creates, gets, lists, iterates every page and cancels', async () => {
    expect(await client.health()).toMatchObject({ status: 'healthy' });
    const created = await client.createTask({ ...parked('page me 0'), priority: 5, parameters: { max_tokens: 8 } });
    expect(created).toMatchObject({ status: 'pending', task_type: 'text_generation', model_name: 'unserved-llm', priority: 5 });
    expect(created.task_id).toMatch(/^task_/);
    const got = await client.getTask(created.task_id);
    expect(got).toMatchObject({ task_id: created.task_id, status: 'pending', input_data: { prompt: 'page me 0' }, parameters: { max_tokens: 8 } });

    const ids = [created.task_id];
    for (let i = 1; i < 5; i++) ids.push((await client.createTask(parked(`page me ${i}`))).task_id);
    const page = await client.listTasks({ model_name: 'unserved-llm', limit: 2 });
    expect(page).toMatchObject({ limit: 2, offset: 0 });
    expect(page.tasks).toHaveLength(2);
    expect(page.total).toBeGreaterThanOrEqual(5);

    // iterate: 5+ tasks in pages of 2, each once, newest first
    const seenPages: number[] = [];
    for await (const p of client.iterateTasks({ model_name: 'unserved-llm', pageSize: 2 }).pages()) seenPages.push(p.tasks.length);
    expect(seenPages.length).toBeGreaterThanOrEqual(3);
    expect(seenPages.every((n) => n <= 2)).toBe(true);
    const all: string[] = [];
    for await (const t of client.iterateTasks({ model_name: 'unserved-llm', pageSize: 2 })) all.push(t.task_id);
    expect(new Set(all).size).toBe(all.length);
    for (const id of ids) expect(all).toContain(id);
    expect(all.indexOf(ids[4])).toBeLessThan(all.indexOf(ids[0]));
    const asc = await client.iterateTasks({ model_name: 'unserved-llm', pageSize: 2, sort_order: 'asc' }).toArray();
    expect(asc.map((t) => t.task_id)).toEqual([...all].reverse());

    const cancelled = await client.cancelTask(ids[0]);
    expect(cancelled).toMatchObject({ task_id: ids[0], status: 'cancelled' });
    expect(Date.parse(cancelled.cancelled_at)).not.toBeNaN();
    expect((await client.getTask(ids[0])).status).toBe('cancelled');
    // cancelling again returns it again
    expect((await client.cancelTask(ids[0])).status).toBe('cancelled');
    const onlyCancelled = await client.listTasks({ model_name: 'unserved-llm', status: 'cancelled' });
    expect(onlyCancelled.tasks.map((t) => t.task_id)).toEqual([ids[0]]);
  });

  it('raises typed errors with the server code, details and request id', async () => {
    const unknownModel = await client.createTask({ ...llm('x'), model_name: 'no-such-model' }).catch((e) => e);
    expect(unknownModel).toBeInstanceOf(ModelNotFoundError);
    expect(unknownModel).toBeInstanceOf(TaskManagerError);
    expect(unknownModel).toMatchObject({ code: 'MODEL_NOT_FOUND', status: 400, name: 'ModelNotFoundError' });
    expect(unknownModel.details.field).toBe('model_name');
    expect(unknownModel.requestId).toMatch(/^req_/);

    const bad = await client.createTask({ task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: '   ' } }).catch((e) => e);
    expect(bad).toBeInstanceOf(ValidationError);
    expect(bad).toMatchObject({ code: 'VALIDATION_ERROR', status: 422 });
    expect(bad.details.field).toMatch(/prompt/);

    const badField = await client.createTask({ ...llm('x'), priority: 1000 }).catch((e) => e);
    expect(badField).toBeInstanceOf(ValidationError);
    expect(badField.details.field).toMatch(/priority/);

    const missing = await client.getTask('task_123e4567-e89b-12d3-a456-426614174000').catch((e) => e);
    expect(missing).toBeInstanceOf(TaskNotFoundError);
    expect(missing).toMatchObject({ code: 'TASK_NOT_FOUND', status: 404 });
    expect(await client.cancelTask('task_nope').catch((e) => e)).toBeInstanceOf(TaskNotFoundError);

    const done = await client.createTask(llm('finish then cancel'));
    await runOf(done.task_id);
    engine.finish(done.task_id, { generated_text: 'ok' });
    await client.waitForTask(done.task_id, { timeoutMs: 5000 });
    const notCancellable = await client.cancelTask(done.task_id).catch((e) => e);
    expect(notCancellable).toBeInstanceOf(ConflictError);
    expect(notCancellable).toBeInstanceOf(TaskNotCancellableError);
    expect(notCancellable).toMatchObject({ code: 'TASK_NOT_CANCELLABLE', status: 409 });

    const offline = new TaskManagerClient({ baseUrl: 'http://127.0.0.1:59999', maxRetries: 0 });
    const net = await offline.getTask('x').catch((e) => e);
    expect(net).toBeInstanceOf(NetworkError);
    expect(net).toMatchObject({ code: 'NETWORK_ERROR', status: 0 });
  });

  it('rate limits: RateLimitedError carries Retry-After; safe requests are retried', async () => {
    let calls = 0;
    const limited = (status: number, code: string, headers: Record<string, string> = {}) =>
      new Response(JSON.stringify({ error: { code, message: 'no' }, timestamp: new Date().toISOString(), request_id: 'req_x' }), {
        status,
        headers: { 'content-type': 'application/json', ...headers },
      });
    const once = new TaskManagerClient({
      baseUrl: srv.url,
      maxRetries: 0,
      fetch: async () => limited(429, 'RATE_LIMITED', { 'retry-after': '7' }),
    });
    const err = await once.listTasks().catch((e) => e);
    expect(err).toBeInstanceOf(RateLimitedError);
    expect(err).toMatchObject({ code: 'RATE_LIMITED', status: 429, retryAfter: 7, requestId: 'req_x' });

    const flaky = new TaskManagerClient({
      baseUrl: srv.url,
      fetch: async (url, init) => (++calls === 1 ? limited(503, 'SERVICE_UNAVAILABLE') : fetch(url, init)),
    });
    const page = await flaky.listTasks({ limit: 1 });
    expect(page.limit).toBe(1);
    expect(calls).toBe(2);
    // a POST without an idempotency key is never repeated
    calls = 0;
    const unsafe = await flaky.createTask(parked('once only')).catch((e) => e);
    expect(unsafe.code).toBe('SERVICE_UNAVAILABLE');
    expect(calls).toBe(1);
  });

  it('idempotency key: a retry returns the same task; another body is a ConflictError', async () => {
    const a = await client.createTask(parked('idem'), { idempotencyKey: 'client-test-1' });
    const b = await client.createTask(parked('idem'), { idempotencyKey: 'client-test-1' });
    expect(b.task_id).toBe(a.task_id);
    const reused = await client.createTask(parked('idem, but different'), { idempotencyKey: 'client-test-1' }).catch((e) => e);
    expect(reused).toBeInstanceOf(IdempotencyKeyReusedError);
    expect(reused).toBeInstanceOf(ConflictError);
    expect(reused).toMatchObject({ code: 'IDEMPOTENCY_KEY_REUSED', status: 409 });
  });

  it('createTask and getTask with wait answer with the finished task', async () => {
    const p = client.createTask(llm('wait inline'), { wait: 10 });
    const run = await waitFor(() => engine.runs.find((r) => r.task.inputData.prompt === 'wait inline'), 5000, 'run');
    setTimeout(() => engine.finish(run.task.id, { generated_text: 'inline' }), 100);
    const t = await p;
    expect(t).toMatchObject({ status: 'completed', result: { generated_text: 'inline' } });
    const again = await client.getTask(t.task_id, { wait: 5 });
    expect(again.status).toBe('completed');
  });

  it('waitForTask resolves on completion over the WebSocket (no polling)', async () => {
    const rec = recordingFetch();
    const ws = countingWebSocket();
    const c = new TaskManagerClient({ baseUrl: srv.url, fetch: rec.fetch, WebSocket: ws.ctor });
    const t = await c.createTask(llm('wait via ws'));
    const waiting = c.waitForTask(t.task_id, { timeoutMs: 10_000 });
    const run = await runOf(t.task_id);
    await sleep(100);
    engine.finish(t.task_id, { generated_text: 'via ws' });
    const done = await waiting;
    expect(done).toMatchObject({ task_id: t.task_id, status: 'completed', result: { generated_text: 'via ws' } });
    expect(run.task.id).toBe(t.task_id);
    expect(ws.state.opened).toBe(1);
    expect(rec.calls.some((call) => call.headers.prefer)).toBe(false);

    // Already final: the snapshot answers at once.
    expect((await c.waitForTask(t.task_id, { timeoutMs: 2000 })).status).toBe('completed');

    // The default (Node 20: `ws` loaded on demand) works the same.
    const t2 = await client.createTask(llm('wait via default ws'));
    const waiting2 = client.waitForTask(t2.task_id);
    await runOf(t2.task_id);
    engine.failRun(t2.task_id, new Error('boom'));
    const failed = await waiting2;
    expect(failed.status).toBe('failed');
    expect(failed.error?.code).toBeTruthy();
  });

  it('waitForTask long-polls with Prefer: wait when WebSocket is disabled or fails', async () => {
    const rec = recordingFetch();
    const c = new TaskManagerClient({ baseUrl: srv.url, fetch: rec.fetch, WebSocket: false });
    const t = await c.createTask(llm('wait via polling'));
    const waiting = c.waitForTask(t.task_id, { timeoutMs: 10_000 });
    await runOf(t.task_id);
    await sleep(200);
    engine.finish(t.task_id, { generated_text: 'polled' });
    const done = await waiting;
    expect(done).toMatchObject({ status: 'completed', result: { generated_text: 'polled' } });
    const polls = rec.calls.filter((call) => call.method === 'GET' && call.url.endsWith(`/tasks/${t.task_id}`));
    expect(polls.length).toBeGreaterThanOrEqual(1);
    expect(polls.length).toBeLessThan(5); // it waited on the server, it did not spin
    expect(polls[0].headers.prefer).toMatch(/^wait=\d/);

    // A WebSocket that cannot connect: falls back to polling.
    class Broken extends WS {
      constructor(_url: string) {
        super('ws://127.0.0.1:59999/ws/tasks');
      }
    }
    const rec2 = recordingFetch();
    const c2 = new TaskManagerClient({ baseUrl: srv.url, fetch: rec2.fetch, WebSocket: Broken as unknown as WebSocketConstructor });
    const t2 = await c2.createTask(llm('wait after ws failure'));
    const waiting2 = c2.waitForTask(t2.task_id, { timeoutMs: 10_000 });
    await runOf(t2.task_id);
    engine.finish(t2.task_id, { generated_text: 'fallback' });
    expect((await waiting2).result).toEqual({ generated_text: 'fallback' });
    expect(rec2.calls.some((call) => call.headers.prefer)).toBe(true);
  });

  it('waitForTask: timeout, unknown task and abort', async () => {
    const t = await client.createTask(parked('never runs'));
    const started = Date.now();
    const timedOut = await client.waitForTask(t.task_id, { timeoutMs: 300 }).catch((e) => e);
    expect(timedOut).toBeInstanceOf(WaitTimeoutError);
    expect(timedOut.code).toBe('WAIT_TIMEOUT');
    expect(timedOut.lastTask?.status).toBe('pending');
    expect(Date.now() - started).toBeLessThan(3000);

    const polling = new TaskManagerClient({ baseUrl: srv.url, WebSocket: false });
    const timedOut2 = await polling.waitForTask(t.task_id, { timeoutMs: 300 }).catch((e) => e);
    expect(timedOut2).toBeInstanceOf(WaitTimeoutError);

    expect(await client.waitForTask('task_nope', { timeoutMs: 2000 }).catch((e) => e)).toBeInstanceOf(TaskNotFoundError);
    expect(await polling.waitForTask('task_nope', { timeoutMs: 2000 }).catch((e) => e)).toBeInstanceOf(TaskNotFoundError);

    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    const aborted = await client.waitForTask(t.task_id, { signal: ac.signal }).catch((e) => e);
    expect(aborted.name).toBe('AbortError');
  });

  it('stream yields status changes and output chunks in order, then ends', async () => {
    const t = await client.createTask(llm('stream me'));
    const run = await runOf(t.task_id);
    const events: TaskStreamEvent[] = [];
    const reading = (async () => {
      for await (const e of client.stream(t.task_id)) events.push(e);
    })();
    for (const piece of ['Hel', 'lo', ' wor', 'ld']) {
      run.ctx.reportOutput!(piece);
      await sleep(60);
    }
    run.ctx.reportProgress(0.5);
    await sleep(100);
    engine.finish(t.task_id, { generated_text: 'Hello world' });
    await reading;
    expect(events.filter((e) => e.type === 'status').map((e) => e.status)).toEqual(['pending', 'running', 'completed']);
    expect(events.filter((e) => e.type === 'output').map((e) => (e.type === 'output' ? e.text : '')).join('')).toBe('Hello world');
    const ids = events.map((e) => e.event_id);
    expect([...ids].sort((a, b) => a - b)).toEqual(ids);
    expect(new Set(ids).size).toBe(ids.length);
    const firstOutput = events.findIndex((e) => e.type === 'output');
    expect(firstOutput).toBeGreaterThan(events.findIndex((e) => e.status === 'running'));
    const last = events.at(-1)!;
    expect(last.type === 'status' && last.task?.result).toEqual({ generated_text: 'Hello world' });

    // a finished task's stream replays everything and ends
    const replay: TaskStreamEvent[] = [];
    for await (const e of client.stream(t.task_id)) replay.push(e);
    expect(replay.map((e) => e.event_id)).toEqual(ids);
    expect(await (async () => {
      for await (const _ of client.stream('task_nope')) return 'yielded';
    })().catch((e) => e)).toBeInstanceOf(TaskNotFoundError);
  });

  it('stream resumes from lastEventId after the reader stops midway: nothing lost, nothing repeated', async () => {
    const t = await client.createTask(llm('resume me'));
    const run = await runOf(t.task_id);
    run.ctx.reportOutput!('a');
    await sleep(100);
    const first: TaskStreamEvent[] = [];
    for await (const e of client.stream(t.task_id)) {
      first.push(e);
      if (e.type === 'output') break; // the reader goes away mid-run
    }
    expect(first.map((e) => e.type)).toEqual(['status', 'status', 'output']);
    run.ctx.reportOutput!('b');
    await sleep(80);
    run.ctx.reportOutput!('c');
    await sleep(80);
    engine.finish(t.task_id, { generated_text: 'abc' });
    const rest: TaskStreamEvent[] = [];
    for await (const e of client.stream(t.task_id, { lastEventId: first.at(-1)!.event_id })) rest.push(e);
    const joined = [...first, ...rest];
    const all: TaskStreamEvent[] = [];
    for await (const e of client.stream(t.task_id)) all.push(e);
    expect(joined.map((e) => e.event_id)).toEqual(all.map((e) => e.event_id));
    expect(joined.filter((e) => e.type === 'output').map((e) => (e as { text: string }).text).join('')).toBe('abc');
    expect(rest.filter((e) => e.type === 'status').map((e) => e.status)).toEqual(['completed']);

    // aborting through the signal stops the iteration with an AbortError
    const ac = new AbortController();
    const t2 = await client.createTask(parked('abort stream'));
    const it2 = (async () => {
      for await (const e of client.stream(t2.task_id, { signal: ac.signal })) if (e.status === 'pending') ac.abort();
    })();
    expect((await it2.catch((e) => e)).name).toBe('AbortError');
  });

  it('stream reconnects with Last-Event-ID when the connection drops, without gaps or repeats', async () => {
    const t = await client.createTask(llm('drop me'));
    const run = await runOf(t.task_id);
    // A fetch whose first event stream breaks after two events, as a network drop would.
    const requests: Array<Record<string, string>> = [];
    let cut = false;
    const dropping = async (url: string, init: RequestInit = {}) => {
      requests.push(Object.fromEntries(new Headers(init.headers).entries()));
      const res = await fetch(url, init);
      if (cut || !url.endsWith('/events')) return res;
      cut = true;
      const reader = res.body!.getReader();
      let blocks = 0;
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          const { value, done } = await reader.read();
          if (done) return controller.close();
          controller.enqueue(value);
          blocks += new TextDecoder().decode(value).split('\n\n').filter((b) => b.includes('data:')).length;
          if (blocks >= 2) {
            reader.cancel().catch(() => {});
            controller.error(new TypeError('terminated'));
          }
        },
      });
      return new Response(body, { status: res.status, headers: res.headers });
    };
    const c = new TaskManagerClient({ baseUrl: srv.url, fetch: dropping });
    const events: TaskStreamEvent[] = [];
    const reading = (async () => {
      for await (const e of c.stream(t.task_id)) events.push(e);
    })();
    await waitFor(() => cut && requests.length >= 2, 5000, 'reconnect');
    for (const piece of ['x', 'y', 'z']) {
      run.ctx.reportOutput!(piece);
      await sleep(60);
    }
    engine.finish(t.task_id, { generated_text: 'xyz' });
    await reading;
    expect(requests.length).toBe(2);
    expect(requests[0]['last-event-id']).toBeUndefined();
    expect(requests[1]['last-event-id']).toBe(String(events[1].event_id));
    const all: TaskStreamEvent[] = [];
    for await (const e of client.stream(t.task_id)) all.push(e);
    expect(events.map((e) => e.event_id)).toEqual(all.map((e) => e.event_id));
    expect(events.filter((e) => e.type === 'status').map((e) => e.status)).toEqual(['pending', 'running', 'completed']);
    expect(events.filter((e) => e.type === 'output').map((e) => (e as { text: string }).text).join('')).toBe('xyz');
  });

  it('TaskEventsSocket: task and filter subscriptions on one connection; subscribe() on its own', async () => {
    const socket = await client.openEventsSocket();
    const all: TaskEvent[] = [];
    socket.onEvent((e) => all.push(e));
    const sdEvents: TaskEvent[] = [];
    const sdSub = await socket.subscribe({ model_name: 'test-sd' }, (e) => sdEvents.push(e));
    expect(sdSub.id).toMatch(/^sub_/);
    expect(Array.isArray(sdSub.snapshot.tasks)).toBe(true);

    const t = await client.createTask(llm('socket task'));
    const taskEvents: TaskEvent[] = [];
    const taskSub = await socket.subscribeTask(t.task_id, (e) => taskEvents.push(e));
    expect(taskSub.snapshot.task_id).toBe(t.task_id);
    const sd = await client.createTask({ task_type: 'image_generation', model_name: 'test-sd', input_data: { prompt: 'a cat' } });
    await runOf(t.task_id);
    await runOf(sd.task_id);
    engine.runs.find((r) => r.task.id === t.task_id)!.ctx.reportOutput!('hi');
    await sleep(100);
    engine.finish(t.task_id, { generated_text: 'hi' });
    engine.finish(sd.task_id, { images: [] });
    await waitFor(() => taskEvents.some((e) => e.type === 'task.update' && e.status === 'completed'), 5000, 'task completed');
    await waitFor(() => sdEvents.some((e) => e.type === 'task.update' && e.status === 'completed'), 5000, 'sd completed');
    expect(taskEvents.every((e) => e.task_id === t.task_id)).toBe(true);
    expect(taskEvents.some((e) => e.type === 'task.output')).toBe(true);
    expect(sdEvents.every((e) => e.task_id === sd.task_id)).toBe(true);
    expect(sdEvents.filter((e) => e.type === 'task.update').map((e) => e.status)).toEqual(['pending', 'running', 'completed']);
    expect(new Set(all.map((e) => e.task_id))).toEqual(new Set([t.task_id, sd.task_id]));
    expect(await socket.ping()).toBeGreaterThanOrEqual(0);
    await sdSub.unsubscribe();
    const unknown = await socket.subscribeTask('task_nope').catch((e) => e);
    expect(unknown).toBeInstanceOf(TaskNotFoundError);
    expect(socket.open).toBe(true);
    socket.close();
    expect(socket.open).toBe(false);

    const seen: TaskEvent[] = [];
    const t3 = await client.createTask(llm('own connection'));
    const sub = await client.subscribe({ task_id: t3.task_id }, (e) => seen.push(e));
    await runOf(t3.task_id);
    engine.finish(t3.task_id, { generated_text: 'own' });
    await waitFor(() => seen.some((e) => e.type === 'task.update' && e.status === 'completed'), 5000, 'own completed');
    sub.close();
  });
});
