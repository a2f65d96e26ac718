/** The client commands of the built CLI (dist/cli/main.js), run as subprocesses against a real server. */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GateEngine } from './helpers/engines.js';
import { startServer, tempDir, waitFor, type TestServer } from './helpers/server.js';

const CLI = join(import.meta.dirname, '../dist/cli/main.js');

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI; `live` sees stdout as it arrives. */
function cli(args: string[], opts: { env?: Record<string, string>; live?: { stdout: string } } = {}): Promise<Run> {
  const { TASK_MANAGER_URL: _omit, ...env } = process.env;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
      if (opts.live) opts.live.stdout = stdout;
    });
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('task-manager CLI client commands', () => {
  let srv: TestServer; // GateEngine: runs stay open until the test finishes them
  let auto: TestServer; // GateEngine with autoResult: tasks complete at once
  let engine: GateEngine;
  const runOf = (taskId: string) => waitFor(() => engine.runs.find((r) => r.task.id === taskId), 5000, `run of ${taskId}`);

  beforeAll(async () => {
    engine = new GateEngine();
    const autoEngine = new GateEngine();
    autoEngine.autoResult = (task) => ({ generated_text: `echo: ${String(task.inputData.prompt)}` });
    [srv, auto] = await Promise.all([
      startServer({ engines: { gate: engine }, env: { TASK_MANAGER_WORKER_CONCURRENCY: '8' } }),
      startServer({ engines: { gate: autoEngine } }),
    ]);
  });
  afterAll(async () => {
    await Promise.all([srv?.close(), auto?.close()]);
  });

  it('submit prints the new task (human and --json), get shows it', async () => {
    const human = await cli(['submit', 'text_generation', 'unserved-llm', '--prompt', 'hello cli', '--server', srv.url]);
    expect(human.stderr).toBe('');
    expect(human.code).toBe(0);
    const m = /^created (task_\S+) \(pending, queue position \d+/.exec(human.stdout);
    expect(m, human.stdout).toBeTruthy();
    const id = m![1];

    const asJson = await cli(['--server', srv.url, '--json', 'submit', 'text_generation', 'unserved-llm', '--prompt', 'json please', '--params', '{"max_tokens": 5}', '--priority', '3']);
    expect(asJson.code).toBe(0);
    const created = JSON.parse(asJson.stdout);
    expect(created).toMatchObject({ status: 'pending', task_type: 'text_generation', model_name: 'unserved-llm', priority: 3 });

    const got = await cli(['get', id, '--server', srv.url]);
    expect(got.code).toBe(0);
    expect(got.stdout).toMatch(new RegExp(`^task_id\\s+${id}$`, 'm'));
    expect(got.stdout).toMatch(/^status\s+pending$/m);
    expect(got.stdout).toMatch(/^model\s+unserved-llm$/m);

    const gotJson = await cli(['get', created.task_id, '--json'], { env: { TASK_MANAGER_URL: srv.url } });
    expect(gotJson.code).toBe(0);
    expect(JSON.parse(gotJson.stdout)).toMatchObject({ task_id: created.task_id, parameters: { max_tokens: 5 }, input_data: { prompt: 'json please' } });

    // --input merges with the flags; --image sends a data URL
    const dir = tempDir();
    try {
      const png = join(dir.path, 'dot.png');
      writeFileSync(png, Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'));
      const img = await cli(['submit', 'image_to_text', 'test-ocr', '--image', png, '--input', '{"prompt": "read it"}', '--json', '--server', auto.url]);
      expect(img.code).toBe(0);
      const task = JSON.parse((await cli(['get', JSON.parse(img.stdout).task_id, '--json', '--server', auto.url])).stdout);
      expect(task.input_data.prompt).toBe('read it');
      expect(task.input_data.image).toMatch(/^data:image\/png;base64,/);
    } finally {
      dir.cleanup();
    }
  });

  it('list shows a table and a page footer; filters; --json is the API page', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await cli(['submit', 'text_to_speech', 'test-tts', '--text', `say ${i}`, '--json', '--server', auto.url]);
      ids.push(JSON.parse(r.stdout).task_id);
    }
    const table = await cli(['list', '--model', 'test-tts', '--limit', '2', '--server', auto.url]);
    expect(table.code).toBe(0);
    const lines = table.stdout.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^TASK_ID\s+STATUS\s+TYPE\s+MODEL\s+CREATED$/);
    expect(lines).toHaveLength(4);
    expect(lines[1]).toContain(ids[2]);
    expect(lines[1]).toMatch(/text_to_speech\s+test-tts/);
    expect(lines[3]).toMatch(/^1-2 of 3 tasks$/);

    const page = JSON.parse((await cli(['list', '--model', 'test-tts', '--offset', '2', '--json', '--server', auto.url])).stdout);
    expect(page).toMatchObject({ total: 3, offset: 2, limit: 50 });
    expect(page.tasks.map((t: { task_id: string }) => t.task_id)).toEqual([ids[0]]);

    const all = JSON.parse((await cli(['list', '--model', 'test-tts', '--all', '--limit', '1', '--json', '--server', auto.url])).stdout);
    expect(all.tasks.map((t: { task_id: string }) => t.task_id)).toEqual([...ids].reverse());

    const none = await cli(['list', '--status', 'failed', '--model', 'test-tts', '--server', auto.url]);
    expect(none.stdout.trim()).toBe('no tasks (total 0)');
    const badStatus = await cli(['list', '--status', 'bogus', '--server', auto.url]);
    expect(badStatus.code).toBe(2);
  });

  it('cancel, and errors: `error CODE: message` on stderr, exit 2 for 4xx, 1 otherwise', async () => {
    const t = JSON.parse((await cli(['submit', 'text_generation', 'unserved-llm', '--prompt', 'cancel me', '--json', '--server', srv.url])).stdout);
    const cancelled = await cli(['cancel', t.task_id, '--server', srv.url]);
    expect(cancelled.code).toBe(0);
    expect(cancelled.stdout).toMatch(new RegExp(`^cancelled ${t.task_id} at \\d{4}-`));

    const unknownModel = await cli(['submit', 'text_generation', 'no-such-model', '--prompt', 'x', '--server', srv.url]);
    expect(unknownModel.code).toBe(2);
    expect(unknownModel.stdout).toBe('');
    expect(unknownModel.stderr).toMatch(/^error MODEL_NOT_FOUND: /);

    const unknownJson = await cli(['submit', 'text_generation', 'no-such-model', '--prompt', 'x', '--json', '--server', srv.url]);
    expect(unknownJson.code).toBe(2);
    expect(JSON.parse(unknownJson.stdout).error.code).toBe('MODEL_NOT_FOUND');

    const invalid = await cli(['submit', 'text_generation', 'test-llm', '--prompt', 'x', '--priority', '1000', '--server', srv.url]);
    expect(invalid.code).toBe(2);
    expect(invalid.stderr).toMatch(/^error VALIDATION_ERROR: .*\n {2}field: priority/);

    const missing = await cli(['get', 'task_123e4567-e89b-12d3-a456-426614174000', '--server', srv.url]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^error TASK_NOT_FOUND: /);

    const done = JSON.parse((await cli(['submit', 'text_generation', 'test-llm', '--prompt', 'quick', '--wait', '--json', '--server', auto.url])).stdout);
    const notCancellable = await cli(['cancel', done.task_id, '--server', auto.url]);
    expect(notCancellable.code).toBe(2);
    expect(notCancellable.stderr).toMatch(/^error TASK_NOT_CANCELLABLE: /);

    const usage = await cli(['submit', 'text_generation', 'test-llm', '--prompt', 'x', '--params', '{nope', '--server', srv.url]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toMatch(/^error USAGE: --params is not valid JSON/);
    const noInput = await cli(['submit', 'text_generation', 'test-llm', '--server', srv.url]);
    expect(noInput.code).toBe(2);
    expect(noInput.stderr).toMatch(/^error USAGE: no input/);

    const offline = await cli(['get', 'task_x', '--server', 'http://127.0.0.1:59999']);
    expect(offline.code).toBe(1);
    expect(offline.stderr).toMatch(/^error NETWORK_ERROR: /);
  });

  it('submit --wait prints the completed result', async () => {
    const r = await cli(['submit', 'text_generation', 'test-llm', '--prompt', 'hi there', '--wait', '--server', auto.url]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^status\s+completed$/m);
    expect(r.stdout).toMatch(/^result:\n {2}echo: hi there$/m);

    const j = await cli(['submit', 'text_generation', 'test-llm', '--prompt', 'as json', '--wait', '--json', '--idempotency-key', 'cli-wait-1', '--server', auto.url]);
    expect(j.code).toBe(0);
    const task = JSON.parse(j.stdout);
    expect(task).toMatchObject({ status: 'completed', result: { generated_text: 'echo: as json' } });
    // the same key again: the same task
    const again = JSON.parse((await cli(['submit', 'text_generation', 'test-llm', '--prompt', 'as json', '--json', '--idempotency-key', 'cli-wait-1', '--server', auto.url])).stdout);
    expect(again.task_id).toBe(task.task_id);

    // a wait that times out
    const slow = await cli(['submit', 'text_generation', 'unserved-llm', '--prompt', 'never', '--wait', '--timeout', '0.5', '--server', srv.url]);
    expect(slow.code).toBe(1);
    expect(slow.stderr).toMatch(/^error WAIT_TIMEOUT: /);
  });

  it('watch shows the transitions and the streamed text live, ends with the result and exit 0', async () => {
    const t = JSON.parse((await cli(['submit', 'text_generation', 'test-llm', '--prompt', 'watch me', '--json', '--server', srv.url])).stdout);
    const run = await runOf(t.task_id);
    const live = { stdout: '' };
    const watching = cli(['watch', t.task_id, '--server', srv.url], { live });
    await waitFor(() => /running/.test(live.stdout), 10_000, 'watch to show running');
    run.ctx.reportProgress(0.5);
    await waitFor(() => live.stdout.includes('50%'), 5000, 'progress');
    for (const piece of ['Hello', ', ', 'world']) {
      run.ctx.reportOutput!(piece);
      await new Promise((r) => setTimeout(r, 60));
    }
    await waitFor(() => live.stdout.includes('Hello, world'), 5000, 'streamed text');
    engine.finish(t.task_id, { generated_text: 'Hello, world' });
    const r = await watching;
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    expect(lines[0]).toBe(`${t.task_id}  text_generation  test-llm`);
    const statusLines = lines.filter((l) => /^\d{4}-\d\d-\d\d \S+\s{2}\w+$/.test(l)).map((l) => l.split(/\s+/).at(-1));
    expect(statusLines).toEqual(['pending', 'running', 'completed']);
    const textAt = lines.indexOf('Hello, world');
    expect(textAt).toBeGreaterThan(lines.findIndex((l) => l.endsWith('running')));
    expect(r.stdout).toMatch(/^progress \[#{12}-{12}\]\s+50%$/m);
    // the text was streamed above: the end is the summary, not the text again
    expect(r.stdout).toMatch(/\nHello, world\n\d{4}-\S+ \S+\s{2}completed\ncompleted in \d+\.\d s\n$/);

    // --json: one event per line, the last one the final status with the task
    const j = await cli(['watch', t.task_id, '--json', '--server', srv.url]);
    expect(j.code).toBe(0);
    const events = j.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(events.filter((e) => e.type === 'status').map((e) => e.status)).toEqual(['pending', 'running', 'completed']);
    expect(events.filter((e) => e.type === 'output').map((e) => e.text).join('')).toBe('Hello, world');
    expect(events.at(-1).task.result).toEqual({ generated_text: 'Hello, world' });

    // resuming after the last event: nothing more, just the result
    const resumed = await cli(['watch', t.task_id, '--last-event-id', String(events.at(-1).event_id), '--server', srv.url]);
    expect(resumed.code).toBe(0);
    expect(resumed.stdout).toMatch(/completed in .*\nHello, world\n$/);

    // a failed task: exit 1 with its error
    const f = JSON.parse((await cli(['submit', 'text_generation', 'test-llm', '--prompt', 'fail me', '--json', '--server', srv.url])).stdout);
    const failing = cli(['watch', f.task_id, '--server', srv.url]);
    await runOf(f.task_id);
    engine.failRun(f.task_id, new Error('the engine broke'));
    const failed = await failing;
    expect(failed.code).toBe(1);
    expect(failed.stdout).toMatch(/\nfailed.*\nerror \w+: .*the engine broke/);

    const unknown = await cli(['watch', 'task_nope', '--server', srv.url]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toMatch(/^error TASK_NOT_FOUND: /);
  });

  it('serve and worker keep their options (worker --server is its own)', async () => {
    const help = await cli(['worker', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/-s, --server <url>/);
    const noToken = await cli(['worker', '--server', srv.url]);
    expect(noToken.code).toBe(2);
    expect(noToken.stderr).toMatch(/worker token is required/);
  });
});
