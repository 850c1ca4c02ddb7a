/* The kernel fast path's bpf(2) calls as exported functions (node-runtime/native/bpf.ts). */
#ifndef ORRERY_JS_BPF_H
#define ORRERY_JS_BPF_H

#include "js_values.h"

/* Adds bpfObjGet, bpfMapUpdate, ... to the module's exports. */
napi_status js_bpf_define(napi_env env, napi_value exports);

#endif
