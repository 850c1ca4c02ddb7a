// Command orrery-controlplane runs a local Kubernetes control plane: the real
// kube-apiserver (k8s.io/kubernetes) in-process over an embedded etcd, on
// loopback, with a throwaway PKI. It prints one JSON line on stdout when the
// apiserver is ready and its kubeconfig is written, and shuts down cleanly
// (apiserver, then etcd) on SIGTERM/SIGINT or when its parent dies.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/component-base/version"
)

type options struct {
	dataDir        string
	port           int
	kubeconfig     string
	etcdFsync      bool
	verbosity      int
	exitWithParent bool
	controllers    bool
	apiserverFlags stringList
	// advertiseAddress is the flag, advertise the parsed address (nil: loopback only).
	advertiseAddress string
	advertise        net.IP
}

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, " ") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// readyLine is the single line written to stdout; everything else (klog,
// etcd's zap logger) goes to stderr.
type readyLine struct {
	Ready      bool   `json:"ready"`
	Server     string `json:"server"`
	Kubeconfig string `json:"kubeconfig"`
	DataDir    string `json:"dataDir"`
	PID        int    `json:"pid"`
	Version    string `json:"version"`
	BringUpMs  int64  `json:"bringUpMs"`
}

func parseOptions(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("orrery-controlplane", flag.ContinueOnError)
	fs.StringVar(&o.dataDir, "data-dir", "", "directory for etcd data, certificates and the kubeconfig (required; reused on restart)")
	fs.IntVar(&o.port, "port", 0, "secure port of kube-apiserver on 127.0.0.1 (0 picks a free port)")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "where to write the admin kubeconfig (default DATA_DIR/kubeconfig)")
	fs.BoolVar(&o.etcdFsync, "etcd-fsync", false, "fsync etcd writes (off by default, like envtest's --unsafe-no-fsync)")
	fs.IntVar(&o.verbosity, "v", 0, "klog verbosity of kube-apiserver (logs go to stderr)")
	fs.BoolVar(&o.exitWithParent, "exit-with-parent", true, "shut down when the parent process dies")
	fs.BoolVar(&o.controllers, "controllers", true, "run the namespace and garbage-collector controllers in-process (namespace deletion, ownerReference cascading)")
	fs.StringVar(&o.advertiseAddress, "advertise-address", "", "serve nodes: listen on every address of this network namespace and advertise this one as the \"kubernetes\" Service's endpoint, with ServiceAccount admission on (kube-controller-manager is then expected to run)")
	fs.Var(&o.apiserverFlags, "apiserver-flag", "extra kube-apiserver flag, e.g. --apiserver-flag=--audit-log-path=/tmp/a (repeatable)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q: all options are flags", fs.Args())
	}
	if o.dataDir == "" {
		return o, errors.New("--data-dir is required: a directory for etcd data, certificates and the kubeconfig")
	}
	if o.port < 0 || o.port > 65535 {
		return o, fmt.Errorf("--port must be 0 (pick a free port) or 1-65535, got %d", o.port)
	}
	if o.advertiseAddress != "" {
		ip := net.ParseIP(o.advertiseAddress)
		if ip == nil || ip.IsLoopback() || ip.IsUnspecified() {
			return o, fmt.Errorf("--advertise-address must be an IP address that is not loopback or unspecified (Endpoints refuse those), got %q", o.advertiseAddress)
		}
		o.advertise = ip
	}
	abs, err := filepath.Abs(o.dataDir)
	if err != nil {
		return o, fmt.Errorf("--data-dir %q: %w", o.dataDir, err)
	}
	o.dataDir = abs
	if o.kubeconfig == "" {
		o.kubeconfig = filepath.Join(o.dataDir, "kubeconfig")
	} else if o.kubeconfig, err = filepath.Abs(o.kubeconfig); err != nil {
		return o, fmt.Errorf("--kubeconfig: %w", err)
	}
	return o, nil
}

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	start := time.Now()
	o, err := parseOptions(args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(os.Stderr, "orrery-controlplane:", err)
		return 2
	}
	if o.exitWithParent {
		exitWithParent()
	}
	// GOGC=off with a 1 GiB soft limit once serving, collected when idle,
	// unless GOGC or GOMEMLIMIT is set: memory.go.
	memory := setMemoryPolicy(o.verbosity)
	fmt.Fprintln(os.Stderr, "orrery-controlplane:", memory.describe)

	// Must come first: it installs the SIGTERM/SIGINT handler that drives
	// the apiserver's graceful shutdown. Our own Notify gets the same signal.
	cmd := newAPIServerCommand()
	stop := make(chan os.Signal, 2)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	fail := func(step string, err error) int {
		fmt.Fprintf(os.Stderr, "orrery-controlplane: %s: %v\n", step, err)
		return 1
	}

	// The data dir holds the CA key, the admin token and etcd's socket and
	// data: its owner's only, also when it was made looser before.
	if err := privateDir(o.dataDir); err != nil {
		return fail("data dir", err)
	}
	lock, err := lockDataDir(o.dataDir)
	if err != nil {
		return fail("data dir", err)
	}
	defer lock.Close() // keeps the lock (and the *os.File) alive until run returns
	// A kubeconfig left by an earlier run names a port that may be gone;
	// whoever waits for the file must only see the one for this run.
	if err := os.Remove(o.kubeconfig); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fail("remove stale kubeconfig", err)
	}
	certs := newPKI(filepath.Join(o.dataDir, "pki"))
	certs.advertise = o.advertise
	if err := certs.ensure(); err != nil {
		return fail("certificates", err)
	}
	adminToken, err := certs.ensureAdminToken()
	if err != nil {
		return fail("admin token", err)
	}

	if o.port == 0 {
		ports, err := freePorts(1)
		if err != nil {
			return fail("pick a free port", err)
		}
		o.port = ports[0]
	}
	etcd, etcdURL, err := startEtcd(etcdOptions{
		dataDir: filepath.Join(o.dataDir, "etcd"),
		socket:  filepath.Join(o.dataDir, "etcd.sock"),
		fsync:   o.etcdFsync,
	})
	if err != nil {
		return fail("etcd", err)
	}
	closeEtcd := func() {
		etcd.Close()
		<-etcd.Server.StopNotify()
	}
	select {
	case <-stop:
		closeEtcd()
		return 0
	default:
	}

	server := fmt.Sprintf("https://127.0.0.1:%d", o.port)
	apiserverDone := make(chan error, 1)
	go func() {
		apiserverDone <- runAPIServer(cmd, apiserverOptions{
			port:       o.port,
			etcdURL:    etcdURL,
			pki:        certs,
			certDir:    certDir(o.dataDir),
			verbosity:  o.verbosity,
			advertise:  o.advertise,
			extraFlags: o.apiserverFlags,
		})
	}()

	readyCtx, cancelReady := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancelReady()
	controllersCtx, stopControllers := context.WithCancel(context.Background())
	defer stopControllers()
	readyDone := make(chan error, 1)
	go func() {
		client, err := adminHTTPClient(certs)
		if err == nil {
			err = waitReady(readyCtx, client, server)
		}
		if err == nil && o.controllers {
			err = startControllers(controllersCtx, adminRESTConfig(server, certs))
		}
		if err == nil {
			err = writeKubeconfig(o.kubeconfig, server, certs, adminToken)
		}
		if err == nil {
			err = json.NewEncoder(os.Stdout).Encode(readyLine{
				Ready: true, Server: server, Kubeconfig: o.kubeconfig, DataDir: o.dataDir,
				PID: os.Getpid(), Version: version.Get().GitVersion, BringUpMs: time.Since(start).Milliseconds(),
			})
		}
		if err == nil {
			memory.serving(controllersCtx.Done())
		}
		readyDone <- err
	}()

	for {
		select {
		case err := <-readyDone:
			if err != nil {
				cancelReady()
				// The apiserver keeps its own signal context; SIGTERM to
				// ourselves is the one way to make it shut down gracefully.
				_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
				waitAPIServer(apiserverDone)
				closeEtcd()
				return fail("waiting for readiness", err)
			}
			readyDone = nil
		case err := <-apiserverDone:
			// The apiserver returned without being asked to: a startup error
			// (port taken, bad flag) or a fatal runtime one.
			cancelReady()
			closeEtcd()
			if err == nil {
				err = errors.New("kube-apiserver stopped unexpectedly")
			}
			select {
			case <-stop:
				return 0
			default:
			}
			return fail("kube-apiserver", err)
		case <-stop:
			cancelReady()
			stopControllers()
			err := waitAPIServer(apiserverDone)
			closeEtcd()
			if err != nil {
				return fail("kube-apiserver shutdown", err)
			}
			return 0
		}
	}
}

// waitAPIServer waits for the apiserver's graceful shutdown (in-flight
// requests drained, watches closed), bounded so a stuck shutdown cannot
// keep the process alive.
func waitAPIServer(done <-chan error) error {
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		return errors.New("kube-apiserver did not stop within 30s")
	}
}

// freePorts asks the kernel for n distinct free loopback ports. They are
// released before use, so another process could take one in between; the
// apiserver or etcd then fails to bind and the error says so.
func freePorts(n int) ([]int, error) {
	var listeners []net.Listener
	defer func() {
		for _, l := range listeners {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		listeners = append(listeners, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
