/* See js_work.h. */
#include "js_work.h"

#include <stdio.h>

napi_value js_queue_work(napi_env env, const char *what, const char *name, napi_async_execute_callback execute,
                         napi_async_complete_callback complete, void *data, napi_async_work *work,
                         napi_deferred *deferred) {
  napi_value promise = NULL, resource_name;
  char message[64];
  if (napi_create_promise(env, deferred, &promise) != napi_ok ||
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &resource_name) != napi_ok ||
      napi_create_async_work(env, NULL, resource_name, execute, complete, data, work) != napi_ok) {
    snprintf(message, sizeof message, "%s: cannot create the work", what);
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  if (napi_queue_async_work(env, *work) != napi_ok) {
    napi_delete_async_work(env, *work);
    snprintf(message, sizeof message, "%s: cannot queue the work", what);
    napi_throw_error(env, NULL, message);
    return NULL;
  }
  return promise;
}

void js_reject(napi_env env, napi_deferred deferred, const char *message) {
  napi_value err = NULL;
  napi_create_string_utf8(env, message, NAPI_AUTO_LENGTH, &err);
  napi_reject_deferred(env, deferred, err);
}
