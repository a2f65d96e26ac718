import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { InFlight } from '../src/store/sqlite/in-flight.js';

type Entry = { id: number; v: string };
const entry = (id: number): Entry => ({ id, v: `w${id}` });

describe('InFlight (the SQLite store’s writes in flight)', () => {
  it('gives back each entry once, in any order, and nothing for ids it does not hold', () => {
    const f = new InFlight<Entry>(8);
    for (let id = 1; id <= 5; id++) f.add(entry(id));
    expect(f.size).toBe(5);
    expect(f.take(3)).toEqual(entry(3));
    expect(f.take(3)).toBeUndefined();
    expect(f.take(9)).toBeUndefined(); // same slot as 1, another id
    expect(f.take(1)).toEqual(entry(1));
    expect(f.ids()).toEqual([2, 4, 5]);
    expect(f.size).toBe(3);
  });

  it('grows when an older write still holds the slot a new id falls on', () => {
    const f = new InFlight<Entry>(4);
    f.add(entry(1));
    f.add(entry(5)); // 5 & 3 === 1 & 3
    f.add(entry(1 + 1024));
    for (let id = 100; id < 400; id++) f.add(entry(id));
    expect(f.size).toBe(303);
    expect(f.take(1)).toEqual(entry(1));
    expect(f.take(5)).toEqual(entry(5));
    expect(f.take(1025)).toEqual(entry(1025));
    for (let id = 399; id >= 100; id--) expect(f.take(id)?.id).toBe(id);
    expect(f.size).toBe(0);
    expect(f.ids()).toEqual([]);
  });

  it('refuses an id that is already in flight, and keeps the first', () => {
    const f = new InFlight<Entry>(4);
    f.add(entry(7));
    expect(() => f.add({ id: 7, v: 'again' })).toThrow(/already in flight/);
    expect(f.take(7)).toEqual(entry(7));
  });

  it('works past 2^31 ids', () => {
    const f = new InFlight<Entry>(16);
    const base = 2 ** 33 + 5;
    for (let i = 0; i < 40; i++) f.add(entry(base + i));
    expect(f.take(base + 17)).toEqual(entry(base + 17));
    expect(f.ids()).toHaveLength(39);
    expect(f.ids()[0]).toBe(base);
  });

  it('holds what a Map would, for any interleaving of sequential adds and takes', () => {
    fc.assert(
      fc.property(fc.array(fc.oneof(fc.constant('add' as const), fc.nat(300)), { maxLength: 400 }), fc.integer({ min: 1, max: 64 }), (steps, capacity) => {
        const f = new InFlight<Entry>(capacity);
        const model = new Map<number, Entry>();
        let next = 1;
        for (const s of steps) {
          if (s === 'add') {
            const e = entry(next++);
            f.add(e);
            model.set(e.id, e);
          } else {
            expect(f.take(s)).toEqual(model.get(s));
            model.delete(s);
          }
          expect(f.size).toBe(model.size);
        }
        expect(f.ids()).toEqual([...model.keys()].sort((a, b) => a - b));
      }),
      { numRuns: 300 },
    );
  });
});
