package main

// Embedded etcd (go.etcd.io/etcd/server/v3/embed), single member, loopback
// only, plain HTTP like envtest's etcd: nothing but this process can reach it.

import (
	"fmt"
	"net/url"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

type etcdOptions struct {
	dataDir    string
	clientPort int
	peerPort   int
	fsync      bool
}

func startEtcd(o etcdOptions) (*embed.Etcd, string, error) {
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", o.clientPort)}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", o.peerPort)}

	cfg := embed.NewConfig()
	cfg.Name = "orrery"
	cfg.Dir = o.dataDir
	cfg.ListenClientUrls = []url.URL{clientURL}
	cfg.AdvertiseClientUrls = []url.URL{clientURL}
	// A single member never dials its peer URL. On a restart with an existing
	// WAL the membership stored in raft wins over InitialCluster, so a new
	// free peer port each run is harmless.
	cfg.ListenPeerUrls = []url.URL{peerURL}
	cfg.AdvertisePeerUrls = []url.URL{peerURL}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
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
	return e, clientURL.String(), nil
}
