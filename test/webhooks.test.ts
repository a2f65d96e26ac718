import { execFileSync } from 'node:child_process';
import dns from 'node:dns';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http, { type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AppError } from '../src/core/errors.js';
import { LocalEventBus } from '../src/core/events.js';
import { newTaskId } from '../src/core/ids.js';
import type { TaskStore, WebhookDelivery } from '../src/core/store.js';
import type { TaskRecord, TaskStatus } from '../src/core/task.js';
import { SqliteTaskStore } from '../src/store/sqlite/sqlite-store.js';
import { signPayload, verifySignature, WebhookDispatcher, type WebhookDispatcherOptions } from '../src/webhooks/dispatcher.js';
import { guardedLookup, isPrivateAddress, makeGuardedLookup, validateWebhookUrl } from '../src/webhooks/url-guard.js';

const SECRET = 'whsec_test_secret';
const LLM = { taskType: 'text_generation' as const, modelName: 'llm-a' };

// ---------------------------------------------------------------------------------------
// A real receiver on loopback

interface Received {
  headers: IncomingHttpHeaders;
  raw: string;
  body: any;
}

type Answer = number | 'hang';

interface Receiver {
  url: string;
  port: number;
  requests: Received[];
  close: () => Promise<void>;
}

async function startReceiver(answer: (n: number, r: Received) => Answer = () => 200): Promise<Receiver> {
  const requests: Received[] = [];
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      let body: unknown = null;
      try {
        body = JSON.parse(raw);
      } catch {
        // kept raw
      }
      const r = { headers: req.headers, raw, body };
      requests.push(r);
      const a = answer(requests.length, r);
      if (a === 'hang') return; // never answers
      res.writeHead(a, { 'content-type': 'text/plain' }).end(a < 300 ? 'ok' : 'nope');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook`,
    port,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// ---------------------------------------------------------------------------------------
// Fixtures

/** Like test/helpers/server.ts tempDir, without pulling in the whole server. */
function tempDir(prefix: string): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(fn: () => Promise<T | null | undefined | false>, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(15);
  }
}

/** The fields of the API's task JSON the payload is checked for (the server passes taskToJson). */
const serialize = (t: TaskRecord) => ({ task_id: t.id, status: t.status, model_name: t.modelName, result: t.result, error: t.error });

let dir: { path: string; cleanup: () => void };
let store: TaskStore;
const dispatchers: WebhookDispatcher[] = [];
const receivers: Receiver[] = [];

beforeEach(() => {
  dir = tempDir('tm-webhooks-');
  store = SqliteTaskStore.open({ path: join(dir.path, 'tasks.db'), synchronous: 'NORMAL' });
});

afterEach(async () => {
  for (const d of dispatchers.splice(0)) await d.stop();
  for (const r of receivers.splice(0)) await r.close();
  await store.close();
  dir.cleanup();
});

function dispatcher(over: Partial<WebhookDispatcherOptions> = {}): WebhookDispatcher {
  const d = new WebhookDispatcher({ store, secret: SECRET, allowPrivate: true, serialize, intervalMs: 60_000, ...over });
  dispatchers.push(d);
  return d;
}

async function receiver(answer?: (n: number, r: Received) => Answer): Promise<Receiver> {
  const r = await startReceiver(answer);
  receivers.push(r);
  return r;
}

async function createTask(webhookUrl: string | null, webhookEvents: TaskStatus[] | null): Promise<TaskRecord> {
  const now = Date.now();
  return store.createTask({
    id: newTaskId(now),
    ...LLM,
    inputData: { prompt: 'hello' },
    parameters: {},
    priority: 0,
    maxAttempts: 3,
    timeoutMs: 60_000,
    createdAt: now,
    webhookUrl,
    webhookEvents,
  });
}

async function leaseAll(): Promise<Map<string, string>> {
  const leased = await store.leaseTasks({ workerId: 'w1', models: [LLM], limit: 100, leaseMs: 30_000, now: Date.now() });
  return new Map(leased.map((l) => [l.task.id, l.leaseToken]));
}

async function runAndComplete(task: TaskRecord, result: Record<string, unknown> = { generated_text: 'hi' }): Promise<TaskRecord> {
  const tokens = await leaseAll();
  const token = tokens.get(task.id);
  if (!token) throw new Error('task was not leased');
  const out = await store.completeTask(task.id, token, result, Date.now());
  expect(out.kind).toBe('ok');
  return out.task!;
}

async function onlyDelivery(taskId: string): Promise<WebhookDelivery> {
  const ds = await store.listDeliveries(taskId);
  expect(ds).toHaveLength(1);
  return ds[0];
}

/** Ticks until the task's only delivery leaves `pending`. */
async function settle(d: WebhookDispatcher, taskId: string, timeoutMs = 5000): Promise<WebhookDelivery> {
  return waitFor(
    async () => {
      await d.tick();
      const [del] = await store.listDeliveries(taskId);
      return del && del.state !== 'pending' ? del : null;
    },
    timeoutMs,
    `delivery of ${taskId} to settle`,
  );
}

// ---------------------------------------------------------------------------------------

describe('webhook delivery', () => {
  it('POSTs a signed payload for each subscribed status and nothing for the others', async () => {
    const rx = await receiver();
    const d = dispatcher();
    const watched = await createTask(rx.url, ['running', 'completed']);
    const cancelledOnly = await createTask(rx.url, ['cancelled']);
    await createTask(null, null);

    // pending is not subscribed: nothing to send yet.
    expect(await d.tick()).toBe(0);
    expect(rx.requests).toHaveLength(0);

    const tokens = await leaseAll();
    expect(tokens.size).toBe(3);
    expect(await d.tick()).toBe(1); // watched → running
    expect(await d.tick()).toBe(0);
    expect(rx.requests).toHaveLength(1);
    expect(rx.requests[0].body).toMatchObject({ event: 'task.running', attempt: 1, task: { task_id: watched.id, status: 'running' } });

    const done = await store.completeTask(watched.id, tokens.get(watched.id)!, { generated_text: 'hi there' }, Date.now());
    expect(done.kind).toBe('ok');
    // completed, but only cancelled is subscribed
    expect((await store.completeTask(cancelledOnly.id, tokens.get(cancelledOnly.id)!, { x: 1 }, Date.now())).kind).toBe('ok');
    expect(await d.tick()).toBe(1);
    expect(await d.tick()).toBe(0);
    expect(rx.requests).toHaveLength(2);
    expect(await store.listDeliveries(cancelledOnly.id)).toEqual([]);

    const deliveries = await store.listDeliveries(watched.id);
    expect(deliveries.map((x) => [x.event, x.state, x.attempts, x.lastStatusCode, x.lastError])).toEqual([
      ['running', 'delivered', 1, 200, null],
      ['completed', 'delivered', 1, 200, null],
    ]);
    expect(deliveries.every((x) => x.deliveredAt !== null)).toBe(true);

    const req = rx.requests[1];
    expect(req.body).toEqual({
      id: `whd_${deliveries[1].id}`,
      event: 'task.completed',
      created_at: new Date(deliveries[1].createdAt).toISOString(),
      attempt: 1,
      task: { task_id: watched.id, status: 'completed', model_name: 'llm-a', result: { generated_text: 'hi there' }, error: null },
    });
    expect(req.headers['content-type']).toBe('application/json');
    expect(req.headers['user-agent']).toBe('task-manager-webhooks/1');
    expect(req.headers['x-taskmanager-event']).toBe('task.completed');
    expect(req.headers['x-taskmanager-delivery']).toBe(`whd_${deliveries[1].id}`);

    const sig = req.headers['x-taskmanager-signature'] as string;
    expect(sig).toMatch(/^t=\d+,v1=[0-9a-f]{64}$/);
    const t = Number(/^t=(\d+)/.exec(sig)![1]);
    expect(Math.abs(t - Date.now() / 1000)).toBeLessThan(30);
    expect(verifySignature(SECRET, sig, req.raw)).toBe(true);
    expect(verifySignature(SECRET, sig, Buffer.from(req.raw))).toBe(true);
    expect(verifySignature('wrong-secret', sig, req.raw)).toBe(false);
    expect(verifySignature(SECRET, sig, req.raw.replace('hi there', 'hi thera'))).toBe(false);
    expect(verifySignature(SECRET, sig, `${req.raw} `)).toBe(false);
    // A replay ten minutes later is refused by the timestamp.
    expect(verifySignature(SECRET, sig, req.raw, 300, Date.now() + 10 * 60_000)).toBe(false);
    expect(verifySignature(SECRET, sig, req.raw, 3600, Date.now() + 10 * 60_000)).toBe(true);
  });

  it('sends a batch of due deliveries concurrently in one pass', async () => {
    const rx = await receiver();
    const d = dispatcher();
    const tasks = [];
    for (let i = 0; i < 5; i++) tasks.push(await createTask(rx.url, ['cancelled']));
    for (const t of tasks) expect((await store.cancelTask(t.id, Date.now())).kind).toBe('cancelled');
    expect(await d.tick()).toBe(5);
    expect(rx.requests.map((r) => r.body.task.task_id).sort()).toEqual(tasks.map((t) => t.id).sort());
    expect(rx.requests.every((r) => r.body.event === 'task.cancelled')).toBe(true);
  });

  it('retries a failing receiver with backoff: 500, 500, 200 is three attempts, then delivered', async () => {
    const rx = await receiver((n) => (n <= 2 ? 500 : 200));
    const d = dispatcher({ backoffMs: [50, 100] });
    const task = await createTask(rx.url, ['completed']);
    await runAndComplete(task);

    expect(await d.tick()).toBe(1);
    const afterFirst = await onlyDelivery(task.id);
    expect(afterFirst).toMatchObject({ state: 'pending', attempts: 1, lastStatusCode: 500, lastError: 'HTTP 500', deliveredAt: null });
    expect(afterFirst.nextAttemptAt).toBeGreaterThan(Date.now() - 1000);
    // Not due yet: the backoff holds it back.
    expect(await d.tick()).toBe(0);

    const final = await settle(d, task.id);
    expect(final).toMatchObject({ state: 'delivered', attempts: 3, lastStatusCode: 200, lastError: null });
    expect(final.deliveredAt).not.toBeNull();
    expect(rx.requests).toHaveLength(3);
    expect(rx.requests.map((r) => r.body.attempt)).toEqual([1, 2, 3]);
    expect(new Set(rx.requests.map((r) => r.headers['x-taskmanager-delivery'])).size).toBe(1);
    expect(new Set(rx.requests.map((r) => r.body.id)).size).toBe(1);
    // Every attempt is signed afresh and verifies.
    for (const r of rx.requests) expect(verifySignature(SECRET, r.headers['x-taskmanager-signature'] as string, r.raw)).toBe(true);
  });

  it('gives up after maxAttempts against a receiver that always fails', async () => {
    const rx = await receiver(() => 503);
    const d = dispatcher({ backoffMs: [20], maxAttempts: 3 });
    const task = await createTask(rx.url, ['completed']);
    await runAndComplete(task);

    const final = await settle(d, task.id);
    expect(final).toMatchObject({ state: 'failed', attempts: 3, lastStatusCode: 503, lastError: 'HTTP 503', deliveredAt: null });
    expect(rx.requests).toHaveLength(3);
    await sleep(60);
    expect(await d.tick()).toBe(0);
    expect(rx.requests).toHaveLength(3);
  });

  it('does not follow redirects: a 3xx is a failed attempt', async () => {
    const rx = await receiver(() => 302);
    const d = dispatcher({ maxAttempts: 1 });
    const task = await createTask(rx.url, ['completed']);
    await runAndComplete(task);
    const final = await settle(d, task.id);
    expect(final).toMatchObject({ state: 'failed', attempts: 1, lastStatusCode: 302, lastError: 'HTTP 302' });
    expect(rx.requests).toHaveLength(1);
  });

  it('counts a receiver that never answers as a failed attempt (timeout)', async () => {
    const rx = await receiver(() => 'hang');
    const d = dispatcher({ timeoutMs: 300, maxAttempts: 2, backoffMs: [60_000] });
    const task = await createTask(rx.url, ['completed']);
    await runAndComplete(task);

    const started = Date.now();
    expect(await d.tick()).toBe(1);
    const took = Date.now() - started;
    expect(took).toBeGreaterThanOrEqual(250);
    expect(took).toBeLessThan(3000);
    expect(rx.requests).toHaveLength(1);
    const del = await onlyDelivery(task.id);
    expect(del).toMatchObject({ state: 'pending', attempts: 1, lastStatusCode: null });
    expect(del.lastError).toMatch(/timeout after 300 ms/);
    expect(del.nextAttemptAt).toBeGreaterThan(Date.now() + 50_000);
  });

  it('records a refused connection as a failed attempt', async () => {
    const rx = await receiver();
    const deadUrl = rx.url;
    await receivers.pop()!.close(); // nothing listens on that port any more
    const d = dispatcher({ maxAttempts: 1 });
    const task = await createTask(deadUrl, ['completed']);
    await runAndComplete(task);
    const final = await settle(d, task.id);
    expect(final).toMatchObject({ state: 'failed', attempts: 1, lastStatusCode: null });
    expect(final.lastError).toMatch(/refused/);
  });

  it('refuses private destinations when allowPrivate is false, without the receiver seeing a request', async () => {
    const rx = await receiver();
    const d = dispatcher({ allowPrivate: false, maxAttempts: 2, backoffMs: [10] });
    const urls = [rx.url, `http://localhost:${rx.port}/hook`, `http://[::ffff:127.0.0.1]:${rx.port}/hook`, `http://2130706433:${rx.port}/hook`];
    const tasks = [];
    for (const u of urls) tasks.push(await createTask(u, ['completed']));
    const tokens = await leaseAll();
    for (const t of tasks) expect((await store.completeTask(t.id, tokens.get(t.id)!, { ok: true }, Date.now())).kind).toBe('ok');

    for (const t of tasks) {
      const final = await settle(d, t.id);
      expect(final).toMatchObject({ state: 'failed', attempts: 2, lastStatusCode: null });
      expect(final.lastError).toMatch(/private/);
    }
    expect(rx.requests).toHaveLength(0);
  });

  it('refuses a name that resolves to a private address at connect time (guarded lookup in the dispatcher)', async () => {
    // Needs a name other than localhost that resolves to private addresses only: this
    // machine's own hostname usually does (/etc/hosts). Where it does not, there is nothing to check.
    const name = hostname();
    const addrs = await dns.promises.lookup(name, { all: true }).catch(() => []);
    if (addrs.length === 0 || !addrs.every((a) => isPrivateAddress(a.address))) return;
    if (name === 'localhost' || name.endsWith('.localhost') || !/[a-z]/i.test(name)) return;
    const rx = await receiver();
    const d = dispatcher({ allowPrivate: false, maxAttempts: 1 });
    const task = await createTask(`http://${name}:${rx.port}/hook`, ['completed']);
    await runAndComplete(task);
    const final = await settle(d, task.id);
    expect(final).toMatchObject({ state: 'failed', attempts: 1, lastStatusCode: null });
    expect(final.lastError).toMatch(/^refused: resolves to a private address \(/);
    expect(rx.requests).toHaveLength(0);
  });

  it('the guarded lookup refuses names that resolve to private addresses (DNS pinning)', async () => {
    const rx = await receiver();
    // Straight through node:http with the lookup: the connection never opens.
    const err = await new Promise<NodeJS.ErrnoException>((resolve, reject) => {
      const req = http.request(`http://localhost:${rx.port}/hook`, { method: 'POST', lookup: guardedLookup, agent: false }, () =>
        reject(new Error('request went through')),
      );
      req.on('error', resolve);
      req.end('{}');
    });
    expect(err.code).toBe('EWEBHOOKPRIVATE');
    expect(err.message).toMatch(/localhost resolves to a private address/);
    expect(rx.requests).toHaveLength(0);

    // Both answer shapes (all: true for happy eyeballs, single otherwise).
    const open = makeGuardedLookup({ allowPrivate: true });
    const all = await new Promise<unknown>((resolve, reject) =>
      open('localhost', { all: true }, (e, addresses) => (e ? reject(e) : resolve(addresses))),
    );
    expect(Array.isArray(all)).toBe(true);
    expect((all as Array<{ address: string }>).every((a) => isPrivateAddress(a.address))).toBe(true);
    const single = await new Promise<[string, number | undefined]>((resolve, reject) =>
      open('localhost', { family: 4 }, (e, address, family) => (e ? reject(e) : resolve([address as string, family]))),
    );
    expect(single).toEqual(['127.0.0.1', 4]);

    // And with allowPrivate the same request reaches the receiver.
    const status = await new Promise<number>((resolve, reject) => {
      const req = http.request(`http://localhost:${rx.port}/hook`, { method: 'POST', lookup: open, agent: false, family: 4 }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on('error', reject);
      req.end('{}');
    });
    expect(status).toBe(200);
    expect(rx.requests).toHaveLength(1);
  });

  it('speaks https and verifies the certificate: a self-signed receiver is a failed attempt', async (ctx) => {
    let key: string;
    let cert: string;
    try {
      execFileSync(
        'openssl',
        ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1',
          '-keyout', join(dir.path, 'key.pem'), '-out', join(dir.path, 'cert.pem')],
        { stdio: 'ignore', timeout: 10_000 },
      );
      key = readFileSync(join(dir.path, 'key.pem'), 'utf8');
      cert = readFileSync(join(dir.path, 'cert.pem'), 'utf8');
    } catch {
      ctx.skip(); // no openssl here
      return;
    }
    let seen = 0;
    const server = https.createServer({ key, cert }, (_req, res) => {
      seen++;
      res.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const d = dispatcher({ maxAttempts: 1 });
      const task = await createTask(`https://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, ['completed']);
      await runAndComplete(task);
      const final = await settle(d, task.id);
      expect(final).toMatchObject({ state: 'failed', attempts: 1, lastStatusCode: null });
      expect(final.lastError).toMatch(/SELF_SIGNED|self[- ]signed/i);
      expect(seen).toBe(0);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });

  it('wakes on a bus event and delivers without waiting for the interval', async () => {
    const rx = await receiver();
    const bus = new LocalEventBus();
    const d = dispatcher({ bus, intervalMs: 60_000 });
    d.start();
    await sleep(20); // the start-up pass finds nothing
    const task = await createTask(rx.url, ['completed']);
    const done = await runAndComplete(task);
    const published = Date.now();
    bus.publish({ type: 'completed', task: done, at: published });
    await waitFor(async () => rx.requests.length > 0, 2000, 'the webhook after a bus event');
    expect(Date.now() - published).toBeLessThan(1000);
    expect(rx.requests[0].body).toMatchObject({ event: 'task.completed', task: { task_id: task.id } });
    await waitFor(async () => (await onlyDelivery(task.id)).state === 'delivered', 2000, 'delivered state');
    await bus.close();
  });

  it('start() picks up deliveries that came due while it was down; stop() waits for one in flight', async () => {
    const rx = await receiver(() => 'hang');
    const task = await createTask(rx.url, ['completed']);
    await runAndComplete(task);
    const d = dispatcher({ timeoutMs: 400, maxAttempts: 1 });
    d.start();
    await waitFor(async () => rx.requests.length > 0, 2000, 'the start-up pass');
    const t0 = Date.now();
    await d.stop();
    expect(Date.now() - t0).toBeLessThan(2000);
    // stop() returned after the attempt was recorded.
    expect(await onlyDelivery(task.id)).toMatchObject({ state: 'failed', attempts: 1 });
    expect(await d.tick()).toBe(0); // stopped
  });
});

// ---------------------------------------------------------------------------------------

describe('signatures', () => {
  const body = '{"id":"whd_1","event":"task.completed"}';
  const t = 1_700_000_000;
  const at = t * 1000;

  it('signPayload is HMAC-SHA256 over "<t>.<body>" in the Stripe layout', () => {
    const sig = signPayload('k', t, body);
    expect(sig).toMatch(/^t=1700000000,v1=[0-9a-f]{64}$/);
    expect(signPayload('k', t, Buffer.from(body))).toBe(sig);
    expect(signPayload('k', t + 1, body)).not.toBe(sig);
  });

  it('verifySignature accepts the right secret within tolerance and nothing else', () => {
    const sig = signPayload('k', t, body);
    expect(verifySignature('k', sig, body, 300, at)).toBe(true);
    expect(verifySignature('k', sig, body, 300, at + 299_000)).toBe(true);
    expect(verifySignature('k', sig, body, 300, at - 299_000)).toBe(true);
    expect(verifySignature('k', sig, body, 300, at + 301_000)).toBe(false); // too old: replay
    expect(verifySignature('k', sig, body, 300, at - 301_000)).toBe(false); // from the future
    expect(verifySignature('other', sig, body, 300, at)).toBe(false);
    expect(verifySignature('k', sig, body.replace('completed', 'failed'), 300, at)).toBe(false);
    // A new timestamp with the old MAC does not verify.
    expect(verifySignature('k', sig.replace(`t=${t}`, `t=${t + 10}`), body, 300, at)).toBe(false);
    // Secret rotation: any matching v1 entry passes.
    const rotated = `${sig},v1=${signPayload('old', t, body).split('v1=')[1]}`;
    expect(verifySignature('old', rotated, body, 300, at)).toBe(true);
    expect(verifySignature('k', rotated, body, 300, at)).toBe(true);
    for (const bad of [undefined, null, '', 'garbage', `t=${t}`, `v1=${'0'.repeat(64)}`, `t=abc,v1=${'0'.repeat(64)}`, `t=${t},v1=zz`]) {
      expect(verifySignature('k', bad, body, 300, at)).toBe(false);
    }
  });
});

// ---------------------------------------------------------------------------------------

describe('validateWebhookUrl', () => {
  const refused: Array<[string, string]> = [
    ['ftp://example.com/hook', 'scheme_not_allowed'],
    ['file:///etc/passwd', 'scheme_not_allowed'],
    ['javascript:alert(1)', 'scheme_not_allowed'],
    ['not a url', 'invalid_url'],
    ['/relative/hook', 'invalid_url'],
    ['https://user:pass@example.com/hook', 'credentials_not_allowed'],
    ['https://user@example.com/hook', 'credentials_not_allowed'],
    ['http://10.0.0.5/hook', 'private_address'],
    ['http://192.168.1.10:8080/hook', 'private_address'],
    ['http://172.16.3.4/hook', 'private_address'],
    ['http://169.254.169.254/latest/meta-data/', 'private_address'],
    ['http://127.0.0.1/hook', 'private_address'],
    ['http://100.64.0.1/hook', 'private_address'],
    ['http://0.0.0.0/hook', 'private_address'],
    ['http://[::1]/hook', 'private_address'],
    ['http://[::]/hook', 'private_address'],
    ['http://[::ffff:127.0.0.1]/hook', 'private_address'],
    ['http://[::ffff:a9fe:a9fe]/hook', 'private_address'],
    ['http://[fd00::1]/hook', 'private_address'],
    ['http://[fe80::1]/hook', 'private_address'],
    ['http://0x7f000001/hook', 'private_address'],
    ['http://2130706433/hook', 'private_address'],
    ['http://0177.0.0.1/hook', 'private_address'],
    ['http://127.1/hook', 'private_address'],
    ['http://0xa9.0xfe.0xa9.0xfe/hook', 'private_address'],
    ['http://localhost/hook', 'localhost_not_allowed'],
    ['http://LOCALHOST:3000/hook', 'localhost_not_allowed'],
    ['http://localhost./hook', 'localhost_not_allowed'],
    ['http://api.localhost/hook', 'localhost_not_allowed'],
  ];

  it.each(refused)('refuses %s (%s)', (raw, reason) => {
    let err: unknown;
    try {
      validateWebhookUrl(raw, { allowPrivate: false });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AppError);
    const e = err as AppError;
    expect(e.code).toBe('VALIDATION_ERROR');
    expect(e.status).toBe(422);
    expect(e.details).toEqual({ field: 'webhook_url', reason });
    expect(e.message).toMatch(/webhook_url/);
  });

  it('allows private and loopback destinations with allowPrivate, but never bad schemes or credentials', () => {
    for (const [raw, reason] of refused) {
      if (reason === 'private_address' || reason === 'localhost_not_allowed') {
        expect(validateWebhookUrl(raw, { allowPrivate: true })).toBeInstanceOf(URL);
      } else {
        expect(() => validateWebhookUrl(raw, { allowPrivate: true })).toThrow(AppError);
      }
    }
  });

  it('accepts public URLs and returns the parsed URL', () => {
    const u = validateWebhookUrl('https://example.com/hook', { allowPrivate: false });
    expect(u.href).toBe('https://example.com/hook');
    for (const ok of [
      'http://example.com:8080/a/b?token=x',
      'https://8.8.8.8/hook',
      'https://[2606:4700:4700::1111]/hook',
      'https://hooks.example.org/',
      'https://localhost.example.com/hook',
    ]) {
      expect(validateWebhookUrl(ok, { allowPrivate: false })).toBeInstanceOf(URL);
    }
  });
});

describe('isPrivateAddress', () => {
  const priv = [
    '0.0.0.0',
    '0.1.2.3',
    '10.0.0.1',
    '10.255.255.255',
    '100.64.0.1',
    '100.127.255.254',
    '127.0.0.1',
    '127.255.255.254',
    '169.254.169.254',
    '172.16.0.1',
    '172.31.255.255',
    '192.0.0.8',
    '192.0.2.1',
    '192.168.0.1',
    '198.18.0.1',
    '198.19.255.255',
    '198.51.100.7',
    '203.0.113.9',
    '224.0.0.1',
    '239.255.255.250',
    '240.0.0.1',
    '255.255.255.255',
    '::',
    '::1',
    '[::1]',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.1.2.3',
    '::ffff:169.254.169.254',
    '0:0:0:0:0:ffff:c0a8:0101',
    '::127.0.0.1',
    '64:ff9b::10.0.0.1',
    '64:ff9b::7f00:1',
    '2002:7f00:1::',
    '2002:c0a8:101::1',
    'fc00::1',
    'fd12:3456:789a::1',
    'fe80::1',
    'fe80::1%eth0',
    'febf::1',
    'fec0::1',
    'ff02::1',
    'ff05::1:3',
    '100::1',
    '2001:db8::1',
    '2001::1',
    '3fff::1',
    '0x7f000001',
    '2130706433',
    '0177.0.0.1',
    '127.1',
    'localhost',
    'example.com',
    '',
    'not an ip',
  ];
  const pub = [
    '1.1.1.1',
    '8.8.8.8',
    '9.255.255.255',
    '11.0.0.1',
    '100.63.255.255',
    '100.128.0.1',
    '126.255.255.255',
    '128.0.0.1',
    '169.253.255.255',
    '172.15.255.255',
    '172.32.0.1',
    '192.167.255.255',
    '192.169.0.1',
    '198.17.255.255',
    '198.20.0.1',
    '223.255.255.255',
    '93.184.216.34',
    '2606:4700:4700::1111',
    '[2606:4700:4700::1111]',
    '2a00:1450:4001:80b::200e',
    '2001:4860:4860::8888',
    '::ffff:8.8.8.8',
    '::ffff:808:808',
    '64:ff9b::8.8.8.8',
    '2002:808:808::1',
    '0x08080808',
    '134744072',
  ];

  it.each(priv)('%s is private', (ip) => {
    expect(isPrivateAddress(ip)).toBe(true);
  });

  it.each(pub)('%s is public', (ip) => {
    expect(isPrivateAddress(ip)).toBe(false);
  });
});
