import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, ERROR_CODES, isAppError, type ErrorCode, type ErrorDetails } from '../core/errors.js';
import { newRequestId } from '../core/ids.js';
import { isoTime } from '../core/iso-time.js';

export interface ErrorBody {
  error: { code: ErrorCode; message: string; details: ErrorDetails };
  timestamp: string;
  request_id: string;
}

export function errorBody(requestId: string, code: ErrorCode, message?: string, details?: ErrorDetails): ErrorBody {
  // `details` is always there, as in the reference's error format, even when empty.
  const error: ErrorBody['error'] = { code, message: message ?? ERROR_CODES[code].message, details: details ?? {} };
  return { error, timestamp: isoTime(Date.now()), request_id: requestId };
}

export function sendError(reply: FastifyReply, err: AppError): FastifyReply {
  if (err.headers) reply.headers(err.headers);
  return reply.code(err.status).send(errorBody(String(reply.request.id), err.code, err.message, err.details));
}

interface AjvError {
  instancePath: string;
  keyword: string;
  message?: string;
  params: Record<string, unknown>;
}

/** Turns an Ajv error into the field the caller should fix and why. */
function describeValidation(errors: AjvError[], context: string | undefined): { field: string; reason: string } {
  const e = errors[0];
  const base = e.instancePath.replace(/^\//, '').replace(/\//g, '.');
  const join = (k: string) => (base ? `${base}.${k}` : k);
  if (e.keyword === 'required') return { field: join(String(e.params.missingProperty)), reason: 'Field is required' };
  if (e.keyword === 'additionalProperties') {
    return { field: join(String(e.params.additionalProperty)), reason: 'Unknown field' };
  }
  if (e.keyword === 'enum') {
    return { field: base || String(context), reason: `Must be one of: ${(e.params.allowedValues as unknown[]).join(', ')}` };
  }
  return { field: base || String(context), reason: e.message ?? 'Invalid value' };
}

/** Path parameters longer than this are refused before routing (Fastify's `maxParamLength`). */
export const MAX_PARAM_LENGTH = 1024;

/** Maps Fastify's own errors (parsing, limits, validation) onto our codes. */
function toAppError(err: FastifyError): AppError {
  if (isAppError(err)) return err;
  const validation = (err as FastifyError & { validation?: AjvError[]; validationContext?: string }).validation;
  if (validation?.length) {
    const context = (err as { validationContext?: string }).validationContext;
    const { field, reason } = describeValidation(validation, context);
    const where = context === 'querystring' ? 'query parameter' : context === 'params' ? 'path parameter' : 'field';
    return new AppError('VALIDATION_ERROR', `Invalid ${where} ${field}: ${reason}`, { details: { field, reason } });
  }
  switch (err.code) {
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      // The parser also refuses valid JSON with keys that could poison prototypes, and does not say which it was.
      return new AppError('INVALID_REQUEST', 'Body is not valid JSON (or has a "__proto__" or "constructor.prototype" key, which is refused)', {
        details: { reason: err.message },
      });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new AppError('INVALID_REQUEST', 'Body is empty but Content-Type is application/json');
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new AppError('PAYLOAD_TOO_LARGE');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new AppError('UNSUPPORTED_MEDIA_TYPE', 'Send the body as application/json');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new AppError('INVALID_REQUEST', 'Content-Length does not match the body');
    case 'FST_ERR_BAD_URL':
      return new AppError('INVALID_REQUEST', 'The path is not valid: a percent sign must start an escape such as %2F', { details: { reason: 'Bad percent escape' } });
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return new AppError('INVALID_REQUEST', `A path parameter is longer than ${MAX_PARAM_LENGTH} characters`, { details: { reason: 'Path parameter too long' } });
  }
  if (err instanceof SyntaxError) return new AppError('INVALID_REQUEST', 'Body is not valid JSON', { details: { reason: err.message } });
  const status = err.statusCode ?? 500;
  if (status === 413) return new AppError('PAYLOAD_TOO_LARGE');
  if (status === 415) return new AppError('UNSUPPORTED_MEDIA_TYPE');
  if (status >= 400 && status < 500) return new AppError('INVALID_REQUEST', err.message);
  return new AppError('INTERNAL_ERROR', undefined, { cause: err });
}

/**
 * Fastify's `frameworkErrors`: errors met before routing (a malformed percent escape in the
 * path) get the API's error body, request id and all.
 */
export function frameworkError(err: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const appErr = toAppError(err);
  reply.header('x-request-id', String(reply.request.id));
  sendError(reply, appErr);
}

/** What Node's HTTP parser refused, by its error code: our status and code for it. */
function parserError(code: string | undefined): { status: number; code: ErrorCode; message: string } {
  if (code === 'HPE_HEADER_OVERFLOW') return { status: 431, code: 'HEADERS_TOO_LARGE', message: 'The request headers are too large' };
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return { status: 408, code: 'CLIENT_TIMEOUT', message: 'The request was not received in time' };
  return { status: 400, code: 'INVALID_REQUEST', message: 'The request is not valid HTTP' };
}

/**
 * Fastify's `clientErrorHandler`: a request Node's HTTP parser refused never reaches a route,
 * so its answer is written here, in the API's error format, and the connection is closed.
 */
export function clientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  // As Node's own handler: never write into a response already on its way on this socket.
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if (socket.writable && !inFlight?.headersSent) {
    const { status, code, message } = parserError(err.code);
    const requestId = newRequestId();
    const body = JSON.stringify(errorBody(requestId, code, message, err.code ? { reason: err.code } : {}));
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\n` +
        `X-Request-Id: ${requestId}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}

const STATUS_TEXT: Record<number, string> = { 400: 'Bad Request', 408: 'Request Timeout', 431: 'Request Header Fields Too Large' };

export function installErrorHandling(app: FastifyInstance, routes: () => Array<{ method: string; url: string }>): void {
  app.setErrorHandler((err: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const appErr = toAppError(err);
    if (appErr.status >= 500) {
      request.log.error({ err }, 'request failed');
    } else {
      request.log.debug({ err }, 'request rejected');
    }
    return sendError(reply, appErr);
  });

  app.setNotFoundHandler((request, reply) => {
    const path = request.url.split('?')[0];
    const allowed = routes()
      .filter((r) => routeMatches(r.url, path))
      .map((r) => r.method);
    if (allowed.length && !allowed.includes(request.method)) {
      const allow = [...new Set(allowed)].sort().join(', ');
      return sendError(
        reply,
        new AppError('METHOD_NOT_ALLOWED', `${request.method} is not allowed on ${path}; use ${allow}`, {
          details: { allowed: allow },
          headers: { allow },
        }),
      );
    }
    return sendError(reply, new AppError('ROUTE_NOT_FOUND', `No endpoint at ${request.method} ${path}`));
  });
}

function routeMatches(pattern: string, path: string): boolean {
  const re = new RegExp(`^${pattern.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:[A-Za-z_]+/g, '[^/]+').replace(/\*/g, '.*')}$`);
  return re.test(path);
}
