#!/usr/bin/env node
// Entry point of the `orrery` command. Node.js runs the TypeScript sources itself (type
// stripping); an installed package carries them compiled to dist/ instead, because Node.js does
// not strip types under node_modules (docs/DESIGN.md, "Platform").
import { existsSync } from 'node:fs';
import { requireSupportedNode } from './node-check.js';

requireSupportedNode('orrery');
const compiled = new URL('../dist/cli/main.js', import.meta.url);
await import(existsSync(compiled) ? compiled.href : '../cli/main.ts');
