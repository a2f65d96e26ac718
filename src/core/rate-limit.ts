export interface RateWindow {
  limit: number;
  windowMs: number;
}

export interface RateDecision {
  allowed: boolean;
  /** The limit of the window that binds (the one `remaining` and `resetAt` describe). */
  limit: number;
  /** Requests left in the tightest window. */
  remaining: number;
  /** Epoch ms when the binding window resets. */
  resetAt: number;
}

/** Counts requests per key in fixed windows; a refused request is not counted. */
export interface RateLimitStore {
  hit(key: string, windows: RateWindow[], now: number): Promise<RateDecision>;
  close(): Promise<void>;
}
