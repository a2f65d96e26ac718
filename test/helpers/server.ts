import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { ModelCatalog } from '../../src/core/catalog.js';
import type { Engine } from '../../src/core/engine.js';
import type { TaskStore } from '../../src/core/store.js';
import { loadConfig, type Config } from '../../src/config.js';
import { buildApp } from '../../src/server/app.js';

export const TEST_CATALOG = ModelCatalog.parse({
  models: [
    { name: 'test-llm', task_type: 'text_generation', engine: 'gate' },
    { name: 'test-tts', task_type: 'text_to_speech', engine: 'gate' },
    { name: 'test-ocr', task_type: 'image_to_text', engine: 'gate' },
    { name: 'test-sd', task_type: 'image_generation', engine: 'gate' },
    { name: 'unserved-llm', task_type: 'text_generation', engine: 'not-installed' },
  ],
});

export function tempDir(prefix = 'tm-test-'): { path: string; cleanup: () => void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, cleanup: () => rmSync(path, { recursive: true, force: true }) };
}

export interface TestServer {
  app: FastifyInstance;
  url: string;
  config: Config;
  close: () => Promise<void>;
}

/** A real listening server on a random port, SQLite in a temp dir, rate limits off unless asked. */
export async function startServer(
  opts: { env?: Record<string, string>; engines?: Record<string, Engine>; store?: TaskStore; catalog?: ModelCatalog; logger?: false } = {},
): Promise<TestServer> {
  const dir = tempDir();
  const config = loadConfig({
    DATABASE_URL: `sqlite:${join(dir.path, 'tasks.db')}`,
    TASK_MANAGER_RATE_LIMIT: 'false',
    TASK_MANAGER_LOG_LEVEL: 'silent',
    TASK_MANAGER_SQLITE_SYNCHRONOUS: 'NORMAL',
    TASK_MANAGER_SHUTDOWN_GRACE_SECONDS: '0',
    PORT: '0',
    ...opts.env,
  });
  const app = await buildApp({ config, engines: opts.engines, store: opts.store, catalog: opts.catalog ?? TEST_CATALOG, logger: opts.logger });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    app,
    url: `http://127.0.0.1:${port}`,
    config,
    close: async () => {
      await app.close();
      dir.cleanup();
    },
  };
}

export async function json(res: Response): Promise<any> {
  const text = await res.text();
  try {
    return JSON.parse(text);
  } catch {
    throw new Error(`not JSON (${res.status}): ${text.slice(0, 200)}`);
  }
}

export const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

export async function waitFor<T>(fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as T;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Asserts the API reference's error shape and returns the body. */
export function expectErrorShape(body: any, code: string): void {
  if (!body || typeof body !== 'object') throw new Error(`error body is not an object: ${JSON.stringify(body)}`);
  const { error, timestamp, request_id } = body;
  if (!error || error.code !== code) throw new Error(`expected error code ${code}, got ${JSON.stringify(body)}`);
  if (typeof error.message !== 'string' || !error.message) throw new Error(`error.message missing: ${JSON.stringify(body)}`);
  if (typeof timestamp !== 'string' || Number.isNaN(Date.parse(timestamp))) throw new Error(`bad timestamp: ${JSON.stringify(body)}`);
  if (typeof request_id !== 'string' || !request_id) throw new Error(`request_id missing: ${JSON.stringify(body)}`);
}
