package main

// The kube-controller-manager controllers without which the API behaves
// differently from a real cluster even when nothing runs Pods:
//   - namespace: `kubectl delete namespace` empties the namespace and removes
//     the "kubernetes" finalizer; without it the namespace stays Terminating
//     forever and its objects stay in etcd.
//   - garbagecollector: objects whose ownerReferences point at a deleted owner
//     are deleted (background and foreground cascading deletion); Orrery's
//     Replicas are owned by their Instance.
//   - clusterrole-aggregation: the rules of ClusterRoles labelled
//     aggregate-to-view/edit/admin are gathered into view, edit and admin
//     (deploy/rbac-users.yaml gives Orrery's kinds to those roles this way).
// They are started the way cmd/kube-controller-manager/app/core.go starts
// them, on the same client libraries, in this process.

import (
	"context"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/controller-manager/pkg/informerfactory"
	"k8s.io/kubernetes/pkg/controller/clusterroleaggregation"
	"k8s.io/kubernetes/pkg/controller/garbagecollector"
	namespacecontroller "k8s.io/kubernetes/pkg/controller/namespace"
)

// gcSyncPeriod is how often the garbage collector re-reads discovery to
// watch resources added since (CRDs installed after start). The
// controller-manager uses 30s; a local cluster whose CRDs are applied right
// after bring-up wants them covered sooner, and discovery on loopback is cheap.
const gcSyncPeriod = 5 * time.Second

func adminRESTConfig(server string, p pki) *rest.Config {
	return &rest.Config{
		Host: server,
		TLSClientConfig: rest.TLSClientConfig{
			CAFile:   p.caCert,
			CertFile: p.adminCert,
			KeyFile:  p.adminKey,
		},
		// The controller-manager raises these for the same two controllers
		// (core.go: namespace QPS*20, Burst*100); deletes are many and local.
		QPS:   200,
		Burst: 1000,
	}
}

func startControllers(ctx context.Context, cfg *rest.Config) error {
	withAgent := func(name string) *rest.Config {
		c := rest.CopyConfig(cfg)
		c.UserAgent = "orrery-controlplane/" + name
		return c
	}
	client, err := kubernetes.NewForConfig(withAgent("shared-informers"))
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	metadataClient, err := metadata.NewForConfig(withAgent("shared-informers"))
	if err != nil {
		return fmt.Errorf("metadata client: %w", err)
	}
	// A non-zero resync, like the controller-manager's (12-24h), lets the
	// namespace controller's 5-minute resync handler be honoured.
	sharedInformers := informers.NewSharedInformerFactory(client, 12*time.Hour)
	metadataInformers := metadatainformer.NewSharedInformerFactory(metadataClient, 12*time.Hour)
	informersStarted := make(chan struct{})

	nsClient, err := kubernetes.NewForConfig(withAgent("namespace-controller"))
	if err != nil {
		return fmt.Errorf("namespace controller client: %w", err)
	}
	nsMetadata, err := metadata.NewForConfig(withAgent("namespace-controller"))
	if err != nil {
		return fmt.Errorf("namespace controller metadata client: %w", err)
	}
	nsController := namespacecontroller.NewNamespaceController(
		ctx, nsClient, nsMetadata,
		nsClient.Discovery().ServerPreferredNamespacedResources,
		sharedInformers.Core().V1().Namespaces(),
		5*time.Minute, // NamespaceSyncPeriod default
		v1.FinalizerKubernetes,
	)

	gcClient, err := kubernetes.NewForConfig(withAgent("generic-garbage-collector"))
	if err != nil {
		return fmt.Errorf("garbage collector client: %w", err)
	}
	gcMetadata, err := metadata.NewForConfig(withAgent("generic-garbage-collector"))
	if err != nil {
		return fmt.Errorf("garbage collector metadata client: %w", err)
	}
	discovery := memory.NewMemCacheClient(gcClient.Discovery())
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(discovery)
	gc, err := garbagecollector.NewGarbageCollector(
		ctx, gcClient, gcMetadata, mapper,
		garbagecollector.DefaultIgnoredResources(),
		informerfactory.NewInformerFactory(sharedInformers, metadataInformers),
		informersStarted,
	)
	if err != nil {
		return fmt.Errorf("garbage collector: %w", err)
	}

	aggregationClient, err := kubernetes.NewForConfig(withAgent("clusterrole-aggregation-controller"))
	if err != nil {
		return fmt.Errorf("clusterrole aggregation client: %w", err)
	}
	aggregation := clusterroleaggregation.NewClusterRoleAggregation(
		sharedInformers.Rbac().V1().ClusterRoles(), aggregationClient.RbacV1(),
	)

	go nsController.Run(ctx, 10)       // ConcurrentNamespaceSyncs default
	go aggregation.Run(ctx, 5)         // as core.go starts it
	go gc.Run(ctx, 20, 30*time.Second) // ConcurrentGCSyncs default; initial cache-sync timeout as in core.go
	go gc.Sync(ctx, discovery, gcSyncPeriod)
	sharedInformers.Start(ctx.Done())
	metadataInformers.Start(ctx.Done())
	close(informersStarted)
	return nil
}
