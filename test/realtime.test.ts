/** Live updates: WebSocket and SSE see every transition in order; waits; idempotent creates. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { GateEngine } from './helpers/engines.js';
import { dropSchema, PG_URL, uniqueSchema } from './helpers/pg.js';
import { json, post, startServer, waitFor, type TestServer } from './helpers/server.js';

const llm = (prompt: string, extra: object = {}) => ({ task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt }, ...extra });

/** A WebSocket client that collects every message. */
async function wsClient(url: string) {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/ws/tasks`);
  const messages: any[] = [];
  ws.on('message', (d) => messages.push(JSON.parse(d.toString())));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const next = (pred: (m: any) => boolean, what = 'message', timeoutMs = 5000) => waitFor(() => messages.find(pred), timeoutMs, what);
  return { ws, messages, next, send: (m: unknown) => ws.send(typeof m === 'string' ? m : JSON.stringify(m)) };
}

interface SseEvent {
  id?: string;
  event: string;
  data: any;
}

/** Reads an SSE stream until `stopAfter` events (or the end); returns what came. */
async function readSse(url: string, headers: Record<string, string> = {}, stopAfter = Infinity): Promise<SseEvent[]> {
  const controller = new AbortController();
  const res = await fetch(url, { headers, signal: controller.signal });
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  const events: SseEvent[] = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const e: Partial<SseEvent> = { event: 'message' };
      let data = '';
      for (const line of block.split('\n')) {
        if (line.startsWith('id: ')) e.id = line.slice(4);
        else if (line.startsWith('event: ')) e.event = line.slice(7);
        else if (line.startsWith('data: ')) data += line.slice(6);
      }
      if (!data) continue;
      e.data = JSON.parse(data);
      events.push(e as SseEvent);
      if (e.event === 'end' || events.length >= stopAfter) {
        controller.abort();
        return events;
      }
    }
  }
  return events;
}

describe('WebSocket and SSE on SQLite', () => {
  let srv: TestServer;
  let engine: GateEngine;
  beforeAll(async () => {
    engine = new GateEngine();
    srv = await startServer({ engines: { gate: engine }, env: { TASK_MANAGER_WORKER_CONCURRENCY: '8' } });
  });
  afterAll(async () => {
    await srv.close();
  });

  it('a WebSocket subscriber sees snapshot, every transition and streamed tokens in order', async () => {
    const client = await wsClient(srv.url);
    const t = await json(await post(`${srv.url}/tasks`, llm('stream me')));
    client.send({ action: 'subscribe', task_id: t.task_id });
    await client.next((m) => m.type === 'subscribed' && m.task_id === t.task_id);
    const snapshot = await client.next((m) => m.type === 'snapshot');
    expect(snapshot.task.task_id).toBe(t.task_id);
    const run = await waitFor(() => engine.runs.find((r) => r.task.id === t.task_id), 5000, 'run');
    for (const piece of ['Hel', 'lo', ' wor', 'ld']) run.ctx.reportOutput!(piece);
    run.ctx.reportProgress(0.5);
    await new Promise((r) => setTimeout(r, 150));
    engine.finish(t.task_id, { generated_text: 'Hello world' });
    const done = await client.next((m) => m.type === 'task.update' && m.status === 'completed');
    expect(done.task.result).toEqual({ generated_text: 'Hello world' });
    const mine = client.messages.filter((m) => m.task_id === t.task_id);
    // every message says which task and its status (the reference's example reads update.status)
    for (const m of mine) expect(typeof m.status).toBe('string');
    const text = mine.filter((m) => m.type === 'task.output').flatMap((m) => m.events.filter((e: any) => e.text).map((e: any) => e.text)).join('');
    expect(text).toBe('Hello world');
    // The snapshot carries the state at subscription; updates carry every change after it.
    const statuses = [snapshot.status, ...mine.filter((m) => m.type === 'task.update').map((m) => m.status)];
    expect(statuses.at(-1)).toBe('completed');
    expect(statuses).toContain('running');
    expect(statuses.indexOf('running')).toBeLessThan(statuses.indexOf('completed'));
    const outputIdx = mine.findIndex((m) => m.type === 'task.output');
    const doneIdx = mine.findIndex((m) => m.type === 'task.update' && m.status === 'completed');
    expect(outputIdx).toBeLessThan(doneIdx);
    client.ws.close();
  });

  it('sees a cancel, supports unsubscribe, filters and all-task subscriptions', async () => {
    const client = await wsClient(srv.url);
    client.send({ action: 'subscribe', filter: { task_type: 'text_generation' } });
    const sub = await client.next((m) => m.type === 'subscribed' && m.filter);
    const snap = await client.next((m) => m.type === 'snapshot' && m.subscription_id === sub.subscription_id);
    expect(Array.isArray(snap.tasks)).toBe(true);
    expect(snap.total).toBeGreaterThanOrEqual(1);
    client.send({ action: 'subscribe', filter: { model_name: 'test-tts' } });
    const t = await json(await post(`${srv.url}/tasks`, llm('cancel me')));
    await waitFor(() => engine.runs.find((r) => r.task.id === t.task_id), 5000, 'run');
    await fetch(`${srv.url}/tasks/${t.task_id}`, { method: 'DELETE' });
    await client.next((m) => m.type === 'task.update' && m.task_id === t.task_id && m.status === 'cancelled');
    const seq = client.messages.filter((m) => m.task_id === t.task_id && m.type === 'task.update').map((m) => m.status);
    expect(seq).toEqual(['pending', 'running', 'cancelled']);
    // the tts filter saw none of it
    client.send({ action: 'unsubscribe', subscription_id: sub.subscription_id });
    await client.next((m) => m.type === 'unsubscribed' && m.subscription_id === sub.subscription_id);
    const before = client.messages.length;
    await json(await post(`${srv.url}/tasks`, llm('unwatched')));
    await new Promise((r) => setTimeout(r, 200));
    expect(client.messages.slice(before).filter((m) => m.type === 'task.update')).toEqual([]);
    client.ws.close();
  });

  it('answers invalid messages with an error in the API shape and keeps the socket open', async () => {
    const client = await wsClient(srv.url);
    client.send('not json');
    const e1 = await client.next((m) => m.type === 'error');
    expect(e1.error.code).toBe('INVALID_REQUEST');
    expect(e1.request_id).toMatch(/^req_/);
    expect(Number.isNaN(Date.parse(e1.timestamp))).toBe(false);
    client.send({ action: 'dance' });
    await client.next((m) => m.type === 'error' && m.error.code === 'VALIDATION_ERROR' && m.error.details.field === 'action');
    client.send({ action: 'subscribe', task_id: 'task_123e4567-e89b-12d3-a456-426614174000' });
    await client.next((m) => m.type === 'error' && m.error.code === 'TASK_NOT_FOUND');
    client.send({ action: 'subscribe', filter: { status: 'weird' } });
    await client.next((m) => m.type === 'error' && m.error.details?.field === 'filter.status');
    client.send({ action: 'ping' });
    await client.next((m) => m.type === 'pong');
    expect(client.ws.readyState).toBe(WebSocket.OPEN);
    client.ws.close();
  });

  it('runs the reference\'s WebSocket example as written', async () => {
    const t = await json(await post(`${srv.url}/tasks`, llm('reference example')));
    const updates: string[] = [];
    // --- the API reference's snippet, with the URL pointing at this server ---
    const ws = new WebSocket(`${srv.url.replace('http', 'ws')}/ws/tasks`);
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ action: 'subscribe', task_id: t.task_id }));
    ws.onmessage = (event) => {
      const update = JSON.parse(String(event.data));
      updates.push(update.status);
    };
    // ---
    await waitFor(() => engine.runs.find((r) => r.task.id === t.task_id), 5000, 'run');
    engine.finish(t.task_id, { generated_text: 'ok' });
    await waitFor(() => updates.includes('completed'), 5000, 'completed update');
    expect(updates.every((s) => typeof s === 'string')).toBe(true);
    ws.close();
  });

  it('SSE streams every event in order, ends after the final status, and resumes by Last-Event-ID without gaps', async () => {
    const t = await json(await post(`${srv.url}/tasks`, llm('sse')));
    const run = await waitFor(() => engine.runs.find((r) => r.task.id === t.task_id), 5000, 'run');
    const live = readSse(`${srv.url}/tasks/${t.task_id}/events`);
    for (let i = 0; i < 5; i++) {
      run.ctx.reportOutput!(`t${i} `);
      await new Promise((r) => setTimeout(r, 120));
    }
    engine.finish(t.task_id, { generated_text: 't0 t1 t2 t3 t4 ' });
    const all = await live;
    expect(all.at(-1)!.event).toBe('end');
    const body = all.slice(0, -1);
    expect(body.map((e) => e.event)[0]).toBe('status');
    expect(body.filter((e) => e.event === 'status').map((e) => e.data.status)).toEqual(['pending', 'running', 'completed']);
    expect(body.filter((e) => e.event === 'output').map((e) => e.data.text).join('')).toBe('t0 t1 t2 t3 t4 ');
    const ids = body.map((e) => Number(e.id));
    expect([...ids].sort((a, b) => a - b)).toEqual(ids);
    expect(body.at(-1)!.data.task.result).toEqual({ generated_text: 't0 t1 t2 t3 t4 ' });

    // Resume from the middle: exactly the rest, nothing missed, nothing repeated.
    const cut = body[3];
    const rest = await readSse(`${srv.url}/tasks/${t.task_id}/events`, { 'last-event-id': cut.id! });
    expect(rest.slice(0, -1).map((e) => e.id)).toEqual(body.slice(4).map((e) => e.id));
    const viaQuery = await readSse(`${srv.url}/tasks/${t.task_id}/events?last_event_id=${cut.id}`);
    expect(viaQuery.length).toBe(rest.length);
    // Resuming after the end closes at once.
    const after = await readSse(`${srv.url}/tasks/${t.task_id}/events`, { 'last-event-id': body.at(-1)!.id! });
    expect(after.map((e) => e.event)).toEqual(['end']);
    expect((await fetch(`${srv.url}/tasks/task_123e4567-e89b-12d3-a456-426614174000/events`)).status).toBe(404);
  });

  it('SSE: a client that drops mid-run and resumes misses nothing', async () => {
    const t = await json(await post(`${srv.url}/tasks`, llm('drop')));
    const run = await waitFor(() => engine.runs.find((r) => r.task.id === t.task_id), 5000, 'run');
    run.ctx.reportOutput!('a');
    await new Promise((r) => setTimeout(r, 150));
    const first = await readSse(`${srv.url}/tasks/${t.task_id}/events`, {}, 3); // pending, running, output a
    run.ctx.reportOutput!('b');
    await new Promise((r) => setTimeout(r, 150));
    run.ctx.reportOutput!('c');
    await new Promise((r) => setTimeout(r, 150));
    engine.finish(t.task_id, { generated_text: 'abc' });
    const rest = await readSse(`${srv.url}/tasks/${t.task_id}/events`, { 'last-event-id': first.at(-1)!.id! });
    const text = [...first, ...rest].filter((e) => e.event === 'output').map((e) => e.data.text).join('');
    expect(text).toBe('abc');
    expect(rest.filter((e) => e.event === 'status').map((e) => e.data.status)).toEqual(['completed']);
  });

  it('Prefer: wait=N returns when the task finishes, or when the time is up', async () => {
    const p = post(`${srv.url}/tasks`, llm('wait for me'), { prefer: 'wait=10' });
    const run = await waitFor(() => engine.runs.find((r) => r.task.input_data?.prompt === 'wait for me' || (r.task.inputData as any).prompt === 'wait for me'), 5000, 'run');
    setTimeout(() => engine.finish(run.task.id, { generated_text: 'done' }), 200);
    const res = await p;
    expect(res.status).toBe(201);
    expect(res.headers.get('preference-applied')).toBe('wait=10');
    const body = await json(res);
    expect(body).toMatchObject({ status: 'completed', result: { generated_text: 'done' } });

    const pending = await json(await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'x' } }));
    const t0 = Date.now();
    const got = await fetch(`${srv.url}/tasks/${pending.task_id}`, { headers: { prefer: 'wait=1' } });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
    expect((await json(got)).status).toBe('pending');
    // a cancel ends the wait early
    const w = fetch(`${srv.url}/tasks/${pending.task_id}`, { headers: { prefer: 'wait=20' } });
    setTimeout(() => fetch(`${srv.url}/tasks/${pending.task_id}`, { method: 'DELETE' }), 100);
    expect((await json(await w)).status).toBe('cancelled');
  });

  it('Idempotency-Key: concurrent retries create one task; another body gets 409', async () => {
    const body = { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'once' } };
    const results = await Promise.all(Array.from({ length: 10 }, () => post(`${srv.url}/tasks`, body, { 'idempotency-key': 'order-42' })));
    const ids = new Set<string>();
    for (const r of results) {
      expect(r.status).toBe(201);
      ids.add((await json(r)).task_id);
    }
    expect(ids.size).toBe(1);
    expect(results.filter((r) => r.headers.get('idempotent-replayed') === 'true')).toHaveLength(9);
    // same request with keys in another order is the same request
    const reordered = await post(`${srv.url}/tasks`, { input_data: { prompt: 'once' }, model_name: 'unserved-llm', task_type: 'text_generation' }, { 'idempotency-key': 'order-42' });
    expect((await json(reordered)).task_id).toBe([...ids][0]);
    const conflict = await post(`${srv.url}/tasks`, { ...body, input_data: { prompt: 'different' } }, { 'idempotency-key': 'order-42' });
    expect(conflict.status).toBe(409);
    expect((await json(conflict)).error.code).toBe('IDEMPOTENCY_KEY_REUSED');
    const bad = await post(`${srv.url}/tasks`, body, { 'idempotency-key': 'has space' });
    expect(bad.status).toBe(422);
  });
});

describe('events across nodes on PostgreSQL', () => {
  const schema = uniqueSchema('tmrt');
  let a: TestServer;
  let b: TestServer;
  beforeAll(async () => {
    const env = { DATABASE_URL: PG_URL, TASK_MANAGER_PG_SCHEMA: schema, TASK_MANAGER_EMBEDDED_WORKER: 'false' };
    a = await startServer({ env });
    b = await startServer({ env });
  });
  afterAll(async () => {
    await a.close();
    await b.close();
    await dropSchema(schema);
  });

  it('a subscriber on node B sees a task created and cancelled on node A; SSE on B too', async () => {
    const client = await wsClient(b.url);
    client.send({ action: 'subscribe', filter: { model_name: 'unserved-llm' } });
    await client.next((m) => m.type === 'snapshot');
    const t = await json(await post(`${a.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'x' } }));
    await client.next((m) => m.type === 'task.update' && m.task_id === t.task_id && m.status === 'pending');
    const sse = readSse(`${b.url}/tasks/${t.task_id}/events`);
    await new Promise((r) => setTimeout(r, 200));
    await fetch(`${a.url}/tasks/${t.task_id}`, { method: 'DELETE' });
    await client.next((m) => m.type === 'task.update' && m.task_id === t.task_id && m.status === 'cancelled');
    const events = await sse;
    expect(events.filter((e) => e.event === 'status').map((e) => e.data.status)).toEqual(['pending', 'cancelled']);
    // Prefer: wait on B ends when A finishes the task
    const t2 = await json(await post(`${a.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'y' } }));
    const waiting = fetch(`${b.url}/tasks/${t2.task_id}`, { headers: { prefer: 'wait=20' } });
    setTimeout(() => fetch(`${a.url}/tasks/${t2.task_id}`, { method: 'DELETE' }), 200);
    expect((await json(await waiting)).status).toBe('cancelled');
    client.ws.close();
  });

  it('idempotent creates hold across nodes', async () => {
    const body = { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'once across nodes' } };
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => post(`${(i % 2 ? a : b).url}/tasks`, body, { 'idempotency-key': 'cross-node-1' })));
    const ids = new Set(await Promise.all(results.map(async (r) => (await json(r)).task_id)));
    expect(ids.size).toBe(1);
  });
});
