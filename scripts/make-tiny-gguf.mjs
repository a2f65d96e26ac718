#!/usr/bin/env node
// Writes a tiny random-weight llama GGUF (v3, all tensors F32) that llama.cpp loads.
// The file is byte-identical on every run (seeded PRNG), so the text it yields at a fixed
// seed is stable too. No dependencies.
//
// Usage: node scripts/make-tiny-gguf.mjs [out=models/tiny-llama.gguf] [--force]
// Skips writing when `out` already exists with the expected size, unless --force.
import { mkdirSync, statSync, writeFileSync, renameSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

// ---- model shape ---------------------------------------------------------------------
const N_EMBD = 64;
const N_LAYER = 2;
const N_HEAD = 4;
const N_HEAD_KV = 4;
const N_FF = 256;
const N_CTX = 2048;
const ALIGN = 32;

// ---- vocabulary ----------------------------------------------------------------------
const WORDS = (
  'the of and to in a is that for it as was with be by on not he I this are or his from at which ' +
  'but have an they you were her she there one all we their can has more will would so if about ' +
  'what when up out time no other some into could them only new over these two may first then do ' +
  'any like my now its people also made after did many before must through back years where much ' +
  'your way well down should because each just those how too little state good very make world ' +
  'still own see men work long get here between both life being under never day same another know ' +
  'while last might us great old year off come since against go came right used take three'
).split(' ');

const TT_NORMAL = 1;
const TT_UNKNOWN = 2;
const TT_CONTROL = 3;
const TT_BYTE = 6;

const tokens = ['<unk>', '<s>', '</s>'];
const types = [TT_UNKNOWN, TT_CONTROL, TT_CONTROL];
const scores = [0, 0, 0];
for (let b = 0; b < 256; b++) {
  tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`);
  types.push(TT_BYTE);
  scores.push(0);
}
// A lone "▁" lets the tokenizer encode spaces as a piece (not as the bytes of U+2581), so
// text survives tokenize → detokenize. Its output row is zeroed with the specials.
tokens.push('\u2581');
types.push(TT_NORMAL);
scores.push(0);
const FIRST_WORD = tokens.length;
WORDS.forEach((w, i) => {
  tokens.push(`\u2581${w}`);
  types.push(TT_NORMAL);
  scores.push(-(i + 1)); // earlier (more common) words score higher
});
const N_VOCAB = tokens.length;

// ---- seeded PRNG (mulberry32) + Box-Muller normals ----------------------------------
let state = 0x5eed1234;
function rand() {
  state = (state + 0x6d2b79f5) | 0;
  let t = state;
  t = Math.imul(t ^ (t >>> 15), t | 1);
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
}
function normal() {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}
function randn(n, std) {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = normal() * std;
  return a;
}
function ones(n) {
  return new Float32Array(n).fill(1);
}

// ---- tensors (dims in ggml order: row length first) ---------------------------------
const tensors = [];
function tensor(name, dims, data) {
  const n = dims.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`${name}: ${data.length} values for dims ${dims}`);
  tensors.push({ name, dims, data });
}

{
  const emb = randn(N_EMBD * N_VOCAB, 0.5);
  tensor('token_embd.weight', [N_EMBD, N_VOCAB], emb);
}
for (let l = 0; l < N_LAYER; l++) {
  const p = `blk.${l}.`;
  const s = 1 / Math.sqrt(N_EMBD);
  tensor(`${p}attn_norm.weight`, [N_EMBD], ones(N_EMBD));
  tensor(`${p}attn_q.weight`, [N_EMBD, N_EMBD], randn(N_EMBD * N_EMBD, s));
  tensor(`${p}attn_k.weight`, [N_EMBD, (N_EMBD / N_HEAD) * N_HEAD_KV], randn(N_EMBD * N_EMBD, s));
  tensor(`${p}attn_v.weight`, [N_EMBD, (N_EMBD / N_HEAD) * N_HEAD_KV], randn(N_EMBD * N_EMBD, s));
  tensor(`${p}attn_output.weight`, [N_EMBD, N_EMBD], randn(N_EMBD * N_EMBD, s));
  tensor(`${p}ffn_norm.weight`, [N_EMBD], ones(N_EMBD));
  tensor(`${p}ffn_gate.weight`, [N_EMBD, N_FF], randn(N_EMBD * N_FF, s));
  tensor(`${p}ffn_up.weight`, [N_EMBD, N_FF], randn(N_EMBD * N_FF, s));
  tensor(`${p}ffn_down.weight`, [N_FF, N_EMBD], randn(N_FF * N_EMBD, 1 / Math.sqrt(N_FF)));
}
tensor('output_norm.weight', [N_EMBD], ones(N_EMBD));
{
  // Row t holds the logit weights of token t. Special, byte and "▁" tokens get all-zero rows
  // (logit exactly 0) and word rows are random, so sampled text is made of words.
  const out = randn(N_EMBD * N_VOCAB, 1);
  out.fill(0, 0, FIRST_WORD * N_EMBD);
  tensor('output.weight', [N_EMBD, N_VOCAB], out);
}

// ---- metadata ------------------------------------------------------------------------
const T = { U32: 4, I32: 5, F32: 6, BOOL: 7, STRING: 8, ARRAY: 9 };
const kv = [
  ['general.architecture', T.STRING, 'llama'],
  ['general.name', T.STRING, 'tiny-llama (random weights)'],
  ['general.file_type', T.U32, 0],
  ['general.alignment', T.U32, ALIGN],
  ['llama.context_length', T.U32, N_CTX],
  ['llama.embedding_length', T.U32, N_EMBD],
  ['llama.block_count', T.U32, N_LAYER],
  ['llama.feed_forward_length', T.U32, N_FF],
  ['llama.attention.head_count', T.U32, N_HEAD],
  ['llama.attention.head_count_kv', T.U32, N_HEAD_KV],
  ['llama.attention.layer_norm_rms_epsilon', T.F32, 1e-5],
  ['llama.rope.dimension_count', T.U32, N_EMBD / N_HEAD],
  ['llama.rope.freq_base', T.F32, 10000],
  ['llama.vocab_size', T.U32, N_VOCAB],
  ['tokenizer.ggml.model', T.STRING, 'llama'],
  ['tokenizer.ggml.tokens', T.ARRAY, [T.STRING, tokens]],
  ['tokenizer.ggml.scores', T.ARRAY, [T.F32, scores]],
  ['tokenizer.ggml.token_type', T.ARRAY, [T.I32, types]],
  ['tokenizer.ggml.bos_token_id', T.U32, 1],
  ['tokenizer.ggml.eos_token_id', T.U32, 2],
  ['tokenizer.ggml.unknown_token_id', T.U32, 0],
  ['tokenizer.ggml.add_bos_token', T.BOOL, true],
  ['tokenizer.ggml.add_eos_token', T.BOOL, false],
];

// ---- serialisation -------------------------------------------------------------------
const chunks = [];
let size = 0;
function push(buf) {
  chunks.push(buf);
  size += buf.length;
}
function u32(v) {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  push(b);
}
function i32(v) {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v);
  push(b);
}
function u64(v) {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  push(b);
}
function f32(v) {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  push(b);
}
function str(s) {
  const b = Buffer.from(s, 'utf8');
  u64(b.length);
  push(b);
}
function value(type, v) {
  switch (type) {
    case T.U32: return u32(v);
    case T.I32: return i32(v);
    case T.F32: return f32(v);
    case T.BOOL: return push(Buffer.from([v ? 1 : 0]));
    case T.STRING: return str(v);
    case T.ARRAY: {
      const [elemType, items] = v;
      u32(elemType);
      u64(items.length);
      for (const item of items) value(elemType, item);
      return;
    }
    default: throw new Error(`unknown GGUF type ${type}`);
  }
}
function pad() {
  const n = (ALIGN - (size % ALIGN)) % ALIGN;
  if (n) push(Buffer.alloc(n));
}

push(Buffer.from('GGUF', 'ascii'));
u32(3); // version
u64(tensors.length);
u64(kv.length);
for (const [key, type, v] of kv) {
  str(key);
  u32(type);
  value(type, v);
}
let offset = 0;
for (const t of tensors) {
  t.offset = offset;
  str(t.name);
  u32(t.dims.length);
  for (const d of t.dims) u64(d);
  u32(0); // GGML_TYPE_F32
  u64(offset);
  offset += t.data.byteLength;
  offset += (ALIGN - (offset % ALIGN)) % ALIGN;
}
pad();
const dataStart = size;
for (const t of tensors) {
  const want = dataStart + t.offset;
  if (size < want) push(Buffer.alloc(want - size));
  const b = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  // Float32Array is host-endian; GGUF is little-endian.
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) b.swap32();
  push(b);
}
pad();
const file = Buffer.concat(chunks, size);

// ---- write ---------------------------------------------------------------------------
const args = process.argv.slice(2);
const force = args.includes('--force');
const out = resolve(args.find((a) => !a.startsWith('--')) ?? 'models/tiny-llama.gguf');

let existing = -1;
try {
  existing = statSync(out).size;
} catch {}
if (existing === file.length && !force) {
  console.log(`${out} exists (${file.length} bytes); skipped (use --force to rewrite)`);
} else {
  mkdirSync(dirname(out), { recursive: true });
  const tmp = `${out}.${process.pid}.tmp`;
  writeFileSync(tmp, file);
  renameSync(tmp, out);
  console.log(`wrote ${out} (${file.length} bytes, ${N_VOCAB} tokens, ${tensors.length} tensors)`);
}
