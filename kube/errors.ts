/**
 * Typed API errors. The API server answers failures with a `Status` object
 * (https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/status/);
 * we keep its HTTP code and `reason` so callers can branch the way client-go's
 * `apierrors.IsNotFound` / `IsConflict` / ... do, without string matching.
 */

export interface KubeStatus {
  kind?: string;
  apiVersion?: string;
  status?: string;
  message?: string;
  reason?: string;
  code?: number;
  details?: {
    name?: string;
    group?: string;
    kind?: string;
    causes?: { reason?: string; message?: string; field?: string }[];
  };
}

export class KubeApiError extends Error {
  override readonly name = 'KubeApiError';
  /** HTTP status code (404, 409, 410, 422, ...). */
  readonly status: number;
  /** `Status.reason` (NotFound, AlreadyExists, Conflict, Expired, Gone, Invalid, ...), when the server sent one. */
  readonly reason: string | undefined;
  /** The decoded `Status` body, or the raw text when it was not JSON. */
  readonly body: KubeStatus | string | undefined;
  readonly method: string;
  readonly path: string;

  constructor(opts: {
    status: number;
    method: string;
    path: string;
    body?: KubeStatus | string | undefined;
    cause?: unknown;
  }) {
    const body = opts.body;
    const statusObj = typeof body === 'object' ? body : undefined;
    const detail =
      statusObj?.message ?? (typeof body === 'string' && body.length > 0 ? body.slice(0, 500) : 'no message');
    super(
      `${opts.method} ${opts.path} failed with HTTP ${opts.status}${statusObj?.reason ? ` (${statusObj.reason})` : ''}: ${detail}`,
      {
        cause: opts.cause,
      },
    );
    this.status = opts.status;
    this.reason = statusObj?.reason;
    this.body = body;
    this.method = opts.method;
    this.path = opts.path;
  }
}

function apiError(e: unknown): KubeApiError | undefined {
  return e instanceof KubeApiError ? e : undefined;
}

/** 404: the object (or its namespace, or the resource type) does not exist. */
export function isNotFound(e: unknown): boolean {
  return apiError(e)?.status === 404;
}

/** 409 with reason AlreadyExists: create of a name that is taken. */
export function isAlreadyExists(e: unknown): boolean {
  const err = apiError(e);
  return err?.status === 409 && err.reason === 'AlreadyExists';
}

/**
 * 409 optimistic-concurrency conflict (stale resourceVersion or failed precondition),
 * or a server-side apply field conflict. Mirrors client-go: reason Conflict, or a bare 409
 * that is not AlreadyExists.
 */
export function isConflict(e: unknown): boolean {
  const err = apiError(e);
  return err?.status === 409 && err.reason !== 'AlreadyExists';
}

/** 410 Gone / reason Expired: the resourceVersion or continue token is too old (compacted). */
export function isGone(e: unknown): boolean {
  const err = apiError(e);
  return err !== undefined && (err.status === 410 || err.reason === 'Expired' || err.reason === 'Gone');
}

/** 422: the object failed validation (schema, CEL rules); `body.details.causes` names the fields. */
export function isInvalid(e: unknown): boolean {
  return apiError(e)?.status === 422;
}

export function isForbidden(e: unknown): boolean {
  return apiError(e)?.status === 403;
}

export function isUnauthorized(e: unknown): boolean {
  return apiError(e)?.status === 401;
}

/** 429 (priority and fairness) and 5xx: worth retrying after a pause. */
export function isRetryable(e: unknown): boolean {
  const err = apiError(e);
  if (err === undefined) return true; // network errors: connection refused/reset
  return err.status === 429 || err.status >= 500;
}

/** The status code a `Status` object carries inside a watch ERROR event. */
export function errorFromWatchStatus(status: KubeStatus, method: string, path: string): KubeApiError {
  return new KubeApiError({ status: status.code ?? 500, method, path, body: status });
}
