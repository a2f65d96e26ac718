/**
 * Writes in flight, by id. Ids are handed out in sequence and settle within milliseconds, so
 * each entry lives in the slot its id's low bits name, and the table doubles when that slot
 * is still taken by an older write.
 *
 * A Map kept these before. Once a Map has reached V8's old generation, entries set and
 * deleted at this rate drag every value put in it there too: each create's promise, closures
 * and record were promoted and lived on until a full collection (docs/benchmarks.md,
 * "2026-11-27 03:20 – 03:50 UTC"). A slot emptied here holds nothing.
 */
export class InFlight<T extends { id: number }> {
  private slots: Array<T | undefined>;
  private mask: number;
  private count = 0;

  constructor(capacity = 1024) {
    const size = 2 ** Math.ceil(Math.log2(Math.max(2, capacity)));
    this.slots = new Array<T | undefined>(size).fill(undefined);
    this.mask = size - 1;
  }

  get size(): number {
    return this.count;
  }

  add(entry: T): void {
    for (let taken = this.slots[entry.id & this.mask]; taken !== undefined; taken = this.slots[entry.id & this.mask]) {
      if (taken.id === entry.id) throw new Error(`write ${entry.id} is already in flight`);
      this.grow();
    }
    this.slots[entry.id & this.mask] = entry;
    this.count++;
  }

  /** Removes and returns the entry with this id, if it is in flight. */
  take(id: number): T | undefined {
    const i = id & this.mask;
    const entry = this.slots[i];
    if (entry === undefined || entry.id !== id) return undefined;
    this.slots[i] = undefined;
    this.count--;
    return entry;
  }

  ids(): number[] {
    const out: number[] = [];
    for (const e of this.slots) if (e !== undefined) out.push(e.id);
    return out.sort((a, b) => a - b);
  }

  /** Doubles the table until every entry has a slot of its own. */
  private grow(): void {
    const entries = this.slots.filter((e): e is T => e !== undefined);
    for (let size = this.slots.length * 2; ; size *= 2) {
      const slots = new Array<T | undefined>(size).fill(undefined);
      const mask = size - 1;
      if (entries.every((e) => (slots[e.id & mask] === undefined ? ((slots[e.id & mask] = e), true) : false))) {
        this.slots = slots;
        this.mask = mask;
        return;
      }
    }
  }
}
