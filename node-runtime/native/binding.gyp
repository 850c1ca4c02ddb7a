{
  "target_defaults": {
    "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-O2", "-fno-strict-aliasing"],
    "cflags!": ["-fno-exceptions"],
    "defines": ["_GNU_SOURCE"]
  },
  "targets": [
    {
      "target_name": "orrery_native",
      "sources": [
        "src/addon.c",
        "src/js_values.c",
        "src/js_work.c",
        "src/js_spawn.c",
        "src/js_watch.c",
        "src/js_netns.c",
        "src/spawn.c",
        "src/clone.c",
        "src/child.c",
        "src/net.c",
        "src/netns.c",
        "src/pidfd.c",
        "src/proc.c",
        "src/kernel_features.c",
        "src/trace.c",
        "src/bpf.c",
        "src/js_bpf.c"
      ]
    },
    {
      "target_name": "orrery-init",
      "type": "executable",
      "sources": ["src/init.c"],
      "include_dirs": ["src"],
      "cflags": ["-ffreestanding", "-fno-stack-protector", "-fno-pie"],
      "ldflags": ["-static", "-nostdlib", "-no-pie"]
    }
  ]
}
