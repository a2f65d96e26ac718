/** A fixed-bucket histogram that can cross a thread boundary as plain data. */
export interface Histogram {
  /** Upper bounds, ascending; observations above the last count only in `count`. */
  bounds: number[];
  /** Observations per bucket, not cumulative. */
  counts: number[];
  sum: number;
  count: number;
}

export function newHistogram(bounds: number[]): Histogram {
  return { bounds, counts: bounds.map(() => 0), sum: 0, count: 0 };
}

export function observe(h: Histogram, value: number): void {
  let i = 0;
  while (i < h.bounds.length && value > h.bounds[i]) i++;
  if (i < h.bounds.length) h.counts[i]++;
  h.sum += value;
  h.count++;
}
