/* See js_values.h. */
#include "js_values.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void js_throw_last_error(napi_env env, const char *what) {
  const napi_extended_error_info *info = NULL;
  napi_get_last_error_info(env, &info);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (!pending) napi_throw_error(env, NULL, info && info->error_message ? info->error_message : what);
}

char *js_string(napi_env env, napi_value v) {
  size_t len = 0;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  if (napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok) {
    free(s);
    return NULL;
  }
  if (strlen(s) != len) { /* an embedded NUL would silently truncate the path or argument */
    free(s);
    return NULL;
  }
  return s;
}

int js_opt_string_prop(napi_env env, napi_value obj, const char *name, char **out) {
  *out = NULL;
  napi_value v;
  napi_valuetype t;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return -1;
  if (napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_undefined || t == napi_null) return 0;
  if (t != napi_string || !(*out = js_string(env, v))) {
    napi_throw_type_error(env, NULL, name);
    return -1;
  }
  return 0;
}

void js_free_strv(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

int js_string_array_prop(napi_env env, napi_value obj, const char *name, char ***out, int *count) {
  *out = NULL;
  napi_value arr;
  bool is_array = false;
  uint32_t n = 0;
  if (napi_get_named_property(env, obj, name, &arr) != napi_ok) return -1;
  if (napi_is_array(env, arr, &is_array) != napi_ok || !is_array || napi_get_array_length(env, arr, &n) != napi_ok) {
    napi_throw_type_error(env, NULL, name);
    return -1;
  }
  char **v = calloc((size_t)n + 1, sizeof *v);
  if (!v) return -1;
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    if (napi_get_element(env, arr, i, &e) != napi_ok || !(v[i] = js_string(env, e))) {
      js_free_strv(v);
      napi_throw_type_error(env, NULL, name);
      return -1;
    }
  }
  *out = v;
  if (count) *count = (int)n;
  return 0;
}

int js_opt_int_prop(napi_env env, napi_value obj, const char *name, int *has, int64_t *out) {
  *has = 0;
  napi_value v;
  napi_valuetype t;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok || napi_typeof(env, v, &t) != napi_ok) return -1;
  if (t == napi_undefined || t == napi_null) return 0;
  if (t != napi_number && t != napi_boolean) {
    napi_throw_type_error(env, NULL, name);
    return -1;
  }
  if (t == napi_boolean) {
    bool b;
    napi_get_value_bool(env, v, &b);
    *out = b;
  } else if (napi_get_value_int64(env, v, out) != napi_ok) {
    return -1;
  }
  *has = 1;
  return 0;
}

napi_value js_int(napi_env env, int64_t n) {
  napi_value v;
  napi_create_int64(env, n, &v);
  return v;
}

napi_value js_bool(napi_env env, int b) {
  napi_value v;
  napi_get_boolean(env, b != 0, &v);
  return v;
}

napi_value js_string_or_null(napi_env env, const char *s) {
  napi_value v;
  if (s) napi_create_string_utf8(env, s, NAPI_AUTO_LENGTH, &v);
  else napi_get_null(env, &v);
  return v;
}

napi_value js_rc(napi_env env, int rc) { return js_int(env, rc < 0 ? -errno : rc); }

napi_status js_set_failure(napi_env env, napi_value obj, int err, const char *step) {
  napi_status s = napi_set_named_property(env, obj, "errno", js_int(env, err));
  if (s == napi_ok) s = napi_set_named_property(env, obj, "step", js_string_or_null(env, step));
  return s;
}
