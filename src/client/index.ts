/**
 * The Task Manager SDK: `import { TaskManagerClient } from 'task-manager/client'`.
 *
 * Runs in Node 20+ and browsers: it needs only `fetch` (and a WebSocket for live waits —
 * the global one, or the `ws` package on Node 20, loaded on demand). Nothing of the server is
 * loaded: the types come from its schemas as type-only imports.
 */
export {
  TaskManagerClient,
  TaskPages,
  type CreateTaskOptions,
  type FetchLike,
  type GetTaskOptions,
  type IterateTasksOptions,
  type OwnedSubscription,
  type StreamOptions,
  type TaskManagerClientOptions,
  type WaitForTaskOptions,
} from './client.js';
export { TaskEventsSocket, type FilterSubscription, type TaskEventListener, type TaskSubscription } from './events-socket.js';
export {
  ConflictError,
  errorFromBody,
  IdempotencyKeyReusedError,
  InternalServerError,
  InvalidRequestError,
  MethodNotAllowedError,
  ModelNotFoundError,
  NetworkError,
  NotFoundError,
  PayloadTooLargeError,
  RateLimitedError,
  ServiceUnavailableError,
  TaskManagerError,
  TaskNotCancellableError,
  TaskNotFoundError,
  UnauthorizedError,
  UnsupportedMediaTypeError,
  ValidationError,
  WaitTimeoutError,
  WorkerUnavailableError,
  type ClientErrorCode,
  type TaskManagerErrorCode,
} from './errors.js';
export { parseSse, type SseMessage } from './sse.js';
export * from './types.js';
export type { WebSocketConstructor, WebSocketLike } from './util.js';
