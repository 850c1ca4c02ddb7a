/* The addon's per-env instance data (napi_set_instance_data in addon.c): one per addon instance,
 * the main thread's and each worker's. */
#ifndef ORRERY_ADDON_H
#define ORRERY_ADDON_H

struct watch;

struct addon_state {
  struct watch *watches; /* js_watch.c: the active exit watches */
  int next_id;
};

#endif
