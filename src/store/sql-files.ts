import { readdirSync, readFileSync } from 'node:fs';

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** Numbered, append-only migrations: `NNN_name.sql`. */
export function loadMigrations(dir: URL): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d+_.+\.sql$/.test(f))
    .sort()
    .map((file) => ({
      version: Number.parseInt(file, 10),
      name: file.replace(/\.sql$/, ''),
      sql: readFileSync(new URL(file, dir), 'utf8'),
    }));
}

/** One runtime command per file; the file name is the command's name. */
export function loadCommands<K extends string>(dir: URL, names: readonly K[]): Record<K, string> {
  const out = {} as Record<K, string>;
  for (const name of names) out[name] = readFileSync(new URL(`${name}.sql`, dir), 'utf8');
  return out;
}
