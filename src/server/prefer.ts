import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * `Prefer: wait=N` (RFC 7240): how long the client is willing to wait for a final state,
 * capped by the server's limit. Returns milliseconds, or null when not asked.
 */
export function preferWaitMs(request: FastifyRequest, reply: FastifyReply, maxSeconds: number): number | null {
  const header = request.headers.prefer;
  if (!header) return null;
  const value = Array.isArray(header) ? header.join(',') : header;
  const m = /(?:^|[,;\s])wait\s*=\s*"?(\d+(?:\.\d+)?)"?/i.exec(value);
  if (!m) return null;
  const seconds = Math.min(Number(m[1]), maxSeconds);
  reply.header('preference-applied', `wait=${seconds}`);
  return seconds * 1000;
}
