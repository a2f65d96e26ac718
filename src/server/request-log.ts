import type { FastifyBaseLogger } from 'fastify';
import type { ChildLoggerOptions } from 'fastify/types/logger.js';

type Bindings = Record<string, unknown>;
type Log = (...args: unknown[]) => void;

/**
 * A request's logger that builds its pino child (bindings serialized, methods rebound) only
 * when a message at an enabled level is logged. At `warn` and above a request usually logs
 * nothing, and building the child would cost more than a small route's handler.
 */
class LazyChildLogger {
  private built: FastifyBaseLogger | null = null;

  constructor(
    private readonly parent: FastifyBaseLogger,
    private readonly bindings: Bindings,
  ) {}

  private real(): FastifyBaseLogger {
    return (this.built ??= this.parent.child(this.bindings));
  }

  private emit(level: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace', args: unknown[]): void {
    if (this.built) (this.built[level] as Log)(...args);
    else if ((this.parent as unknown as { isLevelEnabled(l: string): boolean }).isLevelEnabled(level)) (this.real()[level] as Log)(...args);
  }

  get level(): string {
    return (this.built ?? this.parent).level;
  }

  set level(l: string) {
    this.real().level = l;
  }

  fatal(...args: unknown[]): void {
    this.emit('fatal', args);
  }
  error(...args: unknown[]): void {
    this.emit('error', args);
  }
  warn(...args: unknown[]): void {
    this.emit('warn', args);
  }
  info(...args: unknown[]): void {
    this.emit('info', args);
  }
  debug(...args: unknown[]): void {
    this.emit('debug', args);
  }
  trace(...args: unknown[]): void {
    this.emit('trace', args);
  }
  silent(): void {}

  child(bindings: Bindings, opts?: Record<string, unknown>): FastifyBaseLogger {
    return this.real().child(bindings, opts);
  }
}

/** Fastify's `childLoggerFactory`: lazy unless the route sets its own level or serializers. */
export function requestLogger(parent: FastifyBaseLogger, bindings: Bindings, opts: ChildLoggerOptions): FastifyBaseLogger {
  if (opts.level !== undefined || opts.serializers !== undefined || typeof (parent as { isLevelEnabled?: unknown }).isLevelEnabled !== 'function') {
    return parent.child(bindings, opts);
  }
  return new LazyChildLogger(parent, bindings) as unknown as FastifyBaseLogger;
}
