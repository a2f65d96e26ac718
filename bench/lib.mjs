// Shared helpers for the benchmarks in this folder: child-process servers, readiness polling,
// and an autocannon run that stops gracefully (every request sent gets its response counted).
import { spawn } from 'node:child_process';
import { closeSync, fdatasyncSync, openSync, readdirSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { cpus } from 'node:os';
import { createServer } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import autocannon from 'autocannon';

export const ROOT = new URL('..', import.meta.url).pathname;

export function envNumber(name, fallback, { allowZero = false } = {}) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < 0 || (v === 0 && !allowZero)) throw new Error(`${name} must be a ${allowZero ? 'non-negative' : 'positive'} number, got "${raw}"`);
  return v;
}

/** A port that was free a moment ago (the OS picks it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.unref();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Spawns `node <args>` from the project root; its stderr is passed through, prefixed. */
/**
 * Node flags of `npm start`: servers under measurement run as users run them. A 64 MiB
 * semi-space lets the short-lived objects of each request die young instead of being copied.
 */
export const SERVER_NODE_FLAGS = ['--max-semi-space-size=64'];

/** `stdout: true` pipes the child's stdout (child.stdout) instead of dropping it. */
export function startNode(label, args, env, { stdout = false } = {}) {
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', stdout ? 'pipe' : 'ignore', 'pipe'],
  });
  child.stderr.on('data', (d) => process.stderr.write(`[${label}] ${d}`));
  child.exited = new Promise((resolve) =>
    child.once('exit', (code, signal) => {
      if (!child.expectedExit) process.stderr.write(`[${label}] exited unexpectedly (code ${code}, signal ${signal}) at ${new Date().toISOString()}\n`);
      resolve({ code, signal });
    }),
  );
  return child;
}

/** Polls `url` until any HTTP response comes back (no fixed sleeps). */
export async function waitForHttp(url, child, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  let exited = null;
  child.exited.then((e) => (exited = e));
  for (;;) {
    if (exited) throw new Error(`server exited before answering ${url}: ${JSON.stringify(exited)}`);
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return res.status;
    } catch {
      if (Date.now() > deadline) throw new Error(`no answer from ${url} within ${timeoutMs} ms`);
      await sleep(50);
    }
  }
}

export async function stopChild(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return child.exited;
  child.expectedExit = true;
  child.kill(signal);
  return child.exited;
}

const CLOCK_TICKS = 100; // sysconf(_SC_CLK_TCK) on Linux x86-64

/** utime + stime, in clock ticks, of a /proc stat line: fields 14 and 15, at 11 and 12 after the command name. */
function statTicks(stat) {
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

/** CPU seconds (user + system) a process has used so far (Linux, /proc/<pid>/stat). */
export function cpuSeconds(pid) {
  return statTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) / CLOCK_TICKS;
}

/** CPU seconds one thread has used so far; a process's main thread has the process's id. */
export function threadCpuSeconds(pid, tid = pid) {
  return statTicks(readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')) / CLOCK_TICKS;
}

/** CPU seconds used so far by every process named `postgres` on this machine (the server and its backends). */
export function postgresCpuSeconds() {
  let ticks = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let stat;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // gone meanwhile
    }
    if (stat.includes('(postgres)')) ticks += statTicks(stat);
  }
  return ticks / CLOCK_TICKS;
}

/** Machine-wide CPU tick counters from /proc/stat (user..steal). */
export function machineTicks() {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1, 9).map(Number);
  const [user, nice, system, idle, iowait, irq, softirq, steal] = f;
  return { total: f.reduce((a, b) => a + b, 0), busy: user + nice + system + irq + softirq, idle, iowait, steal };
}

/**
 * Waits (up to `maxWaitS`) until the machine has been quiet for `quietS` seconds in a row,
 * i.e. all processes together used under `maxBusyPct` of all cores, so that a shared machine
 * (other test runs) does not skew the next measurement. Returns what it saw.
 */
export async function waitForQuiet({ maxWaitS = envNumber('BENCH_QUIET_WAIT', 120), quietS = 3, maxBusyPct = 15 } = {}) {
  const t0 = Date.now();
  let streak = 0;
  let last = machineTicks();
  let busy = NaN;
  while ((Date.now() - t0) / 1000 < maxWaitS) {
    await sleep(1000);
    const now = machineTicks();
    busy = ((now.busy - last.busy + now.steal - last.steal) / Math.max(1, now.total - last.total)) * 100;
    last = now;
    streak = busy < maxBusyPct ? streak + 1 : 0;
    if (streak >= quietS) return { quiet: true, waitedS: (Date.now() - t0) / 1000, busyPct: busy };
  }
  return { quiet: false, waitedS: (Date.now() - t0) / 1000, busyPct: busy };
}

/** fsync latency of the disk under `dir`: 4 KiB append + fdatasync, `n` times; ms percentiles. */
export function fsyncProbe(dir, n = 200) {
  const path = join(dir, 'fsync-probe.bin');
  const fd = openSync(path, 'w');
  const buf = Buffer.alloc(4096, 1);
  const t = [];
  try {
    for (let i = 0; i < n; i++) {
      writeSync(fd, buf);
      const a = performance.now();
      fdatasyncSync(fd);
      t.push(performance.now() - a);
    }
  } finally {
    closeSync(fd);
    rmSync(path, { force: true });
  }
  t.sort((a, b) => a - b);
  return { p50: t[Math.floor(n * 0.5)], p99: t[Math.floor(n * 0.99)] };
}

/** VmRSS of a process, in MiB (Linux). */
export function rssMiB(pid) {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/**
 * Runs autocannon for `durationS` seconds, then stops each connection only after the
 * response to its last request arrives, so `2xx` counts every request the server answered
 * with success and no request is left in flight. (Plain duration mode destroys sockets with
 * requests still in flight: the server may commit those, but autocannon never counts them.)
 *
 * rps is computed over the exact span from the start to the last connection finishing,
 * rather than autocannon's per-second samples, whose last sample is partial.
 */
export async function measure({ url, method = 'GET', body, headers, connections, durationS, title, serverPid, overallRate }) {
  const clients = [];
  const cpu0 = serverPid ? cpuSeconds(serverPid) : NaN;
  const main0 = serverPid ? threadCpuSeconds(serverPid) : NaN;
  const m0 = machineTicks();
  const self0 = process.cpuUsage();
  const t0 = performance.now();
  let doneCount = 0;
  // Counters are read the moment the last connection finishes, so every figure covers the
  // same window (autocannon itself resolves up to a second later).
  let end = null;
  const snapshotEnd = () => {
    if (end) return;
    end = {
      t: performance.now(),
      serverCpu: serverPid ? cpuSeconds(serverPid) : NaN,
      serverMainCpu: serverPid ? threadCpuSeconds(serverPid) : NaN,
      machine: machineTicks(),
      self: process.cpuUsage(self0),
    };
  };
  const instance = autocannon({
    url,
    method,
    body,
    headers,
    connections,
    // A fixed offered load (requests/s over all connections) instead of as fast as answered.
    ...(overallRate ? { overallRate } : {}),
    // autocannon's own timer is only a backstop; our deadline below ends the run.
    duration: durationS + 30,
    timeout: 10,
    setupClient(client) {
      clients.push(client);
      client.on('done', () => {
        if (++doneCount === connections) snapshotEnd();
      });
    },
  });
  const deadline = setTimeout(() => {
    // Allow no new requests: each client destroys itself once its in-flight request's
    // response has been counted (httpClient checks responseMax before every request).
    for (const c of clients) c.responseMax = Math.max(1, c.reqsMade);
  }, durationS * 1000);
  const result = await instance;
  clearTimeout(deadline);
  snapshotEnd();
  const elapsedS = (end.t - t0) / 1000;
  const serverCpuS = end.serverCpu - cpu0;
  const m1 = end.machine;
  const dTotal = Math.max(1, m1.total - m0.total);
  const benchCpuS = (end.self.user + end.self.system) / 1e6;
  const machineBusyPct = ((m1.busy - m0.busy) / dTotal) * 100;
  const responses = result['2xx'] + result.non2xx;
  const sent = clients.reduce((n, c) => n + c.reqsMade, 0);
  return {
    title,
    url,
    connections,
    elapsedS,
    sent,
    responses,
    ok2xx: result['2xx'],
    non2xx: result.non2xx,
    statusCodes: result.statusCodeStats,
    errors: result.errors,
    timeouts: result.timeouts,
    rps: result['2xx'] / elapsedS,
    /** Server CPU per answered request, microseconds (both cores count; 10 ms tick resolution). */
    serverCpuUsPerReq: (serverCpuS * 1e6) / Math.max(1, result['2xx'] + result.non2xx),
    serverCpuPct: (serverCpuS / elapsedS) * 100,
    /** The same for the server's main thread alone: its event loop. */
    serverMainCpuUsPerReq: ((end.serverMainCpu - main0) * 1e6) / Math.max(1, result['2xx'] + result.non2xx),
    /** How busy the event loop was, % of one core: under 100 at full load, it waited on something. */
    serverMainCpuPct: ((end.serverMainCpu - main0) / elapsedS) * 100,
    /** Machine-wide, over the run: CPU stolen by the hypervisor and time waiting on I/O (% of all cores). */
    stealPct: ((m1.steal - m0.steal) / dTotal) * 100,
    iowaitPct: ((m1.iowait - m0.iowait) / dTotal) * 100,
    machineBusyPct,
    /** Load-generator (this process) CPU, % of one core. */
    benchCpuPct: (benchCpuS / elapsedS) * 100,
    /**
     * CPU used by everything else on the machine (other test runs, the kernel's share not
     * charged to our two processes), % of all cores. High values mean a contaminated run.
     * Only meaningful when serverPid is given.
     */
    otherPct: machineBusyPct - (((serverCpuS + benchCpuS) / elapsedS) * 100) / cpus().length,
    /** otherPct plus CPU the hypervisor gave to other guests: how much the run was disturbed. */
    get disturbedPct() {
      return Math.max(0, this.otherPct) + this.stealPct;
    },
    latency: {
      p50: result.latency.p50,
      p90: result.latency.p90,
      p99: result.latency.p99,
      max: result.latency.max,
      mean: result.latency.average,
    },
  };
}

export function table(rows, columns) {
  const cells = rows.map((r) => columns.map(([, get]) => String(get(r))));
  const widths = columns.map(([h], i) => Math.max(h.length, ...cells.map((c) => c[i].length)));
  const line = (vals) => vals.map((v, i) => (i === 0 ? v.padEnd(widths[i]) : v.padStart(widths[i]))).join('  ');
  return [line(columns.map(([h]) => h)), line(widths.map((w) => '-'.repeat(w))), ...cells.map(line)].join('\n');
}

/** Median of a non-empty list of numbers. */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export const fmt = (n, d = 0) => (Number.isFinite(n) ? n.toFixed(d) : String(n));

/** One histogram from Prometheus text: cumulative buckets by bound, sum, count. */
function histogramFrom(text, name) {
  const buckets = [...text.matchAll(new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\d+)$`, 'gm'))].map((m) => ({ le: Number(m[1]), n: Number(m[2]) }));
  const sum = Number(new RegExp(`^${name}_sum (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  const count = Number(new RegExp(`^${name}_count (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  /** The bound of the bucket holding quantile q (an upper bound of it). */
  const quantile = (q) => buckets.find((b) => b.n >= q * count)?.le ?? Infinity;
  return { sum, count, mean: sum / count, quantile };
}

/**
 * The service's SQLite writer figures, read from its /metrics: groups, writes per group, and
 * the commit and fdatasync times (means; quantiles as the bucket bound they fall under).
 */
export async function writerFigures(baseUrl) {
  const text = await (await fetch(`${baseUrl}/metrics`)).text();
  const w = histogramFrom(text, 'task_manager_sqlite_group_commit_writes');
  if (!w.count) return 'writer: no group-commit figures reported';
  const c = histogramFrom(text, 'task_manager_sqlite_commit_seconds');
  const f = histogramFrom(text, 'task_manager_sqlite_fsync_seconds');
  const ms = (s) => (s === Infinity ? '>1000' : fmt(s * 1000, s < 0.001 ? 2 : 1));
  return (
    `writer: ${w.count} group commits, ${fmt(w.mean, 1)} writes per group (p50 <= ${w.quantile(0.5)}); ` +
    `commit mean ${ms(c.mean)} ms (p50 <= ${ms(c.quantile(0.5))}, p99 <= ${ms(c.quantile(0.99))}); ` +
    `fdatasync ${f.count}x, mean ${ms(f.mean)} ms (p50 <= ${ms(f.quantile(0.5))}, p99 <= ${ms(f.quantile(0.99))})`
  );
}
