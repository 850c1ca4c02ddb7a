#!/usr/bin/env node
// Entry point of the `orrery` command. Runs the TypeScript sources through tsx's loader (a
// runtime dependency): the CLI reads files that live beside its sources (CRD manifests, the
// control plane's Go sources, the native addon's build), so it always runs from the source tree.
// `npm run build` type-checks and emits dist/ for inspection; nothing runs from there.
const { register } = await import('tsx/esm/api');
register();
await import('../cli/main.ts');
