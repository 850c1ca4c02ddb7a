package main

// Embedded etcd (go.etcd.io/etcd/server/v3/embed), single member, reachable by
// the apiserver alone: its one client listener is a unix socket in the data
// dir, which is mode 0700, so only the control plane's own user can connect
// (the kernel checks the directory's search permission on connect(2)). There
// is no TCP listener: no peer listener (a single member never dials a peer),
// no metrics listener, and the JSON gateway (/v3/kv/... over HTTP) is off.

import (
	"fmt"
	"net/url"
	"os"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

type etcdOptions struct {
	dataDir string
	// socket is the path of the client socket; its directory must be private.
	socket string
	fsync  bool
}

// etcd's config requires host:port advertise URLs. They are published in the
// member list, which nothing here reads (the apiserver dials --etcd-servers,
// and never syncs endpoints), and no listener serves them.
var (
	unlistenedClientURL = url.URL{Scheme: "http", Host: "localhost:0"}
	unlistenedPeerURL   = url.URL{Scheme: "http", Host: "localhost:0"}
)

// maxSocketPath is what fits sockaddr_un.sun_path (108 bytes with its NUL); unix(7).
const maxSocketPath = 107

func startEtcd(o etcdOptions) (*embed.Etcd, string, error) {
	if len(o.socket) > maxSocketPath {
		return nil, "", fmt.Errorf("etcd's socket %s is %d bytes long, more than a unix socket address holds (%d): use a shorter --data-dir", o.socket, len(o.socket), maxSocketPath)
	}
	// etcd listens with unix.Listen, which fails on an existing file; a socket
	// left by a killed run is ours (the data dir is locked) and stale.
	if err := os.Remove(o.socket); err != nil && !os.IsNotExist(err) {
		return nil, "", fmt.Errorf("remove stale etcd socket %s: %w", o.socket, err)
	}
	// unix:///abs/path: etcd listens on Host+Path, clientv3 dials the same.
	clientURL := url.URL{Scheme: "unix", Path: o.socket}

	cfg := embed.NewConfig()
	cfg.Name = "orrery"
	cfg.Dir = o.dataDir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{unlistenedClientURL}
	cfg.ListenPeerUrls = nil
	// On a restart with an existing WAL the membership stored in raft wins
	// over InitialCluster (a data dir from before kept its old peer URL).
	cfg.AdvertisePeerUrls = []url.URL{unlistenedPeerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.EnableGRPCGateway = false
	// envtest runs etcd with --unsafe-no-fsync: the data is a disposable
	// local cluster, and fsync on every write dominates apply latency.
	cfg.UnsafeNoFsync = !o.fsync
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.LogOutputs = []string{"stderr"}
	// Keep history bounded like kube-apiserver's own compaction would.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "5m"

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("start embedded etcd in %s: %w", o.dataDir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, "", fmt.Errorf("embedded etcd failed while starting: %w", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, "", fmt.Errorf("embedded etcd not ready after 60s (data dir %s)", o.dataDir)
	}
	return e, "unix://" + o.socket, nil
}
