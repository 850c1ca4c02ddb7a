/* Between JS values and C for addon.c and the js_*.c files: strings and numbers out of arguments
 * and request objects (a TypeError naming the field when one has the wrong type), numbers,
 * strings and the {errno, step} failure form back, and CHECK around N-API calls. Every file that
 * uses N-API includes node_api.h through here, so all see the same NAPI_VERSION. */
#ifndef ORRERY_JS_VALUES_H
#define ORRERY_JS_VALUES_H

#define NAPI_VERSION 8
#include <node_api.h>
#include <stdint.h>

/* On failure throw (unless an exception is pending) and goto fail. The message is the call's text,
 * e.g. "napi_get_value_int32(env, arg, &fd)" for a non-number: napi_is_exception_pending clears
 * the error info that js_throw_last_error reads first. */
#define CHECK(call)                    \
  do {                                 \
    if ((call) != napi_ok) {           \
      js_throw_last_error(env, #call); \
      goto fail;                       \
    }                                  \
  } while (0)

/* Throw the last N-API call's error message, or `what` without one, unless an exception is pending. */
void js_throw_last_error(napi_env env, const char *what);

/* A malloc'd copy of a JS string; NULL if v is not one or holds a NUL (it would silently cut a
 * path or an argument short). */
char *js_string(napi_env env, napi_value v);

/* Properties of a request object; -1 with a pending exception (a TypeError naming `name`). */
int js_opt_string_prop(napi_env env, napi_value obj, const char *name, char **out); /* *out NULL if absent */
int js_string_array_prop(napi_env env, napi_value obj, const char *name, char ***out, int *count);
int js_opt_int_prop(napi_env env, napi_value obj, const char *name, int *has, int64_t *out); /* booleans as 0/1 */

/* Frees a NULL-terminated array of strings (js_string_array_prop's); NULL is fine. */
void js_free_strv(char **v);

napi_value js_int(napi_env env, int64_t n);
napi_value js_bool(napi_env env, int b);
napi_value js_string_or_null(napi_env env, const char *s);

/* The small calls' result: rc (0 or an fd) or, when rc < 0, -errno (index.ts throws SpawnError). */
napi_value js_rc(napi_env env, int rc);

/* A kernel failure as the addon reports it, {errno, step} (index.ts turns it into SpawnError);
 * the first failing status. */
napi_status js_set_failure(napi_env env, napi_value obj, int err, const char *step);

#endif
