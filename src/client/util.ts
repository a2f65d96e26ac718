/** Small runtime-neutral helpers: abort signals, sleeps, WebSocket lookup. */

/** The reason an aborted signal carries, as something throwable. */
export function abortReason(signal: AbortSignal): unknown {
  if (signal.reason !== undefined) return signal.reason;
  const err = new Error('This operation was aborted');
  err.name = 'AbortError';
  return err;
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw abortReason(signal);
}

export function isAbortError(err: unknown): boolean {
  return !!err && typeof err === 'object' && ((err as { name?: string }).name === 'AbortError' || (err as { name?: string }).name === 'TimeoutError');
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortReason(signal));
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A controller that aborts when any of `signals` does (AbortSignal.any is not in every
 * runtime this supports). `dispose` detaches it from the parents.
 */
export function linkedController(...signals: Array<AbortSignal | undefined>): { controller: AbortController; dispose: () => void } {
  const controller = new AbortController();
  const offs: Array<() => void> = [];
  for (const s of signals) {
    if (!s) continue;
    if (s.aborted) {
      controller.abort(abortReason(s));
      break;
    }
    const on = () => controller.abort(abortReason(s));
    s.addEventListener('abort', on, { once: true });
    offs.push(() => s.removeEventListener('abort', on));
  }
  return { controller, dispose: () => offs.splice(0).forEach((off) => off()) };
}

/** The subset of the WebSocket interface the SDK uses; the browser's, Node 22's and `ws`'s all fit. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'message' | 'close' | 'error', listener: (event: any) => void): void;
}

export type WebSocketConstructor = new (url: string, protocolsOrOptions?: any) => WebSocketLike;

/**
 * A WebSocket constructor: the global one (browsers, Node 22+), else the `ws` package loaded on
 * demand (Node 20), else null. The specifier is a variable so bundlers leave it alone.
 */
export async function findWebSocket(): Promise<{ ctor: WebSocketConstructor; acceptsOptions: boolean } | null> {
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === 'function') return { ctor: global, acceptsOptions: false };
  try {
    const specifier = 'ws';
    const mod = await import(/* @vite-ignore */ /* webpackIgnore: true */ specifier);
    const ctor = (mod.WebSocket ?? mod.default) as WebSocketConstructor | undefined;
    return typeof ctor === 'function' ? { ctor, acceptsOptions: true } : null;
  } catch {
    return null;
  }
}

/** A message's text, whichever type the runtime hands over for a text frame. */
export function messageText(data: unknown): string {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer) return new TextDecoder().decode(data);
  if (ArrayBuffer.isView(data)) return new TextDecoder().decode(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  return String(data);
}
