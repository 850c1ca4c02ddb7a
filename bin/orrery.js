#!/usr/bin/env node
// Entry point of the `orrery` command. Node.js runs the TypeScript sources itself (type
// stripping), and its compile cache keeps the stripped and compiled code, so later starts skip
// both. Node.js refuses to strip types under node_modules, so an installed package runs the copy
// that `npm pack` compiled into dist/ (docs/DESIGN.md §7).
import module from 'node:module';
import { requireSupportedNode } from './node-check.js';

requireSupportedNode('orrery');
module.enableCompileCache?.();
// The cache is written at exit, and a daemon killed with SIGKILL never exits: write what is
// loaded once it is up, so that its restart (proxy, runtime) starts warm.
setTimeout(() => module.flushCompileCache?.(), 1000).unref();
const installed = import.meta.url.includes('/node_modules/');
await import(installed ? '../dist/cli/main.js' : '../cli/main.ts');
