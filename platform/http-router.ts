/**
 * A small request router over node:http for the daemons' HTTP APIs: GET routes with `:name`
 * segments, middleware that may answer first, JSON answers, and errors that carry their status.
 *
 * Why not express: the runtime's API needs routing, a query string and JSON, and express 5 loads
 * ~70 modules for it (body parsers, content negotiation, mime-db's 200 KB table parsed at start...),
 * measured at ~6 MiB of a daemon's idle RSS (docs/BENCHMARKS.md, start-up and idle footprint).
 */

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

/** An error whose status (and headers) the router answers with; 500 for any other error. */
export class HttpError extends Error {
  readonly status: number;
  readonly headers: Record<string, string>;
  constructor(status: number, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.status = status;
    this.headers = headers;
  }
}

/** What a handler gets of the request: the raw one, its path, query and route parameters. */
export interface RouteRequest {
  readonly raw: IncomingMessage;
  readonly socket: Socket;
  readonly method: string;
  /** The path, without the query string, percent-encoding kept. */
  readonly path: string;
  readonly query: URLSearchParams;
  /** The `:name` segments of the route, percent-decoded. */
  readonly params: Readonly<Record<string, string>>;
  /** A request header (case-insensitive name), the first one when repeated. */
  header(name: string): string | undefined;
}

/** Answers the request (or throws an HttpError); a rejected promise is answered as a thrown error. */
export type Handler = (req: RouteRequest, res: ServerResponse) => void | Promise<void>;
/** Runs before the routes: returns true when it answered the request itself. */
export type Middleware = (req: RouteRequest, res: ServerResponse) => boolean;

/** Writes `body` as JSON with `status` (200) and extra headers. */
export function sendJson(
  res: ServerResponse,
  body: unknown,
  status = 200,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    ...headers,
    'Content-Type': 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(text),
  });
  res.end(text);
}

interface Route {
  segments: string[];
  handler: Handler;
}

/** Splits a path into its segments; a trailing slash does not count (`/a/` is `/a`). */
function segmentsOf(path: string): string[] {
  const parts = path.split('/').slice(1);
  if (parts.at(-1) === '') parts.pop();
  return parts;
}

/** The route's parameters when `path` matches it, else undefined. */
function match(route: Route, path: string[]): Record<string, string> | undefined {
  if (route.segments.length !== path.length) return undefined;
  const params: Record<string, string> = {};
  for (let i = 0; i < path.length; i++) {
    const want = route.segments[i] as string;
    const got = path[i] as string;
    if (want.startsWith(':')) {
      if (got === '') return undefined;
      try {
        params[want.slice(1)] = decodeURIComponent(got);
      } catch {
        return undefined; // a malformed escape matches no route
      }
    } else if (want !== got) {
      return undefined;
    }
  }
  return params;
}

export interface RouterOptions {
  /** Answers a request no route matched. */
  notFound: Handler;
  /** Called for an error of status ≥ 500 before it is answered (logging). */
  onServerError?: (err: Error, req: RouteRequest) => void;
}

/** GET (and HEAD) routes tried in order after the middleware; see the module's comment. */
export class Router {
  private readonly middleware: Middleware[] = [];
  private readonly routes: Route[] = [];
  private readonly options: RouterOptions;

  constructor(options: RouterOptions) {
    this.options = options;
  }

  use(middleware: Middleware): this {
    this.middleware.push(middleware);
    return this;
  }

  get(path: string, handler: Handler): this {
    this.routes.push({ segments: segmentsOf(path), handler });
    return this;
  }

  /** The `request` listener of an http(s).Server. */
  readonly listener = (raw: IncomingMessage, res: ServerResponse): void => {
    const target = raw.url ?? '/';
    const q = target.indexOf('?');
    const path = q === -1 ? target : target.slice(0, q);
    let params: Record<string, string> = {};
    const req: RouteRequest = {
      raw,
      socket: raw.socket,
      method: raw.method ?? 'GET',
      path,
      query: new URLSearchParams(q === -1 ? '' : target.slice(q + 1)),
      get params() {
        return params;
      },
      header: (name) => {
        const v = raw.headers[name.toLowerCase()];
        return Array.isArray(v) ? v[0] : v;
      },
    };
    const fail = (err: unknown) => this.answerError(err, req, res);
    try {
      for (const m of this.middleware) if (m(req, res)) return;
      let handler = this.options.notFound;
      if (req.method === 'GET' || req.method === 'HEAD') {
        const segments = segmentsOf(path);
        for (const route of this.routes) {
          const found = match(route, segments);
          if (found === undefined) continue;
          params = found;
          handler = route.handler;
          break;
        }
      }
      const done = handler(req, res);
      if (done instanceof Promise) done.catch(fail);
    } catch (err) {
      fail(err);
    }
  };

  private answerError(err: unknown, req: RouteRequest, res: ServerResponse): void {
    const e = err instanceof Error ? err : new Error(String(err));
    const status = e instanceof HttpError ? e.status : 500;
    if (status >= 500) this.options.onServerError?.(e, req);
    if (res.headersSent) {
      res.end();
      return;
    }
    sendJson(res, { error: e.message }, status, e instanceof HttpError ? e.headers : {});
  }
}
