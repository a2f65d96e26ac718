/** Property tests: whatever arrives, the answer is a 2xx or a 4xx in the error format — never a 5xx. */
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ERROR_CODES } from '../src/core/errors.js';
import { startServer, type TestServer } from './helpers/server.js';

function checkAnswer(status: number, text: string, contentType: string | undefined, what: string): void {
  if (status >= 500) throw new Error(`${what} → ${status}: ${text.slice(0, 300)}`);
  if (status < 400) return;
  expect(contentType ?? '', what).toMatch(/^application\/json/);
  const body = JSON.parse(text);
  expect(Object.keys(body).sort(), what).toEqual(['error', 'request_id', 'timestamp']);
  expect(Object.keys(ERROR_CODES), what).toContain(body.error.code);
  expect(ERROR_CODES[body.error.code as keyof typeof ERROR_CODES].status, what).toBe(status);
  expect(typeof body.error.message).toBe('string');
  expect(Number.isNaN(Date.parse(body.timestamp))).toBe(false);
  expect(body.request_id).toMatch(/^req_/);
}

const taskTypes = fc.constantFrom('text_generation', 'image_generation', 'text_to_speech', 'image_to_text', 'video', '', 'TEXT_GENERATION');
const models = fc.constantFrom('test-llm', 'test-tts', 'test-ocr', 'test-sd', 'unserved-llm', 'nope', '');
const anyJson = fc.jsonValue({ maxDepth: 3 });

/** Bodies near the valid shape, so validation deep inside is exercised, not only the top level. */
const nearValidBody = fc.record(
  {
    task_type: fc.oneof(taskTypes, anyJson),
    model_name: fc.oneof(models, anyJson),
    input_data: fc.oneof(
      fc.record({ prompt: fc.oneof(fc.string(), anyJson) }, { requiredKeys: [] }),
      fc.record({ text: fc.oneof(fc.string(), anyJson) }, { requiredKeys: [] }),
      fc.record({ image: fc.oneof(fc.base64String(), fc.string(), anyJson) }, { requiredKeys: [] }),
      fc.dictionary(fc.string(), anyJson),
      anyJson,
    ),
    parameters: fc.oneof(
      fc.record(
        {
          max_length: fc.oneof(fc.integer(), fc.double(), anyJson),
          temperature: fc.oneof(fc.double(), anyJson),
          top_p: fc.double(),
          do_sample: fc.oneof(fc.boolean(), anyJson),
          stop: fc.oneof(fc.string(), fc.array(fc.string())),
          width: fc.integer(),
          voice: fc.string(),
          speed: fc.double(),
        },
        { requiredKeys: [] },
      ),
      anyJson,
    ),
    priority: fc.oneof(fc.integer(), anyJson),
    max_attempts: fc.oneof(fc.integer(), anyJson),
    timeout_seconds: fc.oneof(fc.integer(), anyJson),
    [fc.sample(fc.string(), 1)[0] || 'x']: anyJson,
  },
  { requiredKeys: [] },
);

const queryValue = fc.oneof(
  fc.string(),
  fc.constantFrom('pending', 'completed', 'created_at', 'status', 'asc', 'desc', '-1', '0', '50', '1e3', '999999999999', 'NaN', '[]', '%', '%zz'),
);
const queryString = fc
  .array(fc.tuple(fc.constantFrom('status', 'task_type', 'model_name', 'limit', 'offset', 'sort_by', 'sort_order', 'x', ''), queryValue), { maxLength: 6 })
  .map((pairs) => pairs.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&'));

describe('no input makes a 5xx', () => {
  let srv: TestServer;
  beforeAll(async () => {
    srv = await startServer();
  });
  afterAll(async () => {
    await srv.close();
  });

  it('POST /tasks with arbitrary JSON values', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(anyJson, nearValidBody), async (body) => {
        const res = await srv.app.inject({ method: 'POST', url: '/tasks', payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } });
        checkAnswer(res.statusCode, res.body, res.headers['content-type'] as string, `POST ${JSON.stringify(body).slice(0, 200)}`);
      }),
      { numRuns: 400 },
    );
  });

  it('POST /tasks with arbitrary bytes and content types', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.string(), fc.uint8Array({ maxLength: 200 }).map((a) => Buffer.from(a).toString('latin1'))),
        fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data', 'application/octet-stream', ''),
        async (payload, type) => {
          const headers: Record<string, string> = type ? { 'content-type': type } : {};
          const res = await srv.app.inject({ method: 'POST', url: '/tasks', payload, headers });
          checkAnswer(res.statusCode, res.body, res.headers['content-type'] as string, `POST raw ${type} ${JSON.stringify(payload).slice(0, 100)}`);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('GET /tasks with arbitrary query strings', async () => {
    await fc.assert(
      fc.asyncProperty(queryString, async (qs) => {
        const res = await srv.app.inject({ method: 'GET', url: `/tasks?${qs}` });
        checkAnswer(res.statusCode, res.body, res.headers['content-type'] as string, `GET /tasks?${qs}`);
      }),
      { numRuns: 300 },
    );
  });

  it('task routes, health and metrics with arbitrary ids, methods and queries', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('GET', 'DELETE', 'POST', 'PUT', 'PATCH', 'OPTIONS'),
        fc.oneof(fc.string(), fc.uuid().map((u) => `task_${u}`)),
        queryString,
        fc.constantFrom('/tasks/', '/health?', '/metrics?', '/', '/ws/', '/tasks/x/'),
        async (method, id, qs, base) => {
          const url = base.endsWith('?') ? `${base}${qs}` : `${base}${encodeURIComponent(id)}?${qs}`;
          const res = await srv.app.inject({ method: method as 'GET', url });
          checkAnswer(res.statusCode, res.body, res.headers['content-type'] as string, `${method} ${url}`);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('the same over a real socket, with raw request lines', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(anyJson, nearValidBody), queryString, async (body, qs) => {
        const a = await fetch(`${srv.url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        checkAnswer(a.status, await a.text(), a.headers.get('content-type') ?? undefined, 'POST over HTTP');
        const b = await fetch(`${srv.url}/tasks?${qs}`);
        checkAnswer(b.status, await b.text(), b.headers.get('content-type') ?? undefined, `GET over HTTP ?${qs}`);
      }),
      { numRuns: 100 },
    );
  });
});
