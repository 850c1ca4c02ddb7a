/* See js_bpf.h. Synchronous: each call is one bpf(2) system call of a few microseconds (an
 * attach or query opens the cgroup directory too). Failures return -errno (or {errno}) and
 * bpf.ts throws BpfError naming the step; wrong argument types throw here. */
#include "js_bpf.h"

#include <stdlib.h>

#include "bpf.h"

/* The first argc arguments, or NULL with an exception pending. */
static int args_of(napi_env env, napi_callback_info cbinfo, size_t want, napi_value *argv) {
  size_t argc = want;
  if (napi_get_cb_info(env, cbinfo, &argc, argv, NULL, NULL) != napi_ok) return -1;
  if (argc < want) {
    napi_throw_type_error(env, NULL, "too few arguments");
    return -1;
  }
  return 0;
}

static int buffer_of(napi_env env, napi_value v, void **data, size_t *len) {
  bool is;
  if (napi_is_buffer(env, v, &is) != napi_ok || !is) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return -1;
  }
  return napi_get_buffer_info(env, v, data, len) == napi_ok ? 0 : -1;
}

static int attach_type_of(napi_env env, napi_value v, int *type) {
  char *name = js_string(env, v);
  *type = name ? orrery_bpf_attach_type(name) : -1;
  free(name);
  if (*type < 0) {
    napi_throw_type_error(env, NULL, "attach type must be connect4, connect6, getpeername4, getpeername6, bind4 or bind6");
    return -1;
  }
  return 0;
}

/* bpfObjGet(path): fd or -errno */
static napi_value api_obj_get(napi_env env, napi_callback_info cbinfo) {
  napi_value argv[1];
  if (args_of(env, cbinfo, 1, argv)) return NULL;
  char *path = js_string(env, argv[0]);
  if (!path) return napi_throw_type_error(env, NULL, "path must be a string"), NULL;
  int rc = orrery_bpf_obj_get(path);
  free(path);
  return js_int(env, rc);
}

/* bpfMapUpdate(fd, key, value) / bpfMapLookup(fd, key, valueOut) / bpfMapDelete(fd, key): 0 or -errno.
 * The buffers' sizes are the map's (bpf.ts checks them against bpfMapInfo once). */
static napi_value map_elem(napi_env env, napi_callback_info cbinfo, int op) {
  napi_value argv[3];
  int32_t fd;
  void *key, *value = NULL;
  size_t klen, vlen;
  if (args_of(env, cbinfo, op == 'd' ? 2 : 3, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  if (buffer_of(env, argv[1], &key, &klen)) return NULL;
  if (op != 'd' && buffer_of(env, argv[2], &value, &vlen)) return NULL;
  int rc = op == 'u'   ? orrery_bpf_map_update(fd, key, value)
           : op == 'l' ? orrery_bpf_map_lookup(fd, key, value)
                       : orrery_bpf_map_delete(fd, key);
  return js_int(env, rc);
fail:
  return NULL;
}

static napi_value api_map_update(napi_env env, napi_callback_info cbinfo) { return map_elem(env, cbinfo, 'u'); }
static napi_value api_map_lookup(napi_env env, napi_callback_info cbinfo) { return map_elem(env, cbinfo, 'l'); }
static napi_value api_map_delete(napi_env env, napi_callback_info cbinfo) { return map_elem(env, cbinfo, 'd'); }

/* bpfMapNextKey(fd, key | null, nextKeyOut): 0 or -errno (-ENOENT after the last key) */
static napi_value api_map_next_key(napi_env env, napi_callback_info cbinfo) {
  napi_value argv[3];
  int32_t fd;
  void *key = NULL, *next;
  size_t klen, nlen;
  napi_valuetype t;
  if (args_of(env, cbinfo, 3, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_typeof(env, argv[1], &t));
  if (t != napi_null && buffer_of(env, argv[1], &key, &klen)) return NULL;
  if (buffer_of(env, argv[2], &next, &nlen)) return NULL;
  return js_int(env, orrery_bpf_map_next_key(fd, key, next));
fail:
  return NULL;
}

/* bpfProgAttach(cgroupDir, progFd, type) / bpfProgDetach(...): 0 or -errno */
static napi_value attach(napi_env env, napi_callback_info cbinfo, int detach) {
  napi_value argv[3];
  int32_t fd;
  int type;
  if (args_of(env, cbinfo, 3, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[1], &fd));
  if (attach_type_of(env, argv[2], &type)) return NULL;
  char *dir = js_string(env, argv[0]);
  if (!dir) return napi_throw_type_error(env, NULL, "cgroup directory must be a string"), NULL;
  int rc = detach ? orrery_bpf_prog_detach(dir, fd, type) : orrery_bpf_prog_attach(dir, fd, type);
  free(dir);
  return js_int(env, rc);
fail:
  return NULL;
}

static napi_value api_prog_attach(napi_env env, napi_callback_info cbinfo) { return attach(env, cbinfo, 0); }
static napi_value api_prog_detach(napi_env env, napi_callback_info cbinfo) { return attach(env, cbinfo, 1); }

/* bpfProgQuery(cgroupDir, type): number[] of program ids, or -errno */
static napi_value api_prog_query(napi_env env, napi_callback_info cbinfo) {
  napi_value argv[2], out = NULL;
  uint32_t ids[64];
  int type;
  if (args_of(env, cbinfo, 2, argv)) return NULL;
  if (attach_type_of(env, argv[1], &type)) return NULL;
  char *dir = js_string(env, argv[0]);
  if (!dir) return napi_throw_type_error(env, NULL, "cgroup directory must be a string"), NULL;
  int n = orrery_bpf_prog_query(dir, type, ids, sizeof ids / sizeof *ids);
  free(dir);
  if (n < 0) return js_int(env, n);
  CHECK(napi_create_array_with_length(env, (size_t)n, &out));
  for (int i = 0; i < n; i++) CHECK(napi_set_element(env, out, (uint32_t)i, js_int(env, ids[i])));
fail:
  return out;
}

static napi_status set_num(napi_env env, napi_value obj, const char *name, double n) {
  napi_value v;
  napi_status s = napi_create_double(env, n, &v);
  return s == napi_ok ? napi_set_named_property(env, obj, name, v) : s;
}

/* bpfProgInfo(fd): {id, name, runTimeNs, runCnt} or -errno (counters as doubles: exact below 2^53) */
static napi_value api_prog_info(napi_env env, napi_callback_info cbinfo) {
  napi_value argv[1], out = NULL;
  int32_t fd;
  struct orrery_bpf_prog_info info;
  if (args_of(env, cbinfo, 1, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  int rc = orrery_bpf_prog_info(fd, &info);
  if (rc < 0) return js_int(env, rc);
  CHECK(napi_create_object(env, &out));
  CHECK(set_num(env, out, "id", info.id));
  CHECK(napi_set_named_property(env, out, "name", js_string_or_null(env, info.name)));
  CHECK(set_num(env, out, "runTimeNs", (double)info.run_time_ns));
  CHECK(set_num(env, out, "runCnt", (double)info.run_cnt));
fail:
  return out;
}

/* bpfMapInfo(fd): {id, type, keySize, valueSize, maxEntries} or -errno */
static napi_value api_map_info(napi_env env, napi_callback_info cbinfo) {
  napi_value argv[1], out = NULL;
  int32_t fd;
  struct orrery_bpf_map_info info;
  if (args_of(env, cbinfo, 1, argv)) return NULL;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  int rc = orrery_bpf_map_info(fd, &info);
  if (rc < 0) return js_int(env, rc);
  CHECK(napi_create_object(env, &out));
  CHECK(set_num(env, out, "id", info.id));
  CHECK(set_num(env, out, "type", info.type));
  CHECK(set_num(env, out, "keySize", info.key_size));
  CHECK(set_num(env, out, "valueSize", info.value_size));
  CHECK(set_num(env, out, "maxEntries", info.max_entries));
fail:
  return out;
}

/* bpfProgGetFdById(id): fd or -errno (-ENOENT: no such program, or freed) */
static napi_value api_prog_get_fd_by_id(napi_env env, napi_callback_info cbinfo) {
  napi_value argv[1];
  uint32_t id;
  if (args_of(env, cbinfo, 1, argv)) return NULL;
  CHECK(napi_get_value_uint32(env, argv[0], &id));
  return js_int(env, orrery_bpf_prog_get_fd_by_id(id));
fail:
  return NULL;
}

/* bpfEnableStats(): fd or -errno; run time is counted until it is closed */
static napi_value api_enable_stats(napi_env env, napi_callback_info cbinfo) {
  (void)cbinfo;
  return js_int(env, orrery_bpf_enable_stats());
}

napi_status js_bpf_define(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"bpfObjGet", NULL, api_obj_get, NULL, NULL, NULL, napi_default, NULL},
      {"bpfMapUpdate", NULL, api_map_update, NULL, NULL, NULL, napi_default, NULL},
      {"bpfMapLookup", NULL, api_map_lookup, NULL, NULL, NULL, napi_default, NULL},
      {"bpfMapDelete", NULL, api_map_delete, NULL, NULL, NULL, napi_default, NULL},
      {"bpfMapNextKey", NULL, api_map_next_key, NULL, NULL, NULL, napi_default, NULL},
      {"bpfProgAttach", NULL, api_prog_attach, NULL, NULL, NULL, napi_default, NULL},
      {"bpfProgDetach", NULL, api_prog_detach, NULL, NULL, NULL, napi_default, NULL},
      {"bpfProgQuery", NULL, api_prog_query, NULL, NULL, NULL, napi_default, NULL},
      {"bpfProgInfo", NULL, api_prog_info, NULL, NULL, NULL, napi_default, NULL},
      {"bpfMapInfo", NULL, api_map_info, NULL, NULL, NULL, napi_default, NULL},
      {"bpfProgGetFdById", NULL, api_prog_get_fd_by_id, NULL, NULL, NULL, napi_default, NULL},
      {"bpfEnableStats", NULL, api_enable_stats, NULL, NULL, NULL, napi_default, NULL},
  };
  return napi_define_properties(env, exports, sizeof props / sizeof *props, props);
}
