import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import { buildApp, type AppOptions } from './app.js';

/** Starts the service and wires graceful shutdown: stop taking requests, finish or requeue work, close the store. */
export async function serve(config: Config, extra: Omit<AppOptions, 'config'> = {}): Promise<FastifyInstance> {
  const app = await buildApp({ config, ...extra });
  let closing = false;
  const shutdown = (signal: string) => {
    if (closing) return;
    closing = true;
    app.log.info({ signal }, 'shutting down');
    const hardStop = setTimeout(() => {
      app.log.error('shutdown took too long; exiting');
      process.exit(1);
    }, (config.shutdownGraceSeconds + 15) * 1000);
    hardStop.unref();
    app.close().then(
      () => process.exit(0),
      (err) => {
        app.log.error({ err }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  // Listeners stay registered for the whole shutdown: a library that finds no other listener
  // for a signal (signal-exit, loaded by node-llama-cpp) re-raises it, which would kill the
  // process before running work is handed back. A repeated signal changes nothing.
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  await app.listen({ port: config.port, host: config.host });
  return app;
}
