// Command demo starts a local control plane, installs Conveyor, runs its
// manager, and plays the seed's release story as the personas (make demo).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/term"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/conveyor-dev/conveyor/test/framework/localcluster"
	"github.com/conveyor-dev/conveyor/test/framework/story"
)

func main() {
	var (
		binDir  = flag.String("bin-dir", "", "Directory with the Kubernetes binaries (bin/k8s/<version>).")
		manager = flag.String("manager", "bin/manager", "The manager binary.")
		root    = flag.String("root", ".", "The repository root.")
		keep    = flag.Bool("keep", false, "Keep the cluster and the manager running after the story, until Ctrl-C.")
	)
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, *binDir, *manager, *root, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "\nDEMO FAILED:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, binDir, managerBin, root string, keep bool) (err error) {
	start := time.Now()
	stages, _ := filepath.Glob(filepath.Join(binDir, "kwok-stages", "*.yaml"))
	fmt.Println("== Starting a local control plane (no container runtime: kwok plays the kubelet) ==")
	cluster, err := localcluster.Start(ctx, localcluster.Options{
		BinDir: binDir, Users: localcluster.DefaultUsers, StageFiles: stages, Log: os.Stdout,
	})
	if err != nil {
		return err
	}
	defer func() {
		cluster.Stop()
		if err != nil {
			fmt.Fprintf(os.Stderr, "Logs of every component are in %s/logs\n", cluster.Dir)
			return
		}
		_ = cluster.Remove()
	}()

	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = localcluster.FreePort(); err != nil {
			return err
		}
	}
	fmt.Println("Installing Conveyor: CRDs, roles, admission webhooks (failurePolicy: Fail)")
	if err := cluster.InstallConveyor(ctx, root, ports[0]); err != nil {
		return err
	}
	fmt.Printf("Starting the manager as user %q (its own roles, not cluster-admin), webhooks on https://localhost:%d (a CA made for this cluster)\n", localcluster.ManagerUser, ports[0])
	if _, err := cluster.StartManager(ctx, managerBin, ports[0], ports[1], ports[2]); err != nil {
		return err
	}

	admin, err := cluster.Client("admin", &client.Options{Scheme: localcluster.Scheme()})
	if err != nil {
		return err
	}
	fmt.Println("Every persona acts with the kubectl plugin, one kubeconfig context each (kubectl --context dana conveyor ...).")
	s := &story.Story{Admin: admin, Kubeconfig: cluster.Kubeconfig, Colour: term.IsTerminal(int(os.Stdout.Fd())),
		Out: os.Stdout, Root: root, Timeout: 3 * time.Minute}
	if err := cluster.AllowJobs(ctx, story.Namespace); err != nil {
		return err
	}
	if err := s.SetScene(ctx); err != nil {
		return err
	}
	if _, err := s.Play(ctx); err != nil {
		return err
	}
	fmt.Printf("\nThe story took %s.\n", time.Since(start).Round(time.Second))
	if !keep {
		fmt.Println("Run `make demo KEEP=1` to keep the cluster up and look around with kubectl.")
		return nil
	}
	fmt.Printf(`
The cluster stays up until Ctrl-C. Point kubectl at it:

  export KUBECONFIG=%s
  kubectl get conveyor -n %s
  kubectl get jobs -A -l app.kubernetes.io/managed-by=conveyor
  kubectl --context dana create -f config/samples/pipelinerun-branch.yaml -n %s

The kubectl plugin (bin/kubectl-conveyor; put bin/ on PATH for "kubectl conveyor"):

  export PATH=$PWD/bin:$PATH
  kubectl --context dana conveyor start shop --tag v1.5.0 --commit 5eed5ee -n %s
  kubectl --context rita conveyor list -n %s
  kubectl --context rita conveyor dashboard -n %s     # prints the page's address; open it in a browser

Contexts (one per persona): admin, dana (developers), tess (testers), omar (devops),
rita and rob (release-engineers). Component logs: %s/logs

The push receiver listens on http://127.0.0.1:%d/hooks/gitlab and /hooks/github
(see docs/receiver.md to give the Pipeline a repository and a secret).
`, cluster.Kubeconfig, story.Namespace, story.Namespace, story.Namespace, story.Namespace, story.Namespace, cluster.Dir, ports[2])
	<-ctx.Done()
	fmt.Println("\nStopping the cluster")
	return nil
}
