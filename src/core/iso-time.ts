/**
 * `new Date(ms).toISOString()` without its cost: V8 formats every date through snprintf
 * (about 7,000 instructions a call), and a create answers with two timestamps. The date part
 * is kept for the last two days seen (a task's creation and its estimated completion can be
 * days apart); the time of day is computed.
 */
const DAY_MS = 86_400_000;
const days = [Number.NaN, Number.NaN];
const prefixes = ['', ''];
let older = 0;

function datePrefix(day: number): string {
  if (day === days[0]) return prefixes[0];
  if (day === days[1]) return prefixes[1];
  const full = new Date(day).toISOString();
  const slot = older;
  older = 1 - older;
  days[slot] = day;
  return (prefixes[slot] = full.slice(0, full.length - 13)); // up to and with the "T"
}

const pad2 = (n: number): string => (n < 10 ? `0${n}` : `${n}`);

export function isoTime(time: number): string {
  // Out of range (or NaN): let Date format or throw, exactly as before.
  if (!(Math.abs(time) <= 8.64e15)) return new Date(time).toISOString();
  const ms = Math.trunc(time); // a Date's time value drops the fraction toward zero
  const day = Math.floor(ms / DAY_MS) * DAY_MS;
  let rest = ms - day; // 0 .. 86,399,999
  const h = Math.floor(rest / 3_600_000);
  rest -= h * 3_600_000;
  const m = Math.floor(rest / 60_000);
  rest -= m * 60_000;
  const s = Math.floor(rest / 1000);
  const milli = rest - s * 1000;
  return `${datePrefix(day)}${pad2(h)}:${pad2(m)}:${pad2(s)}.${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`;
}
