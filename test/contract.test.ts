/** Black-box contract tests: every endpoint, field, status and error code of the API reference, over real HTTP. */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateEngine } from './helpers/engines.js';
import { expectErrorShape, json, post, startServer, waitFor, type TestServer } from './helpers/server.js';

const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3})?Z$/;
const TASK_ID = /^task_[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/** Writes `raw` on a new connection and reads until the server closes it. */
function rawExchange(url: string, raw: string): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.end(raw));
    let text = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => (text += d));
    socket.on('error', reject);
    socket.on('close', () => resolve(text));
  });
}

const llmTask = (prompt = 'Hello world!') => ({ task_type: 'text_generation', model_name: 'test-llm', input_data: { prompt } });

describe('API contract (SQLite, real listening server)', () => {
  let srv: TestServer;
  let engine: GateEngine;

  beforeAll(async () => {
    engine = new GateEngine();
    srv = await startServer({ engines: { gate: engine }, env: { TASK_MANAGER_WORKER_CONCURRENCY: '16' } });
  });
  afterAll(async () => {
    await srv.close();
  });

  describe('POST /tasks', () => {
    it('creates a task: 201 with every documented field', async () => {
      const res = await post(`${srv.url}/tasks`, {
        task_type: 'text_generation',
        model_name: 'unserved-llm',
        input_data: { prompt: 'Hello, how are you today?' },
        parameters: { max_length: 100, temperature: 0.8, do_sample: true },
      });
      expect(res.status).toBe(201);
      expect(res.headers.get('content-type')).toMatch(/^application\/json/);
      const body = await json(res);
      expect(body.task_id).toMatch(TASK_ID);
      expect(body).toMatchObject({ status: 'pending', task_type: 'text_generation', model_name: 'unserved-llm' });
      expect(body.created_at).toMatch(ISO);
      expect(body.estimated_completion).toMatch(ISO);
      expect(Date.parse(body.estimated_completion)).toBeGreaterThan(Date.parse(body.created_at));
      expect(typeof body.queue_position).toBe('number');
      expect(res.headers.get('location')).toBe(`/tasks/${body.task_id}`);
    });

    it('issues time-ordered ids', async () => {
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push((await json(await post(`${srv.url}/tasks`, { ...llmTask(), model_name: 'unserved-llm' }))).task_id);
      expect([...ids].sort()).toEqual(ids);
    });

    it('accepts every task type with its own input', async () => {
      const cases = [
        { task_type: 'text_to_speech', model_name: 'test-tts', input_data: { text: 'Hi there' }, parameters: { voice: 'en', speed: 1.2 } },
        { task_type: 'image_to_text', model_name: 'test-ocr', input_data: { image: 'data:image/png;base64,iVBORw0KGgo=' } },
        // Line breaks inside the base64, as some encoders write it.
        { task_type: 'image_to_text', model_name: 'test-ocr', input_data: { image: '/9j/\n4AAQ\r\nSkZJRgABAQ==' } },
        { task_type: 'image_generation', model_name: 'test-sd', input_data: { prompt: 'a cat' }, parameters: { width: 512, height: 512, steps: 20 } },
      ];
      for (const c of cases) {
        const res = await post(`${srv.url}/tasks`, c);
        expect(res.status, JSON.stringify(c)).toBe(201);
        expect((await json(res)).task_type).toBe(c.task_type);
      }
    });

    it.each([
      ['missing task_type', { model_name: 'test-llm', input_data: { prompt: 'x' } }, 'task_type'],
      ['unknown task_type', { task_type: 'video', model_name: 'test-llm', input_data: { prompt: 'x' } }, 'task_type'],
      ['missing model_name', { task_type: 'text_generation', input_data: { prompt: 'x' } }, 'model_name'],
      ['empty model_name', { task_type: 'text_generation', model_name: '', input_data: { prompt: 'x' } }, 'model_name'],
      ['missing input_data', { task_type: 'text_generation', model_name: 'test-llm' }, 'input_data'],
      ['input_data not an object', { task_type: 'text_generation', model_name: 'test-llm', input_data: 'hi' }, 'input_data'],
      ['unknown top-level field', { ...llmTask(), extra: 1 }, 'extra'],
      ['empty prompt', llmTask(''), 'input_data.prompt'],
      ['blank prompt', llmTask('   '), 'input_data.prompt'],
      ['prompt of wrong type', { ...llmTask(), input_data: { prompt: 42 } }, 'input_data.prompt'],
      ['unknown input field', { ...llmTask(), input_data: { prompt: 'x', foo: 1 } }, 'input_data.foo'],
      ['temperature too high', { ...llmTask(), parameters: { temperature: 9 } }, 'parameters.temperature'],
      ['max_length zero', { ...llmTask(), parameters: { max_length: 0 } }, 'parameters.max_length'],
      ['do_sample not boolean', { ...llmTask(), parameters: { do_sample: 'yes' } }, 'parameters.do_sample'],
      ['unknown parameter', { ...llmTask(), parameters: { num_beams: 4 } }, 'parameters.num_beams'],
      ['priority as string', { ...llmTask(), priority: '5' }, 'priority'],
      ['priority out of range', { ...llmTask(), priority: 1000 }, 'priority'],
      ['tts without text', { task_type: 'text_to_speech', model_name: 'test-tts', input_data: { prompt: 'x' } }, 'input_data.text'],
      ['image not base64', { task_type: 'image_to_text', model_name: 'test-ocr', input_data: { image: 'http://x/y.png' } }, 'input_data.image'],
      ['width not multiple of 8', { task_type: 'image_generation', model_name: 'test-sd', input_data: { prompt: 'x' }, parameters: { width: 513 } }, 'parameters.width'],
    ])('422 VALIDATION_ERROR: %s', async (_name, body, field) => {
      const res = await post(`${srv.url}/tasks`, body);
      expect(res.status).toBe(422);
      const err = await json(res);
      expectErrorShape(err, 'VALIDATION_ERROR');
      expect(err.error.details.field).toBe(field);
      expect(err.request_id).toBe(res.headers.get('x-request-id'));
    });

    it.each([
      ['an empty prompt', llmTask(''), 'Must not be empty or blank'],
      ['a blank prompt', llmTask(' \t '), 'Must not be empty or blank'],
      ['a prompt of the wrong type', { ...llmTask(), input_data: { prompt: 5 } }, 'Expected string'],
      ['a text over its length', { task_type: 'text_to_speech', model_name: 'test-tts', input_data: { text: 'a'.repeat(10_001) } }, 'Expected string length less or equal to 10000'],
      ['base64 that is not an image', { task_type: 'image_to_text', model_name: 'test-ocr', input_data: { image: Buffer.from('hello world').toString('base64') } }, 'Not a PNG, JPEG, GIF, BMP, WebP or TIFF image'],
      ['a data URL that is not an image', { task_type: 'image_to_text', model_name: 'test-ocr', input_data: { image: `data:image/png;base64,${Buffer.from('%PDF-1.7 not an image at all').toString('base64')}` } }, 'Not a PNG, JPEG, GIF, BMP, WebP or TIFF image'],
    ])('422 says why for %s', async (_name, body, reason) => {
      const res = await post(`${srv.url}/tasks`, body);
      expect(res.status).toBe(422);
      expect((await json(res)).error.details.reason).toBe(reason);
    });

    it('400 MODEL_NOT_FOUND for a model outside the catalog, with the spec\'s details', async () => {
      const res = await post(`${srv.url}/tasks`, { ...llmTask(), model_name: 'microsoft/DialoGPT-medium' });
      expect(res.status).toBe(400);
      const err = await json(res);
      expectErrorShape(err, 'MODEL_NOT_FOUND');
      expect(err.error.details).toMatchObject({ field: 'model_name', reason: 'Model not found' });
      expect(err.error.details.available).toContain('test-llm');
    });

    it('400 MODEL_NOT_FOUND when the model does not serve the task type', async () => {
      const res = await post(`${srv.url}/tasks`, { task_type: 'text_to_speech', model_name: 'test-llm', input_data: { text: 'x' } });
      expect(res.status).toBe(400);
      expectErrorShape(await json(res), 'MODEL_NOT_FOUND');
    });

    it('400 INVALID_REQUEST for malformed JSON', async () => {
      const res = await fetch(`${srv.url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"task_type": ' });
      expect(res.status).toBe(400);
      expectErrorShape(await json(res), 'INVALID_REQUEST');
    });

    it('400 INVALID_REQUEST for an empty JSON body', async () => {
      const res = await fetch(`${srv.url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '' });
      expect(res.status).toBe(400);
      expectErrorShape(await json(res), 'INVALID_REQUEST');
    });

    it('422 when the body is not an object, or absent', async () => {
      for (const body of ['[]', '"x"', 'null', '42']) {
        const res = await fetch(`${srv.url}/tasks`, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
        expect([400, 422], body).toContain(res.status);
        const err = await json(res);
        expect(['VALIDATION_ERROR', 'INVALID_REQUEST']).toContain(err.error.code);
        expectErrorShape(err, err.error.code);
      }
      const none = await fetch(`${srv.url}/tasks`, { method: 'POST' });
      expect(none.status).toBe(422);
      expectErrorShape(await json(none), 'VALIDATION_ERROR');
    });

    it('415 UNSUPPORTED_MEDIA_TYPE for a non-JSON body', async () => {
      const res = await fetch(`${srv.url}/tasks`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' });
      expect(res.status).toBe(415);
      expectErrorShape(await json(res), 'UNSUPPORTED_MEDIA_TYPE');
    });

    it('413 PAYLOAD_TOO_LARGE beyond the body limit', async () => {
      const big = 'x'.repeat(srv.config.bodyLimitBytes + 10);
      const res = await post(`${srv.url}/tasks`, llmTask(big));
      expect(res.status).toBe(413);
      expectErrorShape(await json(res), 'PAYLOAD_TOO_LARGE');
    });

    it('refuses prototype-poisoning bodies without crashing', async () => {
      const res = await fetch(`${srv.url}/tasks`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"task_type":"text_generation","model_name":"test-llm","input_data":{"prompt":"x"},"__proto__":{"polluted":true}}',
      });
      expect(res.status).toBe(400);
      const err = await json(res);
      expectErrorShape(err, 'INVALID_REQUEST');
      expect(err.error.message).toContain('__proto__');
      expect(({} as any).polluted).toBeUndefined();
    });
  });

  describe('GET /tasks/{task_id}', () => {
    it('returns a completed task with result, worker and timestamps', async () => {
      const created = await json(await post(`${srv.url}/tasks`, llmTask('Say hi')));
      await waitFor(() => engine.runs.find((r) => r.task.id === created.task_id), 5000, 'engine run');
      engine.finish(created.task_id, { generated_text: 'Hi!', tokens_generated: 2, inference_time: 0.01 });
      const task = await waitFor(async () => {
        const t = await json(await fetch(`${srv.url}/tasks/${created.task_id}`));
        return t.status === 'completed' ? t : null;
      });
      expect(task).toMatchObject({
        task_id: created.task_id,
        status: 'completed',
        task_type: 'text_generation',
        model_name: 'test-llm',
        worker_id: 'worker_embedded',
        result: { generated_text: 'Hi!', tokens_generated: 2, inference_time: 0.01 },
        error: null,
        attempts: 1,
        input_data: { prompt: 'Say hi' },
        estimated_completion: null,
        queue_position: null,
        progress: 1,
      });
      for (const f of ['created_at', 'started_at', 'completed_at']) expect(task[f]).toMatch(ISO);
      expect(Date.parse(task.started_at)).toBeGreaterThanOrEqual(Date.parse(task.created_at));
      expect(Date.parse(task.completed_at)).toBeGreaterThanOrEqual(Date.parse(task.started_at));
    });

    it('reports position and estimate for a pending task', async () => {
      const a = await json(await post(`${srv.url}/tasks`, { ...llmTask(), model_name: 'unserved-llm' }));
      const t = await json(await fetch(`${srv.url}/tasks/${a.task_id}`));
      expect(t.status).toBe('pending');
      expect(t.queue_position).toBeGreaterThanOrEqual(0);
      expect(t.estimated_completion).toMatch(ISO);
      expect(t.started_at).toBeNull();
      expect(t.worker_id).toBeNull();
    });

    it('404 TASK_NOT_FOUND for unknown and malformed ids', async () => {
      for (const id of ['task_123e4567-e89b-12d3-a456-426614174000', 'nope', '%20', '']) {
        const res = await fetch(`${srv.url}/tasks/${id}`);
        expect(res.status, id).toBe(404);
        expectErrorShape(await json(res), 'TASK_NOT_FOUND');
      }
      const cancel = await fetch(`${srv.url}/tasks/`, { method: 'DELETE' });
      expect(cancel.status).toBe(404);
      expectErrorShape(await json(cancel), 'TASK_NOT_FOUND');
    });
  });

  describe('GET /tasks', () => {
    it('lists with the documented envelope and defaults', async () => {
      const res = await fetch(`${srv.url}/tasks`);
      expect(res.status).toBe(200);
      const body = await json(res);
      expect(body).toMatchObject({ limit: 50, offset: 0 });
      expect(body.total).toBeGreaterThan(0);
      expect(Array.isArray(body.tasks)).toBe(true);
      const t = body.tasks[0];
      for (const f of ['task_id', 'status', 'task_type', 'model_name', 'created_at', 'completed_at']) expect(t).toHaveProperty(f);
      // newest first by default
      const times = body.tasks.map((x: any) => Date.parse(x.created_at));
      expect([...times].sort((a, b) => b - a)).toEqual(times);
    });

    it('filters by status, task_type and model_name, with limit and offset', async () => {
      const body = await json(await fetch(`${srv.url}/tasks?status=completed&limit=10`));
      expect(body.limit).toBe(10);
      expect(body.tasks.length).toBeGreaterThan(0);
      expect(body.tasks.every((t: any) => t.status === 'completed')).toBe(true);
      expect(body.total).toBe(body.tasks.length);

      const tts = await json(await fetch(`${srv.url}/tasks?task_type=text_to_speech`));
      expect(tts.tasks.length).toBeGreaterThan(0);
      expect(tts.tasks.every((t: any) => t.task_type === 'text_to_speech')).toBe(true);

      const byModel = await json(await fetch(`${srv.url}/tasks?model_name=unserved-llm&sort_order=asc&limit=2&offset=1`));
      expect(byModel.tasks).toHaveLength(2);
      expect(byModel.offset).toBe(1);
      expect(byModel.tasks.every((t: any) => t.model_name === 'unserved-llm')).toBe(true);
      const first3 = await json(await fetch(`${srv.url}/tasks?model_name=unserved-llm&sort_order=asc&limit=3`));
      expect(byModel.tasks.map((t: any) => t.task_id)).toEqual(first3.tasks.slice(1).map((t: any) => t.task_id));
    });

    it('sorts by status and task_type', async () => {
      const s = await json(await fetch(`${srv.url}/tasks?sort_by=status&sort_order=asc&limit=1000`));
      const statuses = s.tasks.map((t: any) => t.status);
      expect([...statuses].sort()).toEqual(statuses);
      const t = await json(await fetch(`${srv.url}/tasks?sort_by=task_type&sort_order=desc&limit=1000`));
      const types = t.tasks.map((x: any) => x.task_type);
      expect([...types].sort().reverse()).toEqual(types);
    });

    it.each([
      ['status=done', 'status'],
      ['task_type=video', 'task_type'],
      ['limit=0', 'limit'],
      ['limit=1001', 'limit'],
      ['limit=abc', 'limit'],
      ['offset=-1', 'offset'],
      ['sort_by=priority', 'sort_by'],
      ['sort_order=up', 'sort_order'],
      ['bogus=1', 'bogus'],
    ])('422 VALIDATION_ERROR for %s', async (qs, field) => {
      const res = await fetch(`${srv.url}/tasks?${qs}`);
      expect(res.status).toBe(422);
      const err = await json(res);
      expectErrorShape(err, 'VALIDATION_ERROR');
      expect(err.error.details.field).toBe(field);
    });
  });

  describe('DELETE /tasks/{task_id}', () => {
    it('cancels a pending task', async () => {
      const t = await json(await post(`${srv.url}/tasks`, { ...llmTask(), model_name: 'unserved-llm' }));
      const res = await fetch(`${srv.url}/tasks/${t.task_id}`, { method: 'DELETE' });
      expect(res.status).toBe(200);
      const body = await json(res);
      expect(body).toEqual({ task_id: t.task_id, status: 'cancelled', cancelled_at: expect.stringMatching(ISO) });
      expect((await json(await fetch(`${srv.url}/tasks/${t.task_id}`))).status).toBe('cancelled');
      // Cancelling again is harmless and returns the same record.
      const again = await json(await fetch(`${srv.url}/tasks/${t.task_id}`, { method: 'DELETE' }));
      expect(again).toEqual(body);
    });

    it('cancels a running task and stops its engine', async () => {
      const t = await json(await post(`${srv.url}/tasks`, llmTask('long job')));
      const run = await waitFor(() => engine.runs.find((r) => r.task.id === t.task_id), 5000, 'run start');
      const cancelledAt = Date.now();
      const res = await fetch(`${srv.url}/tasks/${t.task_id}`, { method: 'DELETE' });
      expect(res.status).toBe(200);
      await waitFor(() => run.abortedAt, 1000, 'engine abort');
      expect(run.abortedAt! - cancelledAt).toBeLessThan(1000);
      expect(engine.aborted.find((a) => a.taskId === t.task_id)?.reason).toBe('cancelled');
      const final = await json(await fetch(`${srv.url}/tasks/${t.task_id}`));
      expect(final.status).toBe('cancelled');
      expect(final.result).toBeNull();
    });

    it('409 TASK_NOT_CANCELLABLE for a completed task', async () => {
      const done = (await json(await fetch(`${srv.url}/tasks?status=completed&limit=1`))).tasks[0];
      const res = await fetch(`${srv.url}/tasks/${done.task_id}`, { method: 'DELETE' });
      expect(res.status).toBe(409);
      const err = await json(res);
      expectErrorShape(err, 'TASK_NOT_CANCELLABLE');
      expect(err.error.details.status).toBe('completed');
    });

    it('404 TASK_NOT_FOUND for an unknown task', async () => {
      const res = await fetch(`${srv.url}/tasks/task_123e4567-e89b-12d3-a456-426614174000`, { method: 'DELETE' });
      expect(res.status).toBe(404);
      expectErrorShape(await json(res), 'TASK_NOT_FOUND');
    });
  });

  describe('GET /health', () => {
    it('returns every documented field', async () => {
      const res = await fetch(`${srv.url}/health`);
      expect(res.status).toBe(200);
      const h = await json(res);
      expect(h).toMatchObject({ status: 'healthy', version: '1.0.0' });
      expect(h.timestamp).toMatch(ISO);
      for (const f of ['uptime', 'active_tasks', 'pending_tasks', 'completed_tasks', 'failed_tasks']) {
        expect(Number.isInteger(h[f]), f).toBe(true);
        expect(h[f]).toBeGreaterThanOrEqual(0);
      }
      const list = await json(await fetch(`${srv.url}/tasks?status=pending`));
      expect(h.pending_tasks).toBe(list.total);
      const done = await json(await fetch(`${srv.url}/tasks?status=completed`));
      expect(h.completed_tasks).toBe(done.total);
    });

    it('503 when the store cannot be used', async () => {
      const other = await startServer();
      await other.app.services.queue.store.close();
      const res = await fetch(`${other.url}/health`);
      expect(res.status).toBe(503);
      const h = await json(res);
      expect(h.status).toBe('unhealthy');
      expect(h.store.ok).toBe(false);
      // and requests needing the store answer 503 in the error format, not 500
      const create = await post(`${other.url}/tasks`, llmTask());
      expect(create.status).toBe(503);
      expectErrorShape(await json(create), 'SERVICE_UNAVAILABLE');
      await other.app.close();
    });
  });

  describe('GET /metrics', () => {
    it('exposes the spec metrics, queue depth and HTTP latency in Prometheus text', async () => {
      const res = await fetch(`${srv.url}/metrics`);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
      const text = await res.text();
      expect(text).toContain('# TYPE task_manager_tasks_total counter');
      for (const s of ['completed', 'failed', 'pending', 'running', 'cancelled']) expect(text).toMatch(new RegExp(`task_manager_tasks_total\\{status="${s}"\\} \\d+`));
      expect(text).toContain('# TYPE task_manager_processing_time_seconds histogram');
      expect(text).toMatch(/task_manager_processing_time_seconds_bucket\{le="1\.0"\} \d+/);
      expect(text).toMatch(/task_manager_processing_time_seconds_bucket\{le="5\.0"\} \d+/);
      expect(text).toMatch(/task_manager_processing_time_seconds_bucket\{le="10\.0"\} \d+/);
      expect(text).toMatch(/task_manager_queue_depth\{task_type="text_generation",model_name="unserved-llm"\} \d+/);
      expect(text).toMatch(/task_manager_http_request_duration_seconds_bucket\{.*route="\/tasks".*\} \d+/);
    });

    it("exposes the SQLite writer's group commits: writes per group, commit and fsync times", async () => {
      const histogram = (text: string, name: string) => {
        const buckets = [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\d+)$`, 'gm'))].map((m) => [m[1], Number(m[2])] as const);
        const sum = Number(new RegExp(`^${name}_sum (\\S+)$`, 'm').exec(text)?.[1]);
        const count = Number(new RegExp(`^${name}_count (\\d+)$`, 'm').exec(text)?.[1]);
        return { buckets, sum, count };
      };
      for (const sync of ['FULL', 'NORMAL']) {
        const s = await startServer({ env: { TASK_MANAGER_SQLITE_SYNCHRONOUS: sync, TASK_MANAGER_EMBEDDED_WORKER: 'false' } });
        try {
          const created = await Promise.all(Array.from({ length: 20 }, () => post(`${s.url}/tasks`, { ...llmTask(), model_name: 'unserved-llm' })));
          expect(created.map((r) => r.status)).toEqual(Array(20).fill(201));
          // The writer reports once a second.
          const text = await waitFor(async () => {
            const t = await (await fetch(`${s.url}/metrics`)).text();
            return histogram(t, 'task_manager_sqlite_group_commit_writes').sum >= 20 ? t : null;
          }, 5000, 'commit figures');
          const writes = histogram(text, 'task_manager_sqlite_group_commit_writes');
          const commits = histogram(text, 'task_manager_sqlite_commit_seconds');
          const fsyncs = histogram(text, 'task_manager_sqlite_fsync_seconds');
          expect(text).toContain('# TYPE task_manager_sqlite_commit_seconds histogram');
          // At most one group per write (how many share a group depends on how they arrived;
          // the store's own tests pin grouping down).
          expect(writes.count).toBeGreaterThanOrEqual(1);
          expect(writes.count).toBeLessThanOrEqual(writes.sum);
          expect(commits.count).toBe(writes.count);
          expect(commits.sum).toBeGreaterThan(0);
          for (const h of [writes, commits, fsyncs]) {
            expect(h.buckets.at(-1)).toEqual(['+Inf', h.count]);
            for (let i = 1; i < h.buckets.length; i++) expect(h.buckets[i][1]).toBeGreaterThanOrEqual(h.buckets[i - 1][1]);
          }
          // With FULL every group holding a create was fsynced before its 201; with NORMAL none is.
          if (sync === 'FULL') expect(fsyncs.count).toBeGreaterThanOrEqual(1);
          else expect(fsyncs.count).toBe(0);
        } finally {
          await s.close();
        }
      }
    });

    it('counters only go up', async () => {
      const read = async () => {
        const text = await (await fetch(`${srv.url}/metrics`)).text();
        return Object.fromEntries([...text.matchAll(/task_manager_tasks_total\{status="(\w+)"\} (\d+)/g)].map((m) => [m[1], Number(m[2])]));
      };
      const before = await read();
      const t = await json(await post(`${srv.url}/tasks`, { ...llmTask(), model_name: 'unserved-llm' }));
      await fetch(`${srv.url}/tasks/${t.task_id}`, { method: 'DELETE' });
      const after = await read();
      expect(after.pending).toBe(before.pending + 1);
      expect(after.cancelled).toBe(before.cancelled + 1);
      for (const k of Object.keys(before)) expect(after[k]).toBeGreaterThanOrEqual(before[k]);
    });
  });

  describe('errors everywhere', () => {
    it('404 ROUTE_NOT_FOUND for unknown routes', async () => {
      const res = await fetch(`${srv.url}/nothing/here`);
      expect(res.status).toBe(404);
      expectErrorShape(await json(res), 'ROUTE_NOT_FOUND');
    });

    it('405 METHOD_NOT_ALLOWED with Allow for wrong methods', async () => {
      const res = await fetch(`${srv.url}/tasks`, { method: 'PUT' });
      expect(res.status).toBe(405);
      expect(res.headers.get('allow')).toBe('GET, POST');
      expectErrorShape(await json(res), 'METHOD_NOT_ALLOWED');
      const res2 = await fetch(`${srv.url}/tasks/task_x`, { method: 'PATCH' });
      expect(res2.status).toBe(405);
      expect(res2.headers.get('allow')).toBe('DELETE, GET');
    });

    it('404 ROUTE_NOT_FOUND for a known path with a trailing slash (not a 405 naming the method used)', async () => {
      for (const path of ['/health/', '/metrics/', '/tasks/task_x/', '/tasks/task_x/x']) {
        const res = await fetch(`${srv.url}${path}`);
        expect(res.status, path).toBe(404);
        expectErrorShape(await json(res), 'ROUTE_NOT_FOUND');
      }
    });

    it('answers paths the router refuses in the error format, with the request id', async () => {
      const bad = await fetch(`${srv.url}/tasks/%ZZ`);
      expect(bad.status).toBe(400);
      const body = await json(bad);
      expectErrorShape(body, 'INVALID_REQUEST');
      expect(body.request_id).toBe(bad.headers.get('x-request-id'));
      // Up to the router's limit a long id reaches the route and its schema; beyond it, 400.
      const long = await fetch(`${srv.url}/tasks/${'a'.repeat(300)}`);
      expect(long.status).toBe(422);
      expectErrorShape(await json(long), 'VALIDATION_ERROR');
      const longer = await fetch(`${srv.url}/tasks/${'a'.repeat(1100)}`);
      expect(longer.status).toBe(400);
      const longerBody = await json(longer);
      expectErrorShape(longerBody, 'INVALID_REQUEST');
      expect(longerBody.request_id).toBe(longer.headers.get('x-request-id'));
    });

    it.each([
      ['a request line that is not HTTP', 'GARBAGE\r\n\r\n', 400, 'INVALID_REQUEST'],
      ['a header line without a colon', 'GET /health HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n', 400, 'INVALID_REQUEST'],
      ['headers over the size limit', `GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`, 431, 'HEADERS_TOO_LARGE'],
    ])('answers %s in the error format and closes the connection', async (_name, raw, status, code) => {
      const text = await rawExchange(srv.url, raw);
      const [head, body] = text.split('\r\n\r\n');
      expect(head.split('\r\n')[0]).toMatch(new RegExp(`^HTTP/1\\.1 ${status} `));
      expect(head).toMatch(/\r\nConnection: close/i);
      const parsed = JSON.parse(body);
      expectErrorShape(parsed, code);
      expect(head).toContain(`X-Request-Id: ${parsed.request_id}`);
      // The server is still up.
      expect((await fetch(`${srv.url}/health`)).status).toBe(200);
    });

    it('never writes a parser error into a response already under way on the connection', async () => {
      const created = await json(await post(`${srv.url}/tasks`, { ...llmTask(), model_name: 'unserved-llm' }));
      const { hostname, port } = new URL(srv.url);
      // An event stream has sent its headers and stays open; then the client sends garbage on the same connection.
      const text = await new Promise<string>((resolve, reject) => {
        const socket = connect(Number(port), hostname, () => socket.write(`GET /tasks/${created.task_id}/events HTTP/1.1\r\nHost: x\r\n\r\n`));
        let got = '';
        socket.setEncoding('utf8');
        socket.on('data', (d) => {
          got += d;
          if (got.includes('\r\n\r\n') && !got.includes('GARBAGE-SENT')) {
            got += 'GARBAGE-SENT';
            socket.write('GARBAGE\r\n\r\n');
          }
        });
        socket.on('error', reject);
        socket.on('close', () => resolve(got));
      });
      expect(text.startsWith('HTTP/1.1 200')).toBe(true);
      expect(text).toContain('GARBAGE-SENT');
      expect(text).not.toContain('HTTP/1.1 400');
    });

    it('sends X-Request-Id on every response and echoes a valid incoming one', async () => {
      const own = await fetch(`${srv.url}/health`, { headers: { 'x-request-id': 'trace-abc.123' } });
      expect(own.headers.get('x-request-id')).toBe('trace-abc.123');
      const gen = await fetch(`${srv.url}/nope`);
      const id = gen.headers.get('x-request-id');
      expect(id).toMatch(/^req_[0-9a-f-]{36}$/);
      expect((await json(gen)).request_id).toBe(id);
      const bad = await fetch(`${srv.url}/health`, { headers: { 'x-request-id': 'has spaces and \u00e9' } });
      expect(bad.headers.get('x-request-id')).toMatch(/^req_/);
    });
  });

  describe('OpenAPI', () => {
    it('serves the generated document and the docs UI', async () => {
      const doc = await json(await fetch(`${srv.url}/openapi.json`));
      expect(doc.openapi).toMatch(/^3\./);
      expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/tasks', '/tasks/{task_id}', '/health', '/metrics']));
      expect(doc.paths['/tasks'].post.requestBody.content['application/json'].schema.properties.task_type.enum).toEqual([
        'text_generation',
        'image_generation',
        'text_to_speech',
        'image_to_text',
      ]);
      expect(doc.paths['/tasks'].post.responses['201']).toBeDefined();
      expect(doc.paths['/tasks/{task_id}'].delete.responses['409']).toBeDefined();
      const ui = await fetch(`${srv.url}/docs`, { redirect: 'follow' });
      expect(ui.status).toBe(200);
      expect(await ui.text()).toMatch(/swagger/i);
    });
  });
});
