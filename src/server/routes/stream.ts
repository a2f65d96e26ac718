import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import websocket from '@fastify/websocket';
import { Type } from '@sinclair/typebox';
import type { WebSocket } from 'ws';
import { AppError, ERROR_CODES, type ErrorCode } from '../../core/errors.js';
import type { TaskEvent } from '../../core/events.js';
import { newRequestId } from '../../core/ids.js';
import { ErrorResponse, TaskIdParams } from '../../core/schemas.js';
import type { TaskLogEvent } from '../../core/store.js';
import { isFinal, TASK_STATUSES, TASK_TYPES, type TaskRecord } from '../../core/task.js';
import { iso, summaryToJson, taskToJson } from '../serialize.js';

interface Filter {
  status?: string;
  task_type?: string;
  model_name?: string;
}

interface Subscription {
  id: string;
  taskId?: string;
  filter?: Filter;
}

interface Connection {
  socket: WebSocket;
  subs: Map<string, Subscription>;
  alive: boolean;
  nextSub: number;
}

const matches = (f: Filter, t: TaskRecord) =>
  (!f.status || f.status === t.status) && (!f.task_type || f.task_type === t.taskType) && (!f.model_name || f.model_name === t.modelName);

/** What a subscriber sees of a task in an update: the summary, plus result or error once final. */
function updateTask(t: TaskRecord) {
  return { ...summaryToJson(t), progress: t.progress, ...(isFinal(t.status) ? { result: t.result, error: t.error } : {}) };
}

function logEventJson(e: TaskLogEvent) {
  return {
    event_id: e.id,
    task_id: e.taskId,
    type: e.type,
    status: e.status ?? 'running',
    progress: e.progress,
    text: e.text,
    at: iso(e.at),
  };
}

/** Live task updates: WebSocket at /ws/tasks and Server-Sent Events at /tasks/{id}/events. */
export const streamRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { queue } = app.services;
  const estimateOf = async (t: TaskRecord) => taskToJson(t, await queue.estimate(t));

  // --- WebSocket ---------------------------------------------------------------------------
  await app.register(websocket, { options: { maxPayload: 64 * 1024 } });
  const byTask = new Map<string, Set<Connection>>();
  const watchers = new Set<Connection>(); // connections with filter subscriptions

  const send = (c: Connection, text: string) => {
    // A subscriber that cannot keep up is dropped rather than buffering without bound.
    if (c.socket.bufferedAmount > 8 * 1024 * 1024) c.socket.terminate();
    else c.socket.send(text);
  };
  const wsError = (c: Connection, code: ErrorCode, message: string, details?: Record<string, unknown>) =>
    send(
      c,
      JSON.stringify({
        type: 'error',
        error: { code, message, details: details ?? {} },
        timestamp: new Date().toISOString(),
        request_id: newRequestId(),
      }),
    );

  const offBus = queue.bus.subscribe((e: TaskEvent) => {
    const direct = byTask.get(e.task.id);
    if (!direct && watchers.size === 0) return; // the common case: nobody listens
    const targets = new Set<Connection>(direct);
    for (const c of watchers) for (const s of c.subs.values()) if (s.filter && matches(s.filter, e.task)) targets.add(c);
    if (!targets.size) return;
    let msg: object;
    if (e.type === 'output') {
      msg = { type: 'task.output', task_id: e.task.id, status: e.task.status, events: (e.log ?? []).map(logEventJson), progress: e.task.progress };
    } else if (e.type === 'progress') {
      msg = { type: 'task.progress', task_id: e.task.id, status: e.task.status, progress: e.task.progress, at: iso(e.at) };
    } else {
      msg = { type: 'task.update', event: e.type, task_id: e.task.id, status: e.task.status, progress: e.task.progress, task: updateTask(e.task), at: iso(e.at) };
    }
    const text = JSON.stringify(msg);
    for (const c of targets) send(c, text);
  });

  const pinger = setInterval(() => {
    for (const set of [watchers, ...byTask.values()]) {
      for (const c of set) {
        if (!c.alive) c.socket.terminate();
        else {
          c.alive = false;
          c.socket.ping();
        }
      }
    }
  }, 30_000);
  pinger.unref();
  app.addHook('onClose', async () => {
    clearInterval(pinger);
    offBus();
  });

  const drop = (c: Connection, sub: Subscription) => {
    c.subs.delete(sub.id);
    if (sub.taskId) {
      const set = byTask.get(sub.taskId);
      set?.delete(c);
      if (set && set.size === 0) byTask.delete(sub.taskId);
    }
    if (![...c.subs.values()].some((s) => s.filter)) watchers.delete(c);
  };

  async function onMessage(c: Connection, raw: string) {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(raw);
      if (!msg || typeof msg !== 'object' || Array.isArray(msg)) throw new Error('not an object');
    } catch {
      return wsError(c, 'INVALID_REQUEST', 'Messages must be JSON objects like {"action": "subscribe", "task_id": "…"}');
    }
    const action = msg.action;
    if (action === 'ping') return send(c, JSON.stringify({ type: 'pong', timestamp: new Date().toISOString() }));
    if (action === 'unsubscribe') {
      const subs = [...c.subs.values()].filter((s) => (msg.subscription_id ? s.id === msg.subscription_id : msg.task_id ? s.taskId === msg.task_id : true));
      if (!subs.length) return wsError(c, 'VALIDATION_ERROR', 'No such subscription', { field: msg.subscription_id ? 'subscription_id' : 'task_id' });
      for (const s of subs) {
        drop(c, s);
        send(c, JSON.stringify({ type: 'unsubscribed', subscription_id: s.id }));
      }
      return;
    }
    if (action !== 'subscribe') {
      return wsError(c, 'VALIDATION_ERROR', 'action must be subscribe, unsubscribe or ping', { field: 'action', reason: 'Unknown action' });
    }
    if (c.subs.size >= 1000) return wsError(c, 'VALIDATION_ERROR', 'At most 1000 subscriptions per connection', { field: 'action' });
    const id = `sub_${++c.nextSub}`;
    if (msg.task_id !== undefined) {
      if (typeof msg.task_id !== 'string' || !msg.task_id) return wsError(c, 'VALIDATION_ERROR', 'task_id must be a string', { field: 'task_id' });
      const task = await queue.store.getTask(msg.task_id);
      if (!task) return wsError(c, 'TASK_NOT_FOUND', `Task ${msg.task_id} not found`, { task_id: msg.task_id });
      const sub = { id, taskId: task.id };
      c.subs.set(id, sub);
      if (!byTask.has(task.id)) byTask.set(task.id, new Set());
      byTask.get(task.id)!.add(c);
      send(c, JSON.stringify({ type: 'subscribed', subscription_id: id, task_id: task.id, status: task.status }));
      // Read again after subscribing: a change in between arrives as an update, never lost.
      const now = (await queue.store.getTask(task.id)) ?? task;
      send(c, JSON.stringify({ type: 'snapshot', subscription_id: id, task_id: now.id, status: now.status, task: await estimateOf(now) }));
      return;
    }
    const rawFilter = (msg.filter ?? {}) as Record<string, unknown>;
    if (typeof rawFilter !== 'object' || Array.isArray(rawFilter)) return wsError(c, 'VALIDATION_ERROR', 'filter must be an object', { field: 'filter' });
    const filter: Filter = {};
    for (const [k, v] of Object.entries(rawFilter)) {
      const allowed = k === 'status' ? TASK_STATUSES : k === 'task_type' ? TASK_TYPES : k === 'model_name' ? null : undefined;
      if (allowed === undefined) return wsError(c, 'VALIDATION_ERROR', `Unknown filter field ${k}; use status, task_type, model_name`, { field: `filter.${k}` });
      if (typeof v !== 'string' || (allowed && !(allowed as readonly string[]).includes(v))) {
        return wsError(c, 'VALIDATION_ERROR', `Invalid filter.${k}`, { field: `filter.${k}`, ...(allowed ? { allowed } : {}) });
      }
      (filter as Record<string, string>)[k] = v;
    }
    c.subs.set(id, { id, filter });
    watchers.add(c);
    send(c, JSON.stringify({ type: 'subscribed', subscription_id: id, filter }));
    const page = await queue.list({
      status: filter.status as TaskRecord['status'] | undefined,
      taskType: filter.task_type as TaskRecord['taskType'] | undefined,
      modelName: filter.model_name,
      limit: 100,
      offset: 0,
      sortBy: 'created_at',
      sortOrder: 'desc',
    });
    send(c, JSON.stringify({ type: 'snapshot', subscription_id: id, filter, tasks: page.tasks.map(summaryToJson), total: page.total }));
  }

  app.get('/ws/tasks', { websocket: true, schema: { hide: true } }, (socket) => {
    const c: Connection = { socket, subs: new Map(), alive: true, nextSub: 0 };
    socket.on('pong', () => (c.alive = true));
    socket.on('message', (data, isBinary) => {
      c.alive = true;
      if (isBinary) return wsError(c, 'INVALID_REQUEST', 'Send text frames with JSON');
      onMessage(c, data.toString()).catch((err) => {
        const code: ErrorCode = err instanceof AppError ? err.code : 'SERVICE_UNAVAILABLE';
        wsError(c, code, err instanceof AppError ? err.message : ERROR_CODES[code].message);
      });
    });
    socket.on('close', () => {
      for (const s of [...c.subs.values()]) drop(c, s);
      watchers.delete(c);
    });
  });

  // --- Server-Sent Events --------------------------------------------------------------------
  app.get(
    '/tasks/:task_id/events',
    {
      schema: {
        tags: ['tasks'],
        summary: 'Stream task events (SSE)',
        description:
          'Server-Sent Events: every status change, progress report and streamed output chunk of the task, in order, each with an `id`. Reconnect with `Last-Event-ID` (or `?last_event_id=`) to resume without missing anything. The stream ends with `event: end` after the final status.',
        params: TaskIdParams,
        querystring: Type.Object({ last_event_id: Type.Optional(Type.Integer({ minimum: 0 })) }, { additionalProperties: false }),
        response: { 404: ErrorResponse, 422: ErrorResponse, 429: ErrorResponse },
      },
    },
    async (request, reply) => {
      const task = await queue.get(request.params.task_id);
      const header = request.headers['last-event-id'];
      const fromHeader = typeof header === 'string' && /^\d+$/.test(header) ? Number(header) : undefined;
      let after = fromHeader ?? request.query.last_event_id ?? 0;
      const raw = reply.raw;
      reply.hijack();
      raw.writeHead(200, {
        'content-type': 'text/event-stream; charset=utf-8',
        'cache-control': 'no-cache, no-transform',
        connection: 'keep-alive',
        'x-accel-buffering': 'no',
        'x-request-id': String(request.id),
      });
      raw.write('retry: 2000\n\n');
      let closed = false;
      let pumping: Promise<void> | null = null;
      let again = false;
      const finish = () => {
        if (closed) return;
        closed = true;
        off();
        clearInterval(keepalive);
        raw.end();
      };
      const pump = async (): Promise<void> => {
        do {
          again = false;
          const rows = await queue.store.listEvents(task.id, after, 500);
          for (const e of rows) {
            if (closed) return;
            const data: Record<string, unknown> = logEventJson(e);
            const final = e.type === 'status' && e.status !== null && isFinal(e.status);
            if (final) data.task = await estimateOf(await queue.get(task.id));
            raw.write(`id: ${e.id}\nevent: ${e.type}\ndata: ${JSON.stringify(data)}\n\n`);
            after = e.id;
            if (final) {
              raw.write('event: end\ndata: {}\n\n');
              return finish();
            }
          }
          if (rows.length === 500) again = true;
        } while (again && !closed);
      };
      const kick = () => {
        if (closed) return;
        if (pumping) {
          again = true;
          return;
        }
        pumping = pump()
          .catch(() => finish())
          .finally(() => {
            pumping = null;
            if (again) kick();
          });
      };
      const off = queue.bus.subscribe((e) => {
        if (e.task.id === task.id) kick();
      });
      const keepalive = setInterval(() => raw.write(': keep-alive\n\n'), 15_000);
      raw.on('close', finish);
      kick();
      await pumping;
      // Resumed after the final status: nothing more will come.
      const current = await queue.store.getTask(task.id);
      if (!closed && current && isFinal(current.status) && !pumping) {
        raw.write('event: end\ndata: {}\n\n');
        finish();
      }
    },
  );
};
