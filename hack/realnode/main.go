// orrery-node: the Kubernetes node and controller components that the real-node end-to-end test
// (test/e2e/realnode.test.ts) runs beside the local control plane, in one binary as hyperkube
// was: `orrery-node kubelet ...`, `orrery-node kube-scheduler ...`,
// `orrery-node kube-controller-manager ...`, `orrery-node kube-proxy ...`. Each is the upstream
// cobra command of k8s.io/kubernetes (cmd/<name>/app), at the control plane's release, run as the
// release binary runs it (component-base/cli.Run). One binary links the ~2,000 shared packages
// once instead of four times.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	proxy "k8s.io/kubernetes/cmd/kube-proxy/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
	kubelet "k8s.io/kubernetes/cmd/kubelet/app"
)

var commands = map[string]func() *cobra.Command{
	"kubelet":                 kubelet.NewKubeletCommand,
	"kube-scheduler":          func() *cobra.Command { return scheduler.NewSchedulerCommand() },
	"kube-controller-manager": controllermanager.NewControllerManagerCommand,
	"kube-proxy":              proxy.NewProxyCommand,
}

func usage() {
	fmt.Fprintf(os.Stderr, "usage: %s kubelet|kube-scheduler|kube-controller-manager|kube-proxy [flags]\n", filepath.Base(os.Args[0]))
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	newCommand, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "unknown component %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	command := newCommand()
	command.SetArgs(os.Args[2:])
	os.Exit(cli.Run(command))
}
