package main

// kube-apiserver in-process, through the same cobra command the
// kube-apiserver binary runs (k8s.io/kubernetes/cmd/kube-apiserver/app), with
// flags chosen the way controller-runtime's envtest chooses them for a
// control plane without controller-manager, scheduler or kubelets.

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"github.com/spf13/cobra"
	"k8s.io/kubernetes/cmd/kube-apiserver/app"
)

// serviceCIDR is the ClusterIP range; its first address (10.0.0.1) is the
// "kubernetes" Service and is in the serving certificate.
const serviceCIDR = "10.0.0.0/24"

type apiserverOptions struct {
	port       int
	etcdURL    string
	pki        pki
	certDir    string
	verbosity  int
	advertise  net.IP
	extraFlags []string
}

func apiserverFlags(o apiserverOptions) []string {
	flags := []string{
		"--etcd-servers=" + o.etcdURL,
		"--secure-port=" + strconv.Itoa(o.port),
		"--cert-dir=" + o.certDir,
		"--tls-cert-file=" + o.pki.servingCert,
		"--tls-private-key-file=" + o.pki.servingKey,
		"--client-ca-file=" + o.pki.caCert,
		"--token-auth-file=" + o.pki.tokenFile,
		// A stable issuer (kubeadm's choice) keeps tokens valid when the port
		// changes between runs on the same data dir.
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + o.pki.saPublicKey,
		"--service-account-signing-key-file=" + o.pki.saPrivateKey,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--authorization-mode=Node,RBAC",
		"--allow-privileged=true",
		// Kubelets (of the real-node test) may write only their own Node and their pods' status.
		"--enable-admission-plugins=NodeRestriction",
		// No --tracing-config-file, so the spans go nowhere; with the gate on (its default since
		// 1.27) every request still passes otelhttp's middleware and every etcd call otelgrpc's
		// interceptors: ~4 % of the API server's CPU under a burst of writes.
		"--feature-gates=APIServerTracing=false",
		"--profiling=false",
		"--v=" + strconv.Itoa(o.verbosity),
	}
	if o.advertise == nil {
		flags = append(flags,
			// Loopback only; there is no insecure port since 1.20.
			"--bind-address=127.0.0.1",
			"--advertise-address=127.0.0.1",
			// The ServiceAccount admission plugin rejects Pods until the
			// controller-manager's serviceaccounts controller has created the
			// "default" ServiceAccount; there is no controller-manager here.
			// Every other default plugin works without one.
			"--disable-admission-plugins=ServiceAccount",
			// The "kubernetes" Service's Endpoints would point at the advertise
			// address, and Endpoints validation rejects loopback addresses, so the
			// lease reconciler would log an error every 10s. Nothing in-cluster
			// needs to reach this apiserver through a Service.
			"--endpoint-reconciler-type=none",
		)
	} else {
		// Serving nodes (the real-node test, in a network namespace of its own): every address of
		// the namespace, the advertised one as the "kubernetes" Service's endpoint (kept by the
		// lease reconciler), and pods get their ServiceAccount tokens from admission, whose
		// "default" accounts kube-controller-manager creates.
		flags = append(flags,
			"--bind-address=0.0.0.0",
			"--advertise-address="+o.advertise.String(),
			"--endpoint-reconciler-type=lease",
			// logs, exec, port-forward: by the node's address, not its host name, which no DNS
			// here resolves.
			"--kubelet-preferred-address-types=InternalIP",
			// kubelets take no anonymous requests: the apiserver comes to them as the admin
			// (system:masters), as kubeadm's apiserver-kubelet-client does.
			"--kubelet-client-certificate="+o.pki.adminCert,
			"--kubelet-client-key="+o.pki.adminKey,
		)
	}
	return append(flags, o.extraFlags...)
}

// newAPIServerCommand must be called before anything else installs signal
// handlers: NewAPIServerCommand calls genericapiserver.SetupSignalContext,
// whose context is cancelled on the first SIGTERM/SIGINT (graceful shutdown)
// and which exits the process on the second.
func newAPIServerCommand() *cobra.Command {
	return app.NewAPIServerCommand()
}

func runAPIServer(cmd *cobra.Command, o apiserverOptions) error {
	cmd.SetArgs(apiserverFlags(o))
	if err := cmd.Execute(); err != nil {
		return fmt.Errorf("kube-apiserver: %w", err)
	}
	return nil
}

func certDir(dataDir string) string { return filepath.Join(dataDir, "apiserver-certs") }
