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
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

type options struct {
	runs, concurrency, samples, retained int
	managerBin, root                     string
	qps                                  float64
	burst                                int
}

func main() {
	var o options
	flag.IntVar(&o.runs, "runs", 1000, "Tag runs of the seed's pipeline in the throughput phase.")
	flag.IntVar(&o.concurrency, "concurrency", 100, "Runs in flight at once in the throughput phase.")
	flag.IntVar(&o.samples, "samples", 200, "Samples for the floor and reaction latencies.")
	flag.IntVar(&o.retained, "retained", 5000, "Finished runs retained for the second memory figure (0 skips it).")
	flag.StringVar(&o.managerBin, "manager", "bin/manager", "The manager binary.")
	flag.StringVar(&o.root, "root", ".", "The repository root.")
	flag.Float64Var(&o.qps, "kube-api-qps", 50, "The manager's client QPS (its default), also used for the raw create rate.")
	flag.IntVar(&o.burst, "kube-api-burst", 100, "The manager's client burst (its default).")
	flag.Parse()
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	if err := run(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type bench struct {
	o        options
	cfg      *rest.Config
	c        client.Client // the driver's client (high QPS)
	cache    cache.Cache
	metrics  string // the manager's metrics URL
	pprof    string // the manager's /debug/pprof URL
	profiles []string
	mgr      *exec.Cmd
	mgrDone  chan struct{}
	kubeconf string

	mu        sync.Mutex
	jobSeen   map[string]chan struct{} // job name -> closed when its Add event arrived
	runFirst  map[string]chan struct{} // run "namespace/name" -> closed when its first Job appeared
	runDone   map[string]chan struct{} // run name -> closed when it finished
	approved  map[string]bool          // run/stage -> Approval created
	completes atomic.Int64
	// handoffAdd and handoffDone are when each Job of the shared environment
	// appeared, and when the driver had completed it.
	handoffAdd, handoffDone map[string]time.Time
}

func run(ctx context.Context, o options) error {
	b, stop, err := setUp(ctx, o)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Printf("Conveyor benchmark — %s, %d cores, %s, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, cpuModel())
	var fig figures
	for _, phase := range []func(context.Context, *figures) error{b.measureFloor, b.measureLatencies, b.measureLoad, b.measureMemory} {
		if err := phase(ctx, &fig); err != nil {
			return err
		}
	}
	b.report(&fig)
	b.printProfiles()
	return nil
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
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[(len(d)*99)/100]
}
