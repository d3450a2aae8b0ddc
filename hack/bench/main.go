// Command bench measures Conveyor against the API server's own limits (make
// bench): it starts kube-apiserver and etcd (the test binaries), runs the
// manager as a process, plays the Job controller (marks every Job complete as
// soon as it appears) and the people (creates the Approvals runs wait for),
// and prints one table. Figures are measured, never asserted.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/rest"
	cliflag "k8s.io/component-base/cli/flag"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

type options struct {
	runs, concurrency, samples, retained int
	managerBin, root                     string
	qps                                  float64
	burst                                int
	shards, webhooks                     bool
	cpuProfile, deployHistory            int
	releaseHistory                       int
	managerFlags                         []string
	dump                                 string
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 1000, "Tag runs of the seed's pipeline in the throughput phase.")
	flag.IntVar(&o.concurrency, "concurrency", 100, "Runs in flight at once in the throughput phase.")
	flag.IntVar(&o.samples, "samples", 200, "Samples for the floor and reaction latencies.")
	flag.IntVar(&o.retained, "retained", 5000, "Finished runs retained for the second memory figure (0 skips it).")
	flag.StringVar(&o.managerBin, "manager", "bin/manager", "The manager binary.")
	flag.StringVar(&o.root, "root", ".", "The repository root.")
	flag.Float64Var(&o.qps, "kube-api-qps", 100, "The manager's client QPS (its default), also used for the raw create rate.")
	flag.IntVar(&o.burst, "kube-api-burst", 200, "The manager's client burst (its default).")
	flag.BoolVar(&o.webhooks, "webhooks", true, "Run the manager with its admission webhooks, as installed: runs are created as one user and Approvals as another (false: no admission, and the manager trusts unrecorded approvers).")
	flag.BoolVar(&o.shards, "shards", true, "Run the throughput phase again with two manager shards (3c).")
	flag.IntVar(&o.deployHistory, "deploy-history", 0, "Deploys recorded in every Environment's status before the bench starts, as the manager records them: a cluster that has deployed for a while.")
	flag.IntVar(&o.releaseHistory, "release-history", 0, "Releases every lane's Pipeline shipped before the bench starts (other tags, approved and deployed): a Pipeline that has shipped for a while.")
	flag.IntVar(&o.cpuProfile, "cpu-profile", 0, "Seconds of CPU profile to take of the API server and the manager during the throughput phase, into bin/bench/ (0: none).")
	flag.StringVar(&o.dump, "dump", "", "A directory to write one object of each kind a throughput run writes to, as the API server returns them, once the bench is done (for hack/patchcost).")
	flag.Var(cliflag.NewStringSlice(&o.managerFlags), "manager-flag", "A flag for every manager process the bench starts, as --manager-flag=--concurrency=8 (repeatable).")
	flag.Parse()
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	o   options
	cfg *rest.Config
	c   client.Client // the driver's client (high QPS)
	// requester and approver are the driver's clients for runs and for
	// Approvals: with the webhooks, two people (impersonated), since a
	// requester may not pass their own run's gate; else c.
	requester, approver client.Client
	webhook             envtest.WebhookInstallOptions // where the webhooks are served, with o.webhooks
	pipelines           []*conveyorv1.Pipeline        // made by createWorld, created once the manager runs
	cache               cache.Cache
	metrics             string // the manager's metrics URL
	pprof               string // the manager's /debug/pprof URL
	profiles            []string
	mgr                 *exec.Cmd
	mgrDone             chan struct{}
	shard               *exec.Cmd // the second shard's manager (phase 3c)
	shardEnd            chan struct{}
	kubeconf            string

	mu        sync.Mutex
	jobSeen   map[string]chan struct{} // job name -> closed when its Add event arrived
	runFirst  map[string]chan struct{} // run "namespace/name" -> closed when its first Job appeared
	runDone   map[string]chan struct{} // run name -> closed when it finished
	approved  map[string]bool          // run/stage -> Approval created
	completes atomic.Int64
	// handoffAdd and handoffDone are when each Job of the shared environment
	// appeared, and when the driver had completed it.
	handoffAdd, handoffDone map[string]time.Time
	// approvedAt is when the driver created the Approval of a run's stage
	// ("run/stage"); approvalLat, the time from there to the stage's first
	// Job's watch event.
	approvedAt  map[string]time.Time
	approvalLat []time.Duration
	probes      int // probes started (startProbe), for their Jobs' names
}

// managers are the manager processes running.
func (b *bench) managers() []*exec.Cmd {
	var out []*exec.Cmd
	for _, m := range []*exec.Cmd{b.mgr, b.shard} {
		if m != nil {
			out = append(out, m)
		}
	}
	return out
}

func run(ctx context.Context, o options) error {
	b, stop, err := setUp(ctx, o)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Printf("Conveyor benchmark — %s, %d cores, %s, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, cpuModel())
	if len(o.managerFlags) > 0 {
		fmt.Printf("manager flags: %s\n", strings.Join(o.managerFlags, " "))
	}
	var fig figures
	for i, phase := range []func(context.Context, *figures) error{b.measureFloor, b.measureLatencies, b.measureLoad, b.measureMemory} {
		progress("%s", []string{"1. floor", "2. reaction, 3b. handoff", "floor runs, 3. throughput, 4. API cost, 3c. two shards", "5. memory"}[i])
		if err := phase(ctx, &fig); err != nil {
			return err
		}
	}
	b.report(&fig)
	b.printProfiles()
	if o.dump != "" {
		return b.dumpObjects(ctx, o.dump)
	}
	return nil
}

// progress tells on stderr which phase runs (the table goes to stdout).
func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/1024/1024) }

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func percentiles(d []time.Duration) (time.Duration, time.Duration) {
	if len(d) == 0 {
		return 0, 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[(len(d)*99)/100]
}
