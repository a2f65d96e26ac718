/**
 * The error-code table. A code keeps its HTTP status forever and is never reused.
 * The first six are the API reference's; the rest are ours.
 */
export const ERROR_CODES = {
  VALIDATION_ERROR: { status: 422, message: 'Request validation failed' },
  MODEL_NOT_FOUND: { status: 400, message: 'Specified model not available' },
  WORKER_UNAVAILABLE: { status: 503, message: 'No workers available for task' },
  TASK_NOT_FOUND: { status: 404, message: 'Requested task does not exist' },
  SERVICE_UNAVAILABLE: { status: 503, message: 'Service temporarily unavailable' },
  INTERNAL_ERROR: { status: 500, message: 'Unexpected internal error' },

  INVALID_REQUEST: { status: 400, message: 'The request could not be parsed' },
  UNAUTHORIZED: { status: 401, message: 'Missing or invalid credentials' },
  ROUTE_NOT_FOUND: { status: 404, message: 'No such endpoint' },
  ARTIFACT_NOT_FOUND: { status: 404, message: 'Requested artifact does not exist' },
  WORKER_NOT_FOUND: { status: 404, message: 'Worker is not registered' },
  METHOD_NOT_ALLOWED: { status: 405, message: 'Method not allowed on this endpoint' },
  TASK_NOT_CANCELLABLE: { status: 409, message: 'Task cannot be cancelled' },
  LEASE_CONFLICT: { status: 409, message: 'Lease is no longer held by this worker' },
  CONFLICT: { status: 409, message: 'Request conflicts with the current state' },
  IDEMPOTENCY_KEY_REUSED: { status: 409, message: 'Idempotency-Key was already used with a different request' },
  PAYLOAD_TOO_LARGE: { status: 413, message: 'Request body is too large' },
  UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'Unsupported content type' },
  RATE_LIMITED: { status: 429, message: 'Too many requests' },
  CLIENT_TIMEOUT: { status: 408, message: 'The request was not received in time' },
  HEADERS_TOO_LARGE: { status: 431, message: 'The request headers are too large' },
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface ErrorDetails {
  [key: string]: unknown;
}

export class AppError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: ErrorDetails;
  readonly headers?: Record<string, string>;

  constructor(
    code: ErrorCode,
    message?: string,
    opts: { details?: ErrorDetails; cause?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(message ?? ERROR_CODES[code].message, { cause: opts.cause });
    this.name = 'AppError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.details = opts.details;
    this.headers = opts.headers;
  }
}

/** The store could not be reached or written (disk full, file unwritable, database down). */
export class StoreUnavailableError extends AppError {
  constructor(message: string, cause?: unknown) {
    super('SERVICE_UNAVAILABLE', message, { cause });
    this.name = 'StoreUnavailableError';
  }
}

export const isAppError = (e: unknown): e is AppError => e instanceof AppError;
