// node:http and node:https as their CommonJS modules. The ES module of node:http (`import http
// from 'node:http'`, or any named import from it) reads every export once when it is linked, and
// one of them, the `WebSocket` getter, loads the bundled undici: ~14 MiB of RSS in every daemon,
// none of which uses it (measured on Node 24.22: 4.8 MiB for the module, 13.6 MiB more for that
// getter). The CommonJS module keeps the getter lazy. Types come from `import type` as usual.
export const http = process.getBuiltinModule('node:http');
export const https = process.getBuiltinModule('node:https');
