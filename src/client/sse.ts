/** A Server-Sent Events parser over a fetch body (WHATWG rules), for runtimes without EventSource headers. */

export interface SseMessage {
  /** The `id:` of this message, when it had one. */
  id?: string;
  /** `event:`, or `message` when absent. */
  event: string;
  /** The `data:` lines joined by `\n`. */
  data: string;
  /** A `retry:` the server sent with this block (milliseconds). */
  retry?: number;
}

/**
 * Yields each message block of an SSE body. Comments (`: keep-alive`) are skipped; a block with
 * only `retry:` is yielded with empty data so callers can honour it. Stopping the iteration
 * cancels the body.
 */
export async function* parseSse(body: ReadableStream<Uint8Array>): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let id: string | undefined;
  let event = '';
  let data: string[] = [];
  let retry: number | undefined;
  let sawField = false;

  function* lines(final: boolean): Generator<string> {
    for (;;) {
      const m = /\r\n|\r|\n/.exec(buf);
      if (!m) break;
      // A lone '\r' at the very end may be the first half of '\r\n': wait for more.
      if (m[0] === '\r' && m.index === buf.length - 1 && !final) break;
      const line = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      yield line;
    }
  }

  function dispatchable(): SseMessage | null {
    const msg: SseMessage | null = sawField
      ? { event: event || 'message', data: data.join('\n'), ...(id !== undefined ? { id } : {}), ...(retry !== undefined ? { retry } : {}) }
      : null;
    id = undefined;
    event = '';
    data = [];
    retry = undefined;
    sawField = false;
    return msg && (msg.data !== '' || msg.retry !== undefined || msg.id !== undefined || msg.event !== 'message') ? msg : null;
  }

  function field(line: string): void {
    if (line.startsWith(':')) return; // comment
    const colon = line.indexOf(':');
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (name) {
      case 'data':
        data.push(value);
        break;
      case 'event':
        event = value;
        break;
      case 'id':
        if (!value.includes('\0')) id = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) retry = Number(value);
        break;
      default:
        return; // unknown fields are ignored
    }
    sawField = true;
  }

  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) {
        buf += decoder.decode();
        for (const line of lines(true)) {
          if (line === '') {
            const msg = dispatchable();
            if (msg) yield msg;
          } else field(line);
        }
        // An unterminated last block is discarded, as the standard says.
        return;
      }
      buf += decoder.decode(value, { stream: true });
      for (const line of lines(false)) {
        if (line === '') {
          const msg = dispatchable();
          if (msg) yield msg;
        } else field(line);
      }
    }
  } finally {
    // Stopped early (break, abort, error): release the connection.
    reader.cancel().catch(() => {});
  }
}
