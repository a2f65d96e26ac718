import { randomBytes, randomUUID } from 'node:crypto';

let lastMs = 0;
let seq = 0;

// One syscall fills many ids' worth of randomness.
const POOL_SIZE = 16 * 512;
let pool = randomBytes(POOL_SIZE);
let poolOffset = 0;

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

function randomByte(): number {
  if (poolOffset >= POOL_SIZE) {
    pool = randomBytes(POOL_SIZE);
    poolOffset = 0;
  }
  return pool[poolOffset++];
}

/**
 * RFC 9562 UUIDv7: 48-bit millisecond timestamp, then a 12-bit counter so ids made in
 * the same millisecond still sort in creation order (keeps inserts index-local), then 62
 * random bits. Written as text directly: no buffer per id (one is made on every create).
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
    // A random start in the lower quarter leaves room for 3,000+ ids in this millisecond.
    seq = ((randomByte() << 8) | randomByte()) & 0x3ff;
  }
  // 48 bits as two 24-bit halves: Number#toString(16) on a double costs more than the rest.
  const hi = Math.floor(now / 0x1000000);
  const lo = now - hi * 0x1000000;
  const t = HEX[hi >>> 16] + HEX[(hi >>> 8) & 0xff] + HEX[hi & 0xff] + HEX[lo >>> 16];
  const t2 = HEX[(lo >>> 8) & 0xff] + HEX[lo & 0xff];
  const v = HEX[0x70 | (seq >>> 8)] + HEX[seq & 0xff];
  const r = HEX[0x80 | (randomByte() & 0x3f)] + HEX[randomByte()];
  const tail = HEX[randomByte()] + HEX[randomByte()] + HEX[randomByte()] + HEX[randomByte()] + HEX[randomByte()] + HEX[randomByte()];
  return `${t}-${t2}-${v}-${r}-${tail}`;
}

export const newTaskId = (now?: number): string => `task_${uuidv7(now)}`;
export const newRequestId = (): string => `req_${randomUUID()}`;
/** 128 random bits as 32 hex digits, read straight from the pool. */
export function newLeaseToken(): string {
  if (poolOffset + 16 > POOL_SIZE) {
    pool = randomBytes(POOL_SIZE);
    poolOffset = 0;
  }
  poolOffset += 16;
  return pool.toString('hex', poolOffset - 16, poolOffset);
}

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
export const TASK_ID_PATTERN = `^task_${UUID}$`;
const TASK_ID_RE = new RegExp(TASK_ID_PATTERN);
export const isTaskId = (s: string): boolean => TASK_ID_RE.test(s);
