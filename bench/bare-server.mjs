// The baseline for bench/create.mjs: bare Fastify (same version as the service), one POST
// route answering {"ok":true}, with Fastify's default JSON body parser and no logger.
// Usage: PORT=NNNN node bench/bare-server.mjs
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.post('/tasks', async (request, reply) => {
  reply.code(201);
  return { ok: true };
});

const port = Number(process.env.PORT ?? 8010);
await app.listen({ port, host: process.env.HOST ?? '127.0.0.1' });
for (const sig of ['SIGTERM', 'SIGINT']) process.once(sig, () => app.close().then(() => process.exit(0)));
