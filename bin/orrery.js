#!/usr/bin/env node
// Entry point of the `orrery` command. Runs the compiled CLI when `npm run build` has produced
// dist/, and the TypeScript sources through tsx otherwise (a development checkout).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const compiled = fileURLToPath(new URL('../dist/cli/main.js', import.meta.url));
if (existsSync(compiled)) {
  await import(compiled);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
