import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { hostname } from 'node:os';
import { ConfigError, loadConfig, parseDatabaseUrl } from '../src/config.js';
import { WORKER_ID_PATTERN } from '../src/core/worker-protocol.js';
import { embeddedWorkerId } from '../src/server/app.js';

describe('configuration', () => {
  it('has the documented defaults', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ port: 8002, host: '127.0.0.1', databaseUrl: 'sqlite:./data/task-manager.db' });
    expect(c.rateLimit).toEqual({ enabled: true, perMinute: 100, burst: 20, burstWindowSeconds: 10 });
    // Finished tasks are kept unless a retention is set.
    expect(c.taskRetentionHours).toBe(0);
    expect(loadConfig({ TASK_MANAGER_TASK_RETENTION_HOURS: '48' }).taskRetentionHours).toBe(48);
  });

  it("leaves the client commands' TASK_MANAGER_URL alone: exported for `submit`, it does not stop `serve`", () => {
    expect(loadConfig({ TASK_MANAGER_URL: 'http://gpu-box:8002' }).port).toBe(8002);
  });

  it('reads environment variables, then overrides on top', () => {
    const c = loadConfig({ PORT: '9000', HOST: '0.0.0.0', DATABASE_URL: 'sqlite:/tmp/x.db', TASK_MANAGER_RATE_LIMIT_BURST: '5' }, { PORT: '9100' });
    expect(c).toMatchObject({ port: 9100, host: '0.0.0.0', databaseUrl: 'sqlite:/tmp/x.db' });
    expect(c.rateLimit.burst).toBe(5);
  });

  it.each([
    [{ PORT: 'eighty' }, /PORT must be an integer/],
    [{ PORT: '70000' }, /PORT must be an integer from 0 to 65535/],
    [{ DATABASE_URL: 'mysql://x' }, /DATABASE_URL must start with sqlite: or postgres:\/\//],
    [{ TASK_MANAGER_RATE_LIMIT: 'maybe' }, /TASK_MANAGER_RATE_LIMIT must be true or false/],
    [{ TASK_MANAGER_LOG_LEVEL: 'loud' }, /TASK_MANAGER_LOG_LEVEL must be one of/],
    [{ TASK_MANAGER_PORTT: '1' }, /Unknown setting TASK_MANAGER_PORTT/],
    [{ TASK_MANAGER_EMBEDDED_WORKER_ID: 'gpu-box-1' }, /TASK_MANAGER_EMBEDDED_WORKER_ID must start with worker_embedded/],
    [{ TASK_MANAGER_EMBEDDED_WORKER_ID: 'worker_embedded/1' }, /TASK_MANAGER_EMBEDDED_WORKER_ID must start with worker_embedded and use only/],
    [{ TASK_MANAGER_TASK_RETENTION_HOURS: '-1' }, /TASK_MANAGER_TASK_RETENTION_HOURS must be an integer from 0/],
  ])('fails fast on %j', (env, message) => {
    expect(() => loadConfig(env as NodeJS.ProcessEnv)).toThrow(ConfigError);
    expect(() => loadConfig(env as NodeJS.ProcessEnv)).toThrow(message);
  });

  it("names the in-process worker once per node: set, or worker_embedded on SQLite, or by host and port on PostgreSQL", () => {
    expect(loadConfig({ TASK_MANAGER_EMBEDDED_WORKER_ID: 'worker_embedded:rack2-gpu7' }).embeddedWorkerId).toBe('worker_embedded:rack2-gpu7');
    expect(embeddedWorkerId(loadConfig({ TASK_MANAGER_EMBEDDED_WORKER_ID: 'worker_embedded:rack2-gpu7' }), true)).toBe('worker_embedded:rack2-gpu7');
    expect(embeddedWorkerId(loadConfig({}), false)).toBe('worker_embedded');
    const host = hostname().replace(/[^A-Za-z0-9.-]/g, '-');
    expect(embeddedWorkerId(loadConfig({ PORT: '8123' }), true)).toBe(`worker_embedded:${host}:8123`);
    // Port 0 is no name: each start gets another id.
    const [x, y] = [embeddedWorkerId(loadConfig({ PORT: '0' }), true), embeddedWorkerId(loadConfig({ PORT: '0' }), true)];
    expect(x).toMatch(new RegExp(WORKER_ID_PATTERN));
    expect(x).not.toBe(y);
  });

  it('parses database URLs', () => {
    expect(parseDatabaseUrl('sqlite:./data/a.db')).toEqual({ kind: 'sqlite', path: './data/a.db' });
    expect(parseDatabaseUrl('sqlite:///var/lib/a.db')).toEqual({ kind: 'sqlite', path: '/var/lib/a.db' });
    expect(parseDatabaseUrl('postgres://u@h/db')).toEqual({ kind: 'postgres', url: 'postgres://u@h/db' });
  });

  it('the CLI exits with a clear message on bad config', () => {
    const r = spawnSync(process.execPath, ['dist/cli/main.js', 'serve', '--port', 'x'], { encoding: 'utf8', env: { ...process.env, PORT: '' } });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('configuration error: PORT must be an integer');
    const r2 = spawnSync(process.execPath, ['dist/cli/main.js', 'serve'], { encoding: 'utf8', env: { ...process.env, TASK_MANAGER_WORKERS: '3' } });
    expect(r2.status).toBe(2);
    expect(r2.stderr).toContain('Unknown setting TASK_MANAGER_WORKERS');
  });

  it('a server that cannot reach its database exits 1 saying why', () => {
    const r = spawnSync(process.execPath, ['dist/cli/main.js', 'serve'], {
      encoding: 'utf8',
      env: { ...process.env, DATABASE_URL: 'postgres://postgres@127.0.0.1:1/test', PORT: '0' },
      timeout: 30_000,
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('Task store unavailable: cannot migrate: connect ECONNREFUSED 127.0.0.1:1');
  });
});
