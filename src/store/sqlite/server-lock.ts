import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';

export class DatabaseInUseError extends Error {
  constructor(readonly path: string) {
    super(
      `${path} is in use by another Task Manager server: one server per SQLite file (several would take each other's running tasks back as their own); for several nodes use PostgreSQL`,
    );
    this.name = 'DatabaseInUseError';
  }
}

/**
 * Holds an exclusive lock on `<path>.lock` while this server runs. The lock is SQLite's own
 * (a POSIX record lock on that file), so the operating system drops it when the process
 * ends, however it ends: a restart after a crash never finds a stale lock.
 */
export function lockDatabase(path: string): { release(): void } {
  mkdirSync(dirname(path), { recursive: true });
  const lock = new Database(`${path}.lock`);
  try {
    lock.pragma('busy_timeout = 0');
    // Nothing is ever written to it: no journal file beside it either.
    lock.pragma('journal_mode = MEMORY');
    lock.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    lock.close();
    if ((err as { code?: string }).code === 'SQLITE_BUSY') throw new DatabaseInUseError(path);
    throw err;
  }
  let held = true;
  return {
    release() {
      if (!held) return;
      held = false;
      lock.close();
    },
  };
}
