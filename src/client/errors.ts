/**
 * Typed errors of the SDK. Every error the server sends — `{error: {code, message, details},
 * timestamp, request_id}` — becomes a `TaskManagerError` subclass chosen by its code; failures
 * on this side (network, timeouts, unreadable answers) use the client-only codes below.
 */
import type { ERROR_CODES, ErrorCode } from '../core/errors.js';

/** Codes the SDK itself raises: the request never got a well-formed answer. */
export type ClientErrorCode =
  /** The server could not be reached, or the connection dropped. status 0. */
  | 'NETWORK_ERROR'
  /** `waitForTask` ran out of time before the task was final. status 0. */
  | 'WAIT_TIMEOUT'
  /** The server answered with something that is not the API's JSON (a proxy's HTML page). */
  | 'INVALID_RESPONSE';

export type TaskManagerErrorCode = ErrorCode | ClientErrorCode;

export interface TaskManagerErrorInit {
  code: TaskManagerErrorCode | (string & {});
  message: string;
  status: number;
  details?: Record<string, unknown>;
  requestId?: string | null;
  timestamp?: string | null;
  cause?: unknown;
}

export class TaskManagerError extends Error {
  /** The API error code (`VALIDATION_ERROR`, `TASK_NOT_FOUND`, …) or a client code (`NETWORK_ERROR`, …). */
  readonly code: TaskManagerErrorCode | (string & {});
  /** HTTP status; 0 when no HTTP answer was received. */
  readonly status: number;
  /** The error's `details` object (`field`, `reason`, …); `{}` when the server sent none. */
  readonly details: Record<string, unknown>;
  /** The server's `request_id` (also its `X-Request-Id` header), for its logs. */
  readonly requestId: string | null;
  readonly timestamp: string | null;

  constructor(init: TaskManagerErrorInit) {
    super(init.message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = new.target.name;
    this.code = init.code;
    this.status = init.status;
    this.details = init.details ?? {};
    this.requestId = init.requestId ?? null;
    this.timestamp = init.timestamp ?? null;
  }

  /** True for 4xx answers: the request itself was wrong and retrying it unchanged will not help (429 aside). */
  get isClientError(): boolean {
    return this.status >= 400 && this.status < 500;
  }
}

/** 422 VALIDATION_ERROR: a body, query or input field is missing, unknown or out of bounds (`details.field`). */
export class ValidationError extends TaskManagerError {}
/** 400 INVALID_REQUEST: the body could not be parsed. */
export class InvalidRequestError extends TaskManagerError {}
/** 400 MODEL_NOT_FOUND: no catalog entry or live worker serves `model_name` for `task_type`. */
export class ModelNotFoundError extends TaskManagerError {}
/** 401 UNAUTHORIZED. */
export class UnauthorizedError extends TaskManagerError {}
/** 404s: ROUTE_NOT_FOUND, ARTIFACT_NOT_FOUND, WORKER_NOT_FOUND (and TASK_NOT_FOUND, below). */
export class NotFoundError extends TaskManagerError {}
/** 404 TASK_NOT_FOUND. */
export class TaskNotFoundError extends NotFoundError {}
/** 405 METHOD_NOT_ALLOWED. */
export class MethodNotAllowedError extends TaskManagerError {}
/** 409s: TASK_NOT_CANCELLABLE, IDEMPOTENCY_KEY_REUSED, LEASE_CONFLICT, CONFLICT. */
export class ConflictError extends TaskManagerError {}
/** 409 TASK_NOT_CANCELLABLE: the task already completed or failed. */
export class TaskNotCancellableError extends ConflictError {}
/** 409 IDEMPOTENCY_KEY_REUSED: the key was used before with a different request. */
export class IdempotencyKeyReusedError extends ConflictError {}
/** 413 PAYLOAD_TOO_LARGE. */
export class PayloadTooLargeError extends TaskManagerError {}
/** 415 UNSUPPORTED_MEDIA_TYPE. */
export class UnsupportedMediaTypeError extends TaskManagerError {}

/** 429 RATE_LIMITED. `retryAfter` is the server's `Retry-After`, in seconds (null when absent). */
export class RateLimitedError extends TaskManagerError {
  readonly retryAfter: number | null;
  constructor(init: TaskManagerErrorInit & { retryAfter?: number | null }) {
    super(init);
    this.retryAfter = init.retryAfter ?? null;
  }
}

/** 500 INTERNAL_ERROR. */
export class InternalServerError extends TaskManagerError {}
/** 503 SERVICE_UNAVAILABLE: the task store cannot be read or written right now. */
export class ServiceUnavailableError extends TaskManagerError {}
/** 503 WORKER_UNAVAILABLE: no worker serves the model and the server refuses to queue. */
export class WorkerUnavailableError extends TaskManagerError {}

/** NETWORK_ERROR: no answer (connection refused, reset, DNS). */
export class NetworkError extends TaskManagerError {}
/** WAIT_TIMEOUT: `waitForTask` gave up; `lastTask` is the latest state seen, when any. */
export class WaitTimeoutError extends TaskManagerError {
  readonly lastTask: unknown;
  constructor(init: TaskManagerErrorInit & { lastTask?: unknown }) {
    super(init);
    this.lastTask = init.lastTask ?? null;
  }
}

type ErrorClass = new (init: TaskManagerErrorInit) => TaskManagerError;

const BY_CODE: Partial<Record<TaskManagerErrorCode, ErrorClass>> = {
  VALIDATION_ERROR: ValidationError,
  INVALID_REQUEST: InvalidRequestError,
  MODEL_NOT_FOUND: ModelNotFoundError,
  UNAUTHORIZED: UnauthorizedError,
  TASK_NOT_FOUND: TaskNotFoundError,
  ROUTE_NOT_FOUND: NotFoundError,
  ARTIFACT_NOT_FOUND: NotFoundError,
  WORKER_NOT_FOUND: NotFoundError,
  METHOD_NOT_ALLOWED: MethodNotAllowedError,
  TASK_NOT_CANCELLABLE: TaskNotCancellableError,
  IDEMPOTENCY_KEY_REUSED: IdempotencyKeyReusedError,
  LEASE_CONFLICT: ConflictError,
  CONFLICT: ConflictError,
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  UNSUPPORTED_MEDIA_TYPE: UnsupportedMediaTypeError,
  INTERNAL_ERROR: InternalServerError,
  SERVICE_UNAVAILABLE: ServiceUnavailableError,
  WORKER_UNAVAILABLE: WorkerUnavailableError,
  NETWORK_ERROR: NetworkError,
  WAIT_TIMEOUT: WaitTimeoutError,
};

/** A class for an unknown code, by HTTP status, so `instanceof` still means something. */
function classForStatus(status: number): ErrorClass {
  if (status === 404) return NotFoundError;
  if (status === 409) return ConflictError;
  if (status === 422) return ValidationError;
  if (status === 500) return InternalServerError;
  if (status === 503) return ServiceUnavailableError;
  return TaskManagerError;
}

/** `Retry-After` as seconds: a number of seconds or an HTTP date. */
export function parseRetryAfter(value: string | null | undefined, now = Date.now()): number | null {
  if (!value) return null;
  if (/^\s*\d+(\.\d+)?\s*$/.test(value)) return Number(value);
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

/**
 * The error for an API error body (HTTP answers and WebSocket `error` messages alike).
 * A body that is not the API's shape still becomes a `TaskManagerError` with the status.
 */
export function errorFromBody(status: number, body: unknown, headers?: { get(name: string): string | null }): TaskManagerError {
  const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  const e = (b.error && typeof b.error === 'object' ? b.error : null) as Record<string, unknown> | null;
  const requestId = typeof b.request_id === 'string' ? b.request_id : (headers?.get('x-request-id') ?? null);
  const timestamp = typeof b.timestamp === 'string' ? b.timestamp : null;
  if (!e || typeof e.code !== 'string') {
    return new (classForStatus(status))({
      code: 'INVALID_RESPONSE',
      message: `HTTP ${status}: the answer is not an API error body`,
      status,
      details: { body: typeof body === 'string' ? body.slice(0, 500) : body },
      requestId,
    });
  }
  const init: TaskManagerErrorInit = {
    code: e.code,
    message: typeof e.message === 'string' && e.message ? e.message : e.code,
    status,
    details: e.details && typeof e.details === 'object' ? (e.details as Record<string, unknown>) : {},
    requestId,
    timestamp,
  };
  if (e.code === 'RATE_LIMITED') {
    return new RateLimitedError({ ...init, retryAfter: parseRetryAfter(headers?.get('retry-after')) });
  }
  const cls = BY_CODE[e.code as TaskManagerErrorCode] ?? classForStatus(status);
  return new cls(init);
}

/**
 * The HTTP status of each API code, for errors that arrive without one (WebSocket `error`
 * messages). Typed against the server's table, so a changed status fails to compile.
 */
export const STATUS_BY_CODE: { readonly [K in ErrorCode]: (typeof ERROR_CODES)[K]['status'] } = {
  VALIDATION_ERROR: 422,
  MODEL_NOT_FOUND: 400,
  WORKER_UNAVAILABLE: 503,
  TASK_NOT_FOUND: 404,
  SERVICE_UNAVAILABLE: 503,
  INTERNAL_ERROR: 500,
  INVALID_REQUEST: 400,
  UNAUTHORIZED: 401,
  ROUTE_NOT_FOUND: 404,
  ARTIFACT_NOT_FOUND: 404,
  WORKER_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  TASK_NOT_CANCELLABLE: 409,
  LEASE_CONFLICT: 409,
  CONFLICT: 409,
  IDEMPOTENCY_KEY_REUSED: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  RATE_LIMITED: 429,
  CLIENT_TIMEOUT: 408,
  HEADERS_TOO_LARGE: 431,
};
