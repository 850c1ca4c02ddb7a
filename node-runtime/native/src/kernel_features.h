#ifndef ORRERY_FEATURES_H
#define ORRERY_FEATURES_H
struct orrery_features {
  int clone3, clone_into_cgroup, pidfd_info_exit, cgroup_kill;
  int kernel_major, kernel_minor;
};
void orrery_kernel_features(struct orrery_features *f);
#endif
