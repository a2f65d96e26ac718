// What a long-lived Map costs the garbage collector when entries come and go at a high rate,
// as the SQLite store's writes in flight did (src/store/sqlite/in-flight.ts).
//
//   node bench/map-churn.mjs          (needs `npm run build` for the InFlight row)
//   BENCH_SECONDS=2 BENCH_IN_FLIGHT=50 node bench/map-churn.mjs
//
// Each row runs in a child process with --trace-gc-nvp for BENCH_SECONDS: entries are added
// with sequential ids, each holding a fresh object of about 300 bytes, and the oldest is
// removed once BENCH_IN_FLIGHT are held (the shape of creates waiting for their group
// commit). The structure is moved to the old generation first (two full collections), where
// a long-lived one ends up anyway. Reported: entries handled, bytes promoted to the old
// generation per entry, and the scavenges' and full collections' count.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { envNumber, table } from './lib.mjs';

const SECONDS = envNumber('BENCH_SECONDS', 2);
const IN_FLIGHT = Math.floor(envNumber('BENCH_IN_FLIGHT', 50));

if (process.argv[2] === '--child') {
  const mode = process.argv[3];
  const { InFlight } = await import('../dist/store/sqlite/in-flight.js');
  const map = new Map();
  const slots = new InFlight(1024);
  const held = [];
  let next = 0;
  const add = (id, value) => (mode === 'slots' ? slots.add({ id, value }) : mode === 'overwrite' ? map.set(id % (IN_FLIGHT + 1), value) : map.set(id, value));
  const remove = (id) => (mode === 'slots' ? slots.take(id) : mode === 'overwrite' ? undefined : map.delete(id));
  for (let i = 0; i < IN_FLIGHT; i++) add(next, {}), held.push(next++);
  globalThis.gc();
  globalThis.gc();
  const until = Date.now() + SECONDS * 1000;
  const step = () => {
    for (let i = 0; i < 25; i++) {
      add(next, { payload: new Array(30).fill(next), tag: `w${next}` });
      held.push(next++);
      remove(held.shift());
    }
    if (Date.now() < until) setImmediate(step);
    else console.log(`entries=${next}`);
  };
  step();
} else {
  const rows = [
    ['churn', 'Map, set/delete'],
    ['overwrite', 'Map, values overwritten in place (no entry comes or goes)'],
    ['slots', 'InFlight (slots by id), add/take'],
  ];
  const results = [];
  for (const [mode, what] of rows) {
    const out = spawnSync(process.execPath, ['--expose-gc', '--trace-gc-nvp', fileURLToPath(import.meta.url), '--child', mode], {
      encoding: 'utf8',
      env: { ...process.env, BENCH_SECONDS: String(SECONDS), BENCH_IN_FLIGHT: String(IN_FLIGHT) },
    });
    if (out.status !== 0) throw new Error(`${mode}: ${out.stderr || out.stdout}`);
    const entries = Number(/entries=(\d+)/.exec(out.stdout)?.[1] ?? NaN);
    let promoted = 0;
    let scavenges = 0;
    let full = 0;
    for (const line of out.stdout.split('\n')) {
      if (/ gc=s /.test(line)) {
        scavenges++;
        promoted += Number(/ promoted=(\d+)/.exec(line)?.[1] ?? 0);
      } else if (/ gc=m[cs] /.test(line)) full++;
    }
    results.push({ mode, what, entries, perEntry: promoted / entries, scavenges, full });
  }
  console.log(`bench:map-churn  ${SECONDS} s a row, ${IN_FLIGHT} entries held, about 300 bytes each\n`);
  console.log(
    table(results, [
      ['row', (r) => r.what],
      ['entries', (r) => r.entries],
      ['promoted B/entry', (r) => r.perEntry.toFixed(1)],
      ['scavenges', (r) => r.scavenges],
      ['full GCs', (r) => r.full],
    ]),
  );
  const by = Object.fromEntries(results.map((r) => [r.mode, r]));
  console.log(
    `map_churn_promoted_b=${by.churn.perEntry.toFixed(0)} slots_promoted_b=${by.slots.perEntry.toFixed(0)} map_churn_entries=${by.churn.entries} slots_entries=${by.slots.entries}`,
  );
}
