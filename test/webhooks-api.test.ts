/** Webhooks through the API: signed deliveries, retries after a failing receiver, attempts visible on the task. */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifySignature } from '../src/webhooks/dispatcher.js';
import { GateEngine } from './helpers/engines.js';
import { json, post, startServer, waitFor, type TestServer } from './helpers/server.js';

const SECRET = 'webhook-secret-for-tests-0001';

interface Received {
  headers: IncomingMessage['headers'];
  body: string;
}

describe('webhooks through the API', () => {
  let srv: TestServer;
  let receiver: Server;
  let url: string;
  const received: Received[] = [];
  let failuresLeft = 0;

  beforeAll(async () => {
    receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (d) => (body += d));
      req.on('end', () => {
        received.push({ headers: req.headers, body });
        if (failuresLeft > 0) {
          failuresLeft--;
          res.writeHead(503).end('busy');
        } else res.writeHead(204).end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', () => r()));
    const addr = receiver.address();
    url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/hooks/task`;
    const engine = new GateEngine();
    engine.autoResult = () => ({ generated_text: 'hi' });
    srv = await startServer({ engines: { gate: engine }, env: { TASK_MANAGER_WEBHOOK_SECRET: SECRET, TASK_MANAGER_WEBHOOK_ALLOW_PRIVATE: 'true' } });
  });
  afterAll(async () => {
    await srv.close();
    await new Promise((r) => receiver.close(r));
  });

  it('delivers a signed POST for the subscribed statuses', async () => {
    const t = await json(await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt: 'x' }, webhook_url: url }));
    const got = await waitFor(() => received.find((r) => JSON.parse(r.body).task?.task_id === t.task_id), 10_000, 'delivery');
    const payload = JSON.parse(got.body);
    expect(payload).toMatchObject({ event: 'task.completed', attempt: 1, task: { task_id: t.task_id, status: 'completed', result: { generated_text: 'hi' } } });
    expect(got.headers['x-taskmanager-event']).toBe('task.completed');
    expect(verifySignature(SECRET, String(got.headers['x-taskmanager-signature']), got.body)).toBe(true);
    expect(verifySignature('another-secret-0000000', String(got.headers['x-taskmanager-signature']), got.body)).toBe(false);
    // only completed (the default events), not pending or running
    expect(received.filter((r) => JSON.parse(r.body).task?.task_id === t.task_id)).toHaveLength(1);
    const task = await json(await fetch(`${srv.url}/tasks/${t.task_id}`));
    await waitFor(async () => (await json(await fetch(`${srv.url}/tasks/${t.task_id}`))).webhook.deliveries[0]?.state === 'delivered');
    expect(task.webhook).toMatchObject({ url, events: ['completed', 'failed', 'cancelled'] });
  });

  it('retries after a failing receiver; the attempts are visible on the task', async () => {
    failuresLeft = 1;
    const t = await json(
      await post(`${srv.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'x' }, webhook_url: url, webhook_events: ['cancelled'] }),
    );
    await fetch(`${srv.url}/tasks/${t.task_id}`, { method: 'DELETE' });
    const after = await waitFor(async () => {
      const task = await json(await fetch(`${srv.url}/tasks/${t.task_id}`));
      return task.webhook.deliveries[0]?.state === 'delivered' ? task : null;
    }, 15_000, 'retry to succeed');
    expect(after.webhook.deliveries[0]).toMatchObject({ event: 'cancelled', attempts: 2, last_status_code: 204 });
    const mine = received.filter((r) => JSON.parse(r.body).task?.task_id === t.task_id);
    expect(mine.map((r) => JSON.parse(r.body).attempt)).toEqual([1, 2]);
  });

  it('refuses private targets unless allowed, and webhooks when no secret is set', async () => {
    const strict = await startServer({ env: { TASK_MANAGER_WEBHOOK_SECRET: SECRET } });
    try {
      for (const target of ['http://127.0.0.1:9/x', 'http://localhost/x', 'http://169.254.169.254/latest', 'ftp://example.com/x']) {
        const res = await post(`${strict.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'x' }, webhook_url: target });
        expect(res.status, target).toBe(422);
        expect((await json(res)).error.details.field).toBe('webhook_url');
      }
      expect((await post(`${strict.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'x' }, webhook_url: 'https://example.com/hook' })).status).toBe(201);
    } finally {
      await strict.close();
    }
    const none = await startServer();
    try {
      const res = await post(`${none.url}/tasks`, { task_type: 'text_generation', model_name: 'unserved-llm', input_data: { prompt: 'x' }, webhook_url: 'https://example.com/hook' });
      expect(res.status).toBe(422);
      expect((await json(res)).error.message).toMatch(/TASK_MANAGER_WEBHOOK_SECRET/);
    } finally {
      await none.close();
    }
  });
});
