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
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/test/framework/localcluster"
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

// Phase 3b: runs deploying to one shared environment, one at a time.
const (
	handoffNS, handoffEnv = "handoff", "handoff-env"
	handoffRuns           = 50
)

func (b *bench) handoffSetup(ctx context.Context) error {
	b.handoffAdd, b.handoffDone = map[string]time.Time{}, map[string]time.Time{}
	for _, ns := range []string{handoffNS, handoffEnv} {
		if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	return b.c.Create(ctx, &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Namespace: handoffNS, Name: "deploy"},
		Spec: conveyorv1.PipelineSpec{Refs: conveyorv1.PipelineRefs{Tags: []string{"v*"}},
			History: &conveyorv1.History{Succeeded: ptr.To[int32](1000), Failed: ptr.To[int32](1000)},
			Stages:  []conveyorv1.Stage{{Name: "production", Environment: handoffEnv, Jobs: []conveyorv1.JobSpec{{Name: "deploy", Image: "alpine/helm:3"}}}}}})
}

// handoff creates handoffRuns runs at once that all deploy to one
// environment, waits for every one, and measures each handoff: from the
// driver completing one deploy's Job to the next deploy's Job appearing.
// It deletes the runs afterwards, so the later phases do not see them.
func (b *bench) handoff(ctx context.Context) (p50, p99, total time.Duration, err error) {
	var chans []chan struct{}
	start := time.Now()
	for i := 0; i < handoffRuns; i++ {
		name := fmt.Sprintf("handoff-%02d", i)
		ch := make(chan struct{})
		b.mu.Lock()
		b.runDone[name] = ch
		b.mu.Unlock()
		chans = append(chans, ch)
		if _, err := b.newRunOf(ctx, handoffNS, "deploy", name); err != nil {
			return 0, 0, 0, err
		}
	}
	for i, ch := range chans {
		select {
		case <-ch:
		case <-time.After(5 * time.Minute):
			return 0, 0, 0, fmt.Errorf("run handoff-%02d did not finish", i)
		}
	}
	total = time.Since(start)
	b.mu.Lock()
	type job struct{ added, done time.Time }
	var jobs []job
	for name, t := range b.handoffAdd {
		jobs = append(jobs, job{t, b.handoffDone[name]})
	}
	b.mu.Unlock()
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].added.Before(jobs[j].added) })
	var gaps []time.Duration
	for i := 1; i < len(jobs); i++ {
		if jobs[i].added.Before(jobs[i-1].done) {
			return 0, 0, 0, fmt.Errorf("two deploys overlapped in %s", handoffEnv)
		}
		gaps = append(gaps, jobs[i].added.Sub(jobs[i-1].done))
	}
	if len(gaps) != handoffRuns-1 {
		return 0, 0, 0, fmt.Errorf("%d deploys seen in %s, want %d", len(jobs), handoffEnv, handoffRuns)
	}
	if err := b.c.DeleteAllOf(ctx, &conveyorv1.PipelineRun{}, client.InNamespace(handoffNS)); err != nil {
		return 0, 0, 0, err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		list := &conveyorv1.PipelineRunList{}
		if err := b.c.List(ctx, list, client.InNamespace(handoffNS)); err != nil {
			return 0, 0, 0, err
		}
		if len(list.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, 0, fmt.Errorf("%d handoff runs not deleted", len(list.Items))
		}
	}
	p50, p99 = percentiles(gaps)
	return p50, p99, total, nil
}

func run(ctx context.Context, o options) error {
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join(o.root, "config/crd/bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting kube-apiserver and etcd: %w", err)
	}
	defer func() { _ = env.Stop() }()
	b := &bench{o: o, jobSeen: map[string]chan struct{}{}, runFirst: map[string]chan struct{}{}, runDone: map[string]chan struct{}{}, approved: map[string]bool{}}
	b.cfg = rest.CopyConfig(cfg)
	b.cfg.QPS, b.cfg.Burst = 2000, 4000
	if b.c, err = client.New(b.cfg, client.Options{Scheme: localcluster.Scheme()}); err != nil {
		return err
	}
	admin, err := env.AddUser(envtest.User{Name: "bench-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return err
	}
	kc, err := admin.KubeConfig()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "conveyor-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b.kubeconf = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(b.kubeconf, kc, 0o600); err != nil {
		return err
	}
	if err := b.startCache(ctx); err != nil {
		return err
	}
	for _, ns := range append([]string{"bench", "react", "floor"}, localcluster.Environments...) {
		if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	for _, ns := range []string{"bench", "react"} {
		if err := b.seedPipeline(ctx, ns); err != nil {
			return err
		}
	}
	// Each throughput lane (a team) deploys to environments of its own: one
	// deploy at a time per environment would otherwise make the phase a
	// measure of the queue (measured apart, in phase 3b).
	for i := 0; i < o.concurrency; i++ {
		for _, env := range localcluster.Environments {
			if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: lanePrefix(i) + env}}); err != nil {
				return err
			}
		}
		if err := b.lanePipeline(ctx, "bench", fmt.Sprintf("shop-%d", i), lanePrefix(i)); err != nil {
			return err
		}
	}
	if err := b.handoffSetup(ctx); err != nil {
		return err
	}

	fmt.Printf("Conveyor benchmark — %s, %d cores, %s, %s\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), runtime.GOOS+"/"+runtime.GOARCH, cpuModel())
	floorP50, floorP99, err := b.floorLatency(ctx)
	if err != nil {
		return err
	}
	rawRate, err := b.rawCreateRate(ctx)
	if err != nil {
		return err
	}
	if err := b.startManager(ctx); err != nil {
		return err
	}
	defer b.stopManager()
	time.Sleep(5 * time.Second)
	mem0, err := b.memory("idle")
	if err != nil {
		return err
	}
	react, err := b.reaction(ctx)
	if err != nil {
		return err
	}
	handP50, handP99, handTotal, err := b.handoff(ctx)
	if err != nil {
		return err
	}
	before, err := b.apiWrites(ctx)
	if err != nil {
		return err
	}
	dur, err := b.throughput(ctx)
	if err != nil {
		return err
	}
	after, err := b.apiWrites(ctx)
	if err != nil {
		return err
	}
	// Memory is per finished run: the reaction runs, still at their first
	// Job, are cancelled first (counted apart from the throughput's writes).
	if err := b.cancelReactionRuns(ctx); err != nil {
		return err
	}
	quiet, err := b.apiWrites(ctx)
	if err != nil {
		return err
	}
	mem1, err := b.memoryAfterRestart(ctx, fmt.Sprintf("%d-finished-runs", b.o.runs+b.o.samples))
	if err != nil {
		return err
	}
	settled, err := b.apiWrites(ctx)
	if err != nil {
		return err
	}
	// Reconciles of finished runs after the restart: every run is reconciled once on start.
	idleWrites := settled.manager() - quiet.manager()

	var memN memStats
	retainedN := 0
	if b.o.retained > b.o.runs+b.o.samples {
		retainedN = b.o.retained
		if memN, err = b.memoryRetained(ctx, b.o.retained); err != nil {
			return err
		}
	}

	// The minimum for a tag run of the seed's pipeline: its 6 Job creates, one
	// status patch per stage start (6, the approve gate's included) and one per
	// wait for a person (staging, pre-production, approve, production: 4).
	jobsPerRun, patchesPerRun := 6.0, 10.0
	runsF := float64(b.o.runs)
	w := after.sub(before)
	minimum := runsF * (jobsPerRun + patchesPerRun)
	core := w.jobCreates + w.runStatus + w.runMeta
	perMin := runsF / dur.Minutes()
	jobsPerSec := runsF * jobsPerRun / dur.Seconds()

	fmt.Println()
	fmt.Printf("%-58s %-22s %-18s %s\n", "measure", "value", "target", "mark")
	row := func(name, value, target string, ok *bool) {
		mark := ""
		if ok != nil {
			mark = "pass"
			if !*ok {
				mark = "short"
			}
		}
		fmt.Printf("%-58s %-22s %-18s %s\n", name, value, target, mark)
	}
	pb := func(v bool) *bool { return &v }
	row(fmt.Sprintf("1. floor: Job create -> watch event, p50 / p99 (%d)", b.o.samples), fmt.Sprintf("%s / %s", ms(floorP50), ms(floorP99)), "", nil)
	row(fmt.Sprintf("1. floor: raw Job creates/s, one client at QPS %.0f/burst %d", b.o.qps, b.o.burst), fmt.Sprintf("%.1f/s", rawRate), "", nil)
	row(fmt.Sprintf("2. reaction: run created -> first Job, p50 / p99 (%d)", b.o.samples), fmt.Sprintf("%s / %s", ms(react.p50), ms(react.p99)), "", nil)
	row("2. of which the run's create call, p50 / p99", fmt.Sprintf("%s / %s", ms(react.createP50), ms(react.createP99)), "", nil)
	row("2. reaction p99 / floor p99", fmt.Sprintf("%.2fx", float64(react.p99)/float64(floorP99)), "<= 2x", pb(float64(react.p99) <= 2*float64(floorP99)))
	row(fmt.Sprintf("3. throughput: %d tag runs, %d concurrent", b.o.runs, b.o.concurrency), fmt.Sprintf("%.0f runs/min (%s)", perMin, dur.Round(time.Second)), "", nil)
	row("3. Jobs launched/s, and / raw create rate", fmt.Sprintf("%.1f/s = %.0f%%", jobsPerSec, 100*jobsPerSec/rawRate), ">= 90%", pb(jobsPerSec >= 0.9*rawRate))
	// client-go limits each kind's requests apart (one token bucket per
	// kind): a run's own writes (status, finalizer) share one budget of QPS,
	// its Job creates another; the first binds when a run writes itself more
	// often than it creates Jobs.
	runWrites := (w.runStatus + w.runMeta) / runsF
	bound := b.o.qps * jobsPerRun / math.Max(runWrites, jobsPerRun)
	row(fmt.Sprintf("3. Jobs/s that QPS %.0f allows at %.1f run writes per 6 Jobs, and share", b.o.qps, runWrites), fmt.Sprintf("%.1f/s, %.0f%% of it", bound, 100*jobsPerSec/bound), "", nil)
	row(fmt.Sprintf("3b. one environment, %d deploys queued: handoff p50 / p99", handoffRuns), fmt.Sprintf("%s / %s", ms(handP50), ms(handP99)), "", nil)
	row("3b. deploys/s through one environment", fmt.Sprintf("%.1f/s (%s)", float64(handoffRuns)/handTotal.Seconds(), handTotal.Round(time.Millisecond)), "", nil)
	row("4. manager writes per run: Job creates + run status/metadata", fmt.Sprintf("%.2f = %.2f + %.2f + %.2f", core/runsF, w.jobCreates/runsF, w.runStatus/runsF, w.runMeta/runsF), fmt.Sprintf("min %.0f = 6 + 10", jobsPerRun+patchesPerRun), nil)
	row("4. writes per stage transition / minimum", fmt.Sprintf("%.2fx", core/minimum), "<= 1.2x", pb(core <= 1.2*minimum))
	row("4. other manager writes per run: Events, Approval status, locks", fmt.Sprintf("%.2f + %.2f + %.2f", w.events/runsF, w.approvalStatus/runsF, w.locks/runsF), "", nil)
	row(fmt.Sprintf("4. writes for %d finished runs after a manager restart", b.o.runs+b.o.samples), fmt.Sprintf("%.0f", idleWrites), "0", pb(idleWrites == 0))
	row("5. manager heap / RSS, idle before any run", fmt.Sprintf("%s / %s", mib(mem0.heap), mib(mem0.rss)), "", nil)
	row(fmt.Sprintf("5. manager heap / RSS, %d finished runs (%d with 6 Jobs, 4 Approvals)", b.o.runs+b.o.samples, b.o.runs), fmt.Sprintf("%s / %s", mib(mem1.heap), mib(mem1.rss)), "", nil)
	perRun := (mem1.heap - mem0.heap) / float64(b.o.runs+b.o.samples) / 1024
	row("5. heap KiB per retained finished run (its Jobs included)", fmt.Sprintf("%.1f KiB", perRun), "<= 5 KiB", pb(perRun <= 5))
	if retainedN > 0 {
		row(fmt.Sprintf("5. manager heap / RSS, %d finished runs", retainedN), fmt.Sprintf("%s / %s", mib(memN.heap), mib(memN.rss)), "", nil)
		extra := float64(retainedN - b.o.runs - b.o.samples)
		per := (memN.heap - mem1.heap) / extra / 1024
		row("5. heap KiB per added finished run (runs without Jobs)", fmt.Sprintf("%.1f KiB", per), "<= 5 KiB", pb(per <= 5))
	}
	// Where the heap goes: the top of each profile (after a GC).
	for _, p := range b.profiles {
		out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=12", "-sample_index=inuse_space", b.o.managerBin, p).Output()
		fmt.Printf("\nHeap profile %s:\n", p)
		if err != nil {
			fmt.Printf("  (go tool pprof: %v)\n", err)
			continue
		}
		lines := strings.Split(string(out), "\n")
		for _, l := range lines {
			if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") || l == "" {
				continue
			}
			fmt.Println("  " + l)
		}
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
func mib(b float64) string      { return fmt.Sprintf("%.1f MiB", b/1024/1024) }

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

// startCache watches Jobs and runs for the driver: it completes Jobs as the Job
// controller would, and approves what runs wait for.
func (b *bench) startCache(ctx context.Context) error {
	var err error
	if b.cache, err = cache.New(b.cfg, cache.Options{Scheme: localcluster.Scheme()}); err != nil {
		return err
	}
	jobs, err := b.cache.GetInformer(ctx, &batchv1.Job{})
	if err != nil {
		return err
	}
	complete := make(chan *batchv1.Job, 100000)
	if _, err := jobs.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: func(o any) {
		j := o.(*batchv1.Job)
		b.mu.Lock()
		if j.Namespace == handoffEnv {
			b.handoffAdd[j.Name] = time.Now()
		}
		if ch := b.jobSeen[j.Name]; ch != nil {
			close(ch)
			delete(b.jobSeen, j.Name)
		}
		if ch := b.runFirst[j.Annotations[conveyorv1.AnnotationRun]]; ch != nil {
			close(ch)
			delete(b.runFirst, j.Annotations[conveyorv1.AnnotationRun])
		}
		b.mu.Unlock()
		// Jobs of the reaction runs stay running: those runs keep still, so
		// each sample meets an otherwise idle manager.
		if j.Labels[conveyorv1.LabelRunUID] != "" && j.Namespace != "react" {
			complete <- j
		}
	}}); err != nil {
		return err
	}
	for i := 0; i < 16; i++ {
		go func() {
			for j := range complete {
				if err := completeJob(ctx, b.c, j); err != nil {
					fmt.Fprintln(os.Stderr, "completing Job:", err)
				}
				if j.Namespace == handoffEnv {
					b.mu.Lock()
					b.handoffDone[j.Name] = time.Now()
					b.mu.Unlock()
				}
				b.completes.Add(1)
			}
		}()
	}
	runs, err := b.cache.GetInformer(ctx, &conveyorv1.PipelineRun{})
	if err != nil {
		return err
	}
	onRun := func(o any) {
		r := o.(*conveyorv1.PipelineRun)
		if r.Status.Phase.Finished() {
			b.mu.Lock()
			if ch := b.runDone[r.Name]; ch != nil {
				close(ch)
				delete(b.runDone, r.Name)
			}
			b.mu.Unlock()
			return
		}
		if r.Status.Phase != conveyorv1.RunWaiting {
			return
		}
		key := r.Name + "/" + r.Status.CurrentStage
		b.mu.Lock()
		done := b.approved[key]
		b.approved[key] = true
		b.mu.Unlock()
		if done {
			return
		}
		go func() {
			a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: strings.ReplaceAll(key, "/", "-"), Namespace: r.Namespace},
				Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: r.Name}, Stage: r.Status.CurrentStage, Decision: conveyorv1.DecisionApprove}}
			if err := b.c.Create(ctx, a); client.IgnoreAlreadyExists(err) != nil {
				fmt.Fprintln(os.Stderr, "creating Approval:", err)
			}
		}()
	}
	if _, err := runs.AddEventHandler(toolscache.ResourceEventHandlerFuncs{AddFunc: onRun, UpdateFunc: func(_, o any) { onRun(o) }}); err != nil {
		return err
	}
	go func() { _ = b.cache.Start(ctx) }()
	if !b.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("the driver's cache did not sync")
	}
	return nil
}

// completeJob sets a Job's status as the Job controller does when its pod succeeded.
func completeJob(ctx context.Context, c client.Client, j *batchv1.Job) error {
	now := metav1.Now()
	j = j.DeepCopy()
	j.Status.StartTime, j.Status.CompletionTime, j.Status.Succeeded = &now, &now, 1
	j.Status.Conditions = []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	return c.Status().Update(ctx, j)
}

func (b *bench) seedPipeline(ctx context.Context, ns string) error {
	return b.lanePipeline(ctx, ns, "shop", "")
}

// lanePipeline creates the seed's pipeline under another name, its
// environments prefixed (staging becomes <prefix>staging), in namespace ns.
func (b *bench) lanePipeline(ctx context.Context, ns, name, prefix string) error {
	data, err := os.ReadFile(filepath.Join(b.o.root, "config/samples/pipeline.yaml"))
	if err != nil {
		return err
	}
	p := &conveyorv1.Pipeline{}
	if err := yaml.UnmarshalStrict(data, p); err != nil {
		return err
	}
	p.Name, p.Namespace = name, ns
	// Keep every run: the memory phases measure retained runs.
	p.Spec.History = &conveyorv1.History{Succeeded: ptr.To[int32](1000), Failed: ptr.To[int32](1000)}
	for i := range p.Spec.Stages {
		if env := p.Spec.Stages[i].Environment; env != "" {
			p.Spec.Stages[i].Environment = prefix + env
		}
	}
	return b.c.Create(ctx, p)
}

// lanePrefix is the prefix of the environments of throughput lane i.
func lanePrefix(i int) string { return fmt.Sprintf("lane-%d-", i) }

func percentiles(d []time.Duration) (time.Duration, time.Duration) {
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return d[len(d)/2], d[(len(d)*99)/100]
}

// floorLatency: create a Job, time until its watch event arrives.
func (b *bench) floorLatency(ctx context.Context) (time.Duration, time.Duration, error) {
	var lat []time.Duration
	for i := 0; i < b.o.samples; i++ {
		j := floorJob(fmt.Sprintf("floor-%d", i))
		ch := make(chan struct{})
		b.mu.Lock()
		b.jobSeen[j.Name] = ch
		b.mu.Unlock()
		start := time.Now()
		if err := b.c.Create(ctx, j); err != nil {
			return 0, 0, err
		}
		select {
		case <-ch:
			lat = append(lat, time.Since(start))
		case <-time.After(30 * time.Second):
			return 0, 0, fmt.Errorf("no watch event for Job %s", j.Name)
		}
	}
	p50, p99 := percentiles(lat)
	return p50, p99, nil
}

func floorJob(name string) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "floor"}, Spec: batchv1.JobSpec{
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
}

// rawCreateRate: Jobs created per second by one client at the manager's QPS settings.
func (b *bench) rawCreateRate(ctx context.Context) (float64, error) {
	cfg := rest.CopyConfig(b.cfg)
	cfg.QPS, cfg.Burst = float32(b.o.qps), b.o.burst
	c, err := client.New(cfg, client.Options{Scheme: localcluster.Scheme()})
	if err != nil {
		return 0, err
	}
	n := 600
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if err := c.Create(ctx, floorJob(fmt.Sprintf("raw-%d", i))); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func (b *bench) startManager(ctx context.Context) error {
	port, err := localcluster.FreePort()
	if err != nil {
		return err
	}
	b.metrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	pport, err := localcluster.FreePort()
	if err != nil {
		return err
	}
	b.pprof = fmt.Sprintf("http://127.0.0.1:%d/debug/pprof", pport)
	cmd := exec.Command(b.o.managerBin, "--webhooks=false", "--leader-elect=false", "--health-probe-bind-address=0",
		fmt.Sprintf("--metrics-bind-address=127.0.0.1:%d", port), fmt.Sprintf("--pprof-bind-address=127.0.0.1:%d", pport),
		fmt.Sprintf("--kube-api-qps=%g", b.o.qps), fmt.Sprintf("--kube-api-burst=%d", b.o.burst))
	if os.Getenv("BENCH_MANAGER_DEBUG") != "" {
		cmd.Args = append(cmd.Args, "--zap-log-level=debug")
	}
	cmd.Env = append(os.Environ(), "KUBECONFIG="+b.kubeconf)
	// The manager's log is kept in bin/bench/ (the last start's).
	if err := os.MkdirAll(filepath.Join(b.o.root, "bin/bench"), 0o755); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(b.o.root, "bin/bench", "manager.log"))
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	b.mgr, b.mgrDone = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(b.mgrDone) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := scrape(b.metrics); err == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("the manager's metrics did not come up (log: %s)", logf.Name())
}

func (b *bench) stopManager() {
	if b.mgr == nil {
		return
	}
	_ = b.mgr.Process.Signal(syscall.SIGTERM)
	select {
	case <-b.mgrDone:
	case <-time.After(15 * time.Second):
		_ = b.mgr.Process.Kill()
		<-b.mgrDone
	}
	b.mgr = nil
}

func (b *bench) newRun(ctx context.Context, ns, name string) (*conveyorv1.PipelineRun, error) {
	return b.newRunOf(ctx, ns, "shop", name)
}

func (b *bench) newRunOf(ctx context.Context, ns, pipeline, name string) (*conveyorv1.PipelineRun, error) {
	r := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: pipeline}, Git: conveyorv1.GitRef{Tag: "v1.0.0", Commit: "abcdef1"}}}
	return r, b.c.Create(ctx, r)
}

// reactionFigures are the reaction's percentiles, and those of the run's
// create call alone (the API server's share, before the manager can know).
type reactionFigures struct{ p50, p99, createP50, createP99 time.Duration }

// reaction: run created -> its first Job's watch event. The reaction runs'
// Jobs are never completed, so the manager has nothing else to do.
func (b *bench) reaction(ctx context.Context) (reactionFigures, error) {
	var lat, create []time.Duration
	for i := 0; i < b.o.samples; i++ {
		name := fmt.Sprintf("react-%d", i)
		// Wait for the Job by its run's name, known before the run exists: its
		// Job may appear before the create call returns.
		ch := make(chan struct{})
		b.mu.Lock()
		b.runFirst["react/"+name] = ch
		b.mu.Unlock()
		start := time.Now()
		if _, err := b.newRun(ctx, "react", name); err != nil {
			return reactionFigures{}, err
		}
		create = append(create, time.Since(start))
		select {
		case <-ch:
			lat = append(lat, time.Since(start))
		case <-time.After(30 * time.Second):
			return reactionFigures{}, fmt.Errorf("run %s started no Job", name)
		}
		// The next sample meets an idle API server, as the floor's do: the
		// manager's status write for this run has landed, and its Events
		// (written in the background) have had time to.
		if err := b.settle(ctx, "react", name); err != nil {
			return reactionFigures{}, err
		}
	}
	// Let the manager record the reaction runs' state before writes are counted.
	time.Sleep(3 * time.Second)
	var f reactionFigures
	f.p50, f.p99 = percentiles(lat)
	f.createP50, f.createP99 = percentiles(create)
	return f, nil
}

// cancelReactionRuns cancels the reaction runs (spec.cancelled) and waits
// until every one is Cancelled, and 3 s more for the manager's last writes.
func (b *bench) cancelReactionRuns(ctx context.Context) error {
	for i := 0; i < b.o.samples; i++ {
		r := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "react", Name: fmt.Sprintf("react-%d", i)}}
		if err := b.c.Patch(ctx, r, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancelled":true}}`))); err != nil {
			return fmt.Errorf("cancelling %s: %w", r.Name, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		list := &conveyorv1.PipelineRunList{}
		if err := b.cache.List(ctx, list, client.InNamespace("react")); err != nil {
			return err
		}
		left := 0
		for _, r := range list.Items {
			if r.Status.Phase != conveyorv1.RunCancelled {
				left++
			}
		}
		if left == 0 {
			time.Sleep(3 * time.Second)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d reaction runs not Cancelled after 2 minutes", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// settle waits until the driver's cache shows the run Running (the manager's
// status write after its first Job), then 50 ms more for its Events.
func (b *bench) settle(ctx context.Context, ns, name string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := &conveyorv1.PipelineRun{}
		if err := b.cache.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, r); err == nil && r.Status.Phase == conveyorv1.RunRunning {
			time.Sleep(50 * time.Millisecond)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("run %s/%s never showed Running", ns, name)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// throughput: o.runs tag runs, o.concurrency at a time, each to Succeeded.
func (b *bench) throughput(ctx context.Context) (time.Duration, error) {
	errs := make(chan error, b.o.runs)
	var wg sync.WaitGroup
	start := time.Now()
	// o.concurrency lanes, each running its share of the runs one after another.
	for lane := 0; lane < b.o.concurrency; lane++ {
		wg.Add(1)
		go func(lane int) {
			defer wg.Done()
			for i := lane; i < b.o.runs; i += b.o.concurrency {
				name := fmt.Sprintf("run-%d", i)
				ch := make(chan struct{})
				b.mu.Lock()
				b.runDone[name] = ch
				b.mu.Unlock()
				if _, err := b.newRunOf(ctx, "bench", fmt.Sprintf("shop-%d", lane), name); err != nil {
					errs <- err
					return
				}
				select {
				case <-ch:
				case <-time.After(10 * time.Minute):
					errs <- fmt.Errorf("run %s did not finish", name)
					return
				}
			}
		}(lane)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	d := time.Since(start)
	// Every run must have succeeded.
	list := &conveyorv1.PipelineRunList{}
	if err := b.c.List(ctx, list, client.InNamespace("bench")); err != nil {
		return 0, err
	}
	for _, r := range list.Items {
		if r.Status.Phase != conveyorv1.RunSucceeded {
			return 0, fmt.Errorf("run %s ended %s", r.Name, r.Status.Phase)
		}
	}
	return d, nil
}

type memStats struct{ heap, rss float64 }

// memoryAfterRestart restarts the manager (it lists and reconciles every run
// once), lets it settle, and reads its heap and RSS.
func (b *bench) memoryAfterRestart(ctx context.Context, label string) (memStats, error) {
	b.stopManager()
	if err := b.startManager(ctx); err != nil {
		return memStats{}, err
	}
	time.Sleep(20 * time.Second)
	return b.memory(label)
}

// memory collects the manager's garbage (through its heap profile, kept in
// bin/bench/) and reads its heap and RSS.
func (b *bench) memory(label string) (memStats, error) {
	resp, err := http.Get(b.pprof + "/heap?gc=1")
	if err != nil {
		return memStats{}, err
	}
	defer resp.Body.Close()
	if err := os.MkdirAll(filepath.Join(b.o.root, "bin/bench"), 0o755); err != nil {
		return memStats{}, err
	}
	path := filepath.Join(b.o.root, "bin/bench", "heap-"+label+".pb.gz")
	f, err := os.Create(path)
	if err != nil {
		return memStats{}, err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return memStats{}, err
	}
	f.Close()
	b.profiles = append(b.profiles, path)
	m, err := scrape(b.metrics)
	if err != nil {
		return memStats{}, err
	}
	return memStats{heap: m["go_memstats_heap_inuse_bytes"], rss: m["process_resident_memory_bytes"]}, nil
}

// memoryRetained adds finished runs (copies of a finished run's status, no
// Jobs) up to total, restarts the manager and reads its memory.
func (b *bench) memoryRetained(ctx context.Context, total int) (memStats, error) {
	b.stopManager()
	src := &conveyorv1.PipelineRun{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: "bench", Name: "run-0"}, src); err != nil {
		return memStats{}, err
	}
	have := b.o.runs + b.o.samples
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > total-have {
					return
				}
				r, err := b.newRun(ctx, "bench", fmt.Sprintf("kept-%d", i))
				if err == nil {
					r.Status = *src.Status.DeepCopy()
					err = b.c.Status().Update(ctx, r)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return memStats{}, err
	}
	return b.memoryAfterRestart(ctx, fmt.Sprintf("%d-finished", total))
}

// writes are API server write counts by what they wrote.
type writes struct {
	jobCreates, runStatus, runMeta, events, approvalStatus, locks, other float64
}

func (w writes) manager() float64 { return w.runStatus + w.runMeta + w.approvalStatus + w.jobCreates }

func (w writes) sub(o writes) writes {
	return writes{w.jobCreates - o.jobCreates, w.runStatus - o.runStatus, w.runMeta - o.runMeta, w.events - o.events, w.approvalStatus - o.approvalStatus, w.locks - o.locks, w.other - o.other}
}

// apiWrites reads apiserver_request_total from the API server: the writes the
// manager makes are the only ones to these resources (the driver writes Job
// status, Approvals and runs, counted apart).
func (b *bench) apiWrites(ctx context.Context) (writes, error) {
	cs, err := kubernetes.NewForConfig(b.cfg)
	if err != nil {
		return writes{}, err
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return writes{}, err
	}
	var w writes
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels, value := parseSample(line)
		verb, res, sub := labels["verb"], labels["resource"], labels["subresource"]
		if verb != "POST" && verb != "PATCH" && verb != "PUT" && verb != "DELETE" && verb != "APPLY" {
			continue
		}
		switch {
		case res == "jobs" && sub == "" && verb == "POST":
			w.jobCreates += value
		case res == "pipelineruns" && sub == "status" && verb == "PATCH":
			w.runStatus += value
		case res == "pipelineruns" && sub == "" && verb == "PATCH":
			w.runMeta += value
		case res == "events":
			w.events += value
		case res == "approvals" && sub == "status":
			w.approvalStatus += value
		case res == "leases":
			// Environment locks (and, unlikely here, leader election: off).
			w.locks += value
		default:
			w.other += value
		}
	}
	return w, nil
}

// scrape reads a Prometheus text endpoint into name -> value (unlabelled samples).
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url) //nolint:gosec // the manager's local metrics endpoint
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err == nil {
			m[name] = f
		}
	}
	return m, nil
}

// parseSample splits `name{a="b",...} value`.
func parseSample(line string) (map[string]string, float64) {
	open, end := strings.Index(line, "{"), strings.LastIndex(line, "}")
	labels := map[string]string{}
	for _, kv := range strings.Split(line[open+1:end], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			labels[k] = strings.Trim(v, `"`)
		}
	}
	f, _ := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
	return labels, f
}
