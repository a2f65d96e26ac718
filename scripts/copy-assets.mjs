// Copies non-TypeScript assets (SQL migrations and commands) next to the compiled code.
import { cpSync, existsSync } from 'node:fs';

const dirs = ['store/sqlite/migrations', 'store/sqlite/commands', 'store/postgres/migrations', 'store/postgres/commands'];
for (const dir of dirs) {
  if (existsSync(`src/${dir}`)) cpSync(`src/${dir}`, `dist/${dir}`, { recursive: true });
}
