import { randomBytes, randomUUID } from 'node:crypto';

let lastMs = 0;
let seq = 0;

// One syscall fills many ids' worth of randomness.
const POOL_SIZE = 16 * 512;
let pool = randomBytes(POOL_SIZE);
let poolOffset = 0;
function random(n: number): Buffer {
  if (poolOffset + n > POOL_SIZE) {
    pool = randomBytes(POOL_SIZE);
    poolOffset = 0;
  }
  const out = Buffer.from(pool.subarray(poolOffset, poolOffset + n));
  poolOffset += n;
  return out;
}

/**
 * RFC 9562 UUIDv7: 48-bit millisecond timestamp, then a 12-bit counter so ids made in
 * the same millisecond still sort in creation order (keeps inserts index-local).
 */
export function uuidv7(now = Date.now()): string {
  if (now <= lastMs) {
    seq++;
    if (seq > 0xfff) {
      lastMs++;
      seq = 0;
    }
    now = lastMs;
  } else {
    lastMs = now;
    seq = random(2).readUInt16BE(0) & 0x3ff;
  }
  const b = random(16);
  b.writeUIntBE(now, 0, 6);
  b[6] = 0x70 | ((seq >> 8) & 0x0f);
  b[7] = seq & 0xff;
  b[8] = 0x80 | (b[8] & 0x3f);
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export const newTaskId = (now?: number): string => `task_${uuidv7(now)}`;
export const newRequestId = (): string => `req_${randomUUID()}`;
export const newLeaseToken = (): string => random(16).toString('hex');

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
export const TASK_ID_PATTERN = `^task_${UUID}$`;
const TASK_ID_RE = new RegExp(TASK_ID_PATTERN);
export const isTaskId = (s: string): boolean => TASK_ID_RE.test(s);
