package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/hack/internal/proc"
)

// floorShard labels the floor's runs, Jobs and Approvals: the bench's
// managers run with --watch-label-selector=!conveyor.dev/shard, so they never
// see them.
const floorShard = "floor"

// cpu is the CPU seconds (user + system) each process has used so far.
type cpu struct{ apiserver, etcd, manager, driver float64 }

func (c cpu) sub(o cpu) cpu {
	return cpu{c.apiserver - o.apiserver, c.etcd - o.etcd, c.manager - o.manager, c.driver - o.driver}
}

// cpuNow samples every process's CPU seconds.
func (b *bench) cpuNow() cpu {
	var c cpu
	c.apiserver, c.etcd = proc.ChildrenCPU("kube-apiserver"), proc.ChildrenCPU("etcd")
	for _, m := range b.managers() {
		c.manager += proc.CPU(m.Process.Pid)
	}
	c.driver = proc.CPU(os.Getpid())
	return c
}

// requests are API requests counted by the API server
// (apiserver_request_total), by "VERB resource[/subresource]".
type requests map[string]float64

func (r requests) sub(o requests) requests {
	out := requests{}
	for k, v := range r {
		if d := v - o[k]; d > 0 {
			out[k] = d
		}
	}
	return out
}

func isWrite(key string) bool {
	verb, _, _ := strings.Cut(key, " ")
	return verb == "POST" || verb == "PATCH" || verb == "PUT" || verb == "DELETE" || verb == "APPLY"
}

// total sums the requests that match.
func (r requests) total(match func(string) bool) float64 {
	var n float64
	for k, v := range r {
		if match(k) {
			n += v
		}
	}
	return n
}

// eachRequestSample calls f with the labels and value of each
// apiserver_request_total sample the API server reports, and of each
// etcd_requests_total sample (its requests to etcd, by operation and
// resource), labelled metric=etcd.
func (b *bench) eachRequestSample(ctx context.Context, f func(labels map[string]string, value float64)) error {
	cs, err := kubernetes.NewForConfig(b.cfg)
	if err != nil {
		return err
	}
	raw, err := cs.RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(raw), "\n") {
		switch {
		case strings.HasPrefix(line, "apiserver_request_total{"):
			f(parseSample(line))
		case strings.HasPrefix(line, "etcd_requests_total{"):
			labels, v := parseSample(line)
			labels["metric"] = "etcd"
			f(labels, v)
		case strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_count{"):
			labels, v := parseSample(line)
			labels["metric"] = "webhook"
			f(labels, v)
		case strings.HasPrefix(line, "apiserver_admission_webhook_admission_duration_seconds_sum{"):
			labels, v := parseSample(line)
			labels["metric"] = "webhook seconds"
			f(labels, v)
		}
	}
	return nil
}

// etcdKey marks the keys of requests to etcd: "etcd operation resource";
// hookKey and hookSecondsKey, the API server's calls to each admission
// webhook and the seconds they took: "hook name".
const (
	etcdKey        = "etcd "
	hookKey        = "hook "
	hookSecondsKey = "hook seconds "
	// In the manager's figures (managerCounts): its webhook server's requests
	// and their seconds, by path.
	handlerKey        = "handled "
	handlerSecondsKey = "handled seconds "
)

// isHook reports whether a key counts admission webhook calls or their time.
func isHook(key string) bool { return strings.HasPrefix(key, hookKey) }

// apiRequests reads apiserver_request_total from the API server, and its
// requests to etcd (etcdKey).
func (b *bench) apiRequests(ctx context.Context) (requests, error) {
	out := requests{}
	return out, b.eachRequestSample(ctx, func(labels map[string]string, value float64) {
		switch labels["metric"] {
		case "etcd":
			out[etcdKey+labels["operation"]+" "+labels["resource"]] += value
			return
		case "webhook":
			out[hookKey+labels["name"]] += value
			return
		case "webhook seconds":
			out[hookSecondsKey+labels["name"]] += value
			return
		}
		key := labels["verb"] + " " + labels["resource"]
		if sub := labels["subresource"]; sub != "" {
			key += "/" + sub
		}
		out[key] += value
	})
}

// jobCreateCodes are the API server's answers to Job creates so far, by code.
func (b *bench) jobCreateCodes(ctx context.Context) (map[string]float64, error) {
	out := map[string]float64{}
	return out, b.eachRequestSample(ctx, func(labels map[string]string, value float64) {
		if labels["verb"] == "POST" && labels["resource"] == "jobs" && labels["subresource"] == "" {
			out[labels["code"]] += value
		}
	})
}

// cost is what a phase cost the API server and the processes around it,
// and the floor's hops timed while it ran (probe).
type cost struct {
	cpu  cpu
	reqs requests
	runs int
	dur  time.Duration
	hops []time.Duration
	// probeJobs are the probe's Job creates that succeeded.
	probeJobs int
	// managerCounts are the first manager's reconciles, by controller, and
	// its webhook server's requests and their seconds (handlerKey,
	// handlerSecondsKey).
	managerCounts map[string]float64
}

// measure runs phase and returns its cost, with the floor's hops timed
// meanwhile when probed.
func (b *bench) measure(ctx context.Context, runs int, probed bool, phase func() error) (cost, error) {
	progress("  %d runs", runs)
	r0, err := b.apiRequests(ctx)
	if err != nil {
		return cost{}, err
	}
	rc0 := b.managerCounts()
	c0, start := b.cpuNow(), time.Now()
	p := &probe{}
	if probed {
		p = b.startProbe(ctx)
	}
	if err := phase(); err != nil {
		p.end()
		return cost{}, err
	}
	hops := p.end()
	c1, dur := b.cpuNow(), time.Since(start)
	r1, err := b.apiRequests(ctx)
	if err != nil {
		return cost{}, err
	}
	reqs := r1.sub(r0)
	reqs["POST jobs"] -= float64(p.creates)
	rc := b.managerCounts()
	for k, v := range rc0 {
		rc[k] -= v
	}
	return cost{cpu: c1.sub(c0), reqs: reqs, runs: runs, dur: dur, hops: hops, probeJobs: p.created, managerCounts: rc}, nil
}

// perRun is a figure per run of the phase.
func (c cost) perRun(v float64) float64 { return v / float64(c.runs) }

// floorRuns: n runs' irreducible API work, made by a raw client with none
// of Conveyor's reads, Events or locks, o.concurrency at a time: the run's
// create, its 6 Job creates, the 10 status writes that tell a person where it
// stands (a stage starting or waiting, the end), and the driver's own writes
// (its 4 Approvals; the 6 Jobs completed, by the driver's Job watch as for
// real runs).
func (b *bench) floorRuns(ctx context.Context, n int) error {
	completed := b.completes.Load()
	var wg sync.WaitGroup
	errs := make(chan error, b.o.concurrency)
	for lane := 0; lane < b.o.concurrency; lane++ {
		wg.Add(1)
		go func(lane int) {
			defer wg.Done()
			for i := lane; i < n; i += b.o.concurrency {
				if err := b.floorRun(ctx, fmt.Sprintf("floor-run-%d", i)); err != nil {
					errs <- err
					return
				}
			}
		}(lane)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	// The phase ends when the driver has completed the floor's Jobs too.
	for deadline := time.Now().Add(5 * time.Minute); b.completes.Load()-completed < int64(6*n); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("the driver completed %d of the floor's %d Jobs", b.completes.Load()-completed, 6*n)
		}
	}
	return nil
}

// floorStep is one of a floor run's steps: a status write with the stage
// in that phase, then the Jobs it creates or the Approval a person gives.
type floorStep struct {
	stage    string
	phase    conveyorv1.StagePhase
	jobs     []string
	approval bool
}

// The seed's tag run, as the manager writes it at best.
var floorSteps = []floorStep{
	{"build", conveyorv1.StageRunning, []string{"compile"}, false},
	{"testing", conveyorv1.StageRunning, []string{"unit", "lint"}, false},
	{"staging", conveyorv1.StageWaiting, nil, true},
	{"staging", conveyorv1.StageRunning, []string{"deploy"}, false},
	{"pre-production", conveyorv1.StageWaiting, nil, true},
	{"pre-production", conveyorv1.StageRunning, []string{"deploy"}, false},
	{"approve", conveyorv1.StageWaiting, nil, true},
	{"production", conveyorv1.StageWaiting, nil, true},
	{"production", conveyorv1.StageRunning, []string{"deploy"}, false},
	{"", "", nil, false}, // the end
}

func (b *bench) floorRun(ctx context.Context, name string) error {
	labels := map[string]string{conveyorv1.LabelShard: floorShard}
	run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "floor", Labels: labels},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: conveyorv1.GitRef{Tag: "v1.0.0", Commit: "abcdef1"}}}
	if err := b.c.Create(ctx, run); err != nil {
		return err
	}
	var stages []map[string]string
	for _, s := range floorSteps {
		phase := conveyorv1.RunSucceeded
		if s.stage != "" {
			phase = conveyorv1.RunRunning
			if n := len(stages); n > 0 && stages[n-1]["name"] != s.stage {
				stages[n-1]["phase"] = string(conveyorv1.StageSucceeded)
			}
			if n := len(stages); n == 0 || stages[n-1]["name"] != s.stage {
				stages = append(stages, map[string]string{"name": s.stage})
			}
			stages[len(stages)-1]["phase"] = string(s.phase)
		} else {
			stages[len(stages)-1]["phase"] = string(conveyorv1.StageSucceeded)
		}
		patch, _ := json.Marshal(map[string]any{"status": map[string]any{"phase": phase, "currentStage": s.stage, "stages": stages}})
		if err := b.c.Status().Patch(ctx, run, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("floor status write: %w", err)
		}
		for _, j := range s.jobs {
			job := floorJob(name + "-" + s.stage + "-" + j)
			job.Labels = map[string]string{conveyorv1.LabelShard: floorShard, conveyorv1.LabelRunUID: string(run.UID)}
			if err := b.c.Create(ctx, job); err != nil {
				return err
			}
		}
		if s.approval {
			a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: name + "-" + s.stage, Namespace: "floor", Labels: labels},
				Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: name}, Stage: s.stage, Decision: conveyorv1.DecisionApprove}}
			if err := b.c.Create(ctx, a); err != nil {
				return err
			}
		}
	}
	return nil
}

// requestRows are the requests per run of a phase, by verb and resource,
// most first: the API server's (etcd false) or its requests to etcd.
func requestRows(c cost, etcd bool) []string {
	keys := make([]string, 0, len(c.reqs))
	for k := range c.reqs {
		if strings.HasPrefix(k, etcdKey) == etcd && !strings.HasPrefix(k, "WATCH") && !isHook(k) { // a watch is one long request
			keys = append(keys, k)
		}
	}
	sort.Slice(keys, func(i, j int) bool { return c.reqs[keys[i]] > c.reqs[keys[j]] })
	var rows []string
	for _, k := range keys {
		if per := c.perRun(c.reqs[k]); per >= 0.05 {
			rows = append(rows, fmt.Sprintf("%s %.2f", strings.TrimPrefix(k, etcdKey), per))
		}
	}
	return rows
}

// hookRows are the admission webhook calls per run of a phase, by webhook,
// with the mean time of a call, most called first; then the requests the
// manager's webhook server handled, by path, with the mean time it took.
func hookRows(c cost) []string {
	var names []string
	for k := range c.reqs {
		if name, ok := strings.CutPrefix(k, hookKey); ok && !strings.HasPrefix(k, hookSecondsKey) {
			names = append(names, name)
		}
	}
	sort.Slice(names, func(i, j int) bool { return c.reqs[hookKey+names[i]] > c.reqs[hookKey+names[j]] })
	var rows []string
	for _, name := range names {
		if n := c.reqs[hookKey+name]; c.perRun(n) >= 0.05 {
			rows = append(rows, fmt.Sprintf("%s %.2f (%.1f ms)", name, c.perRun(n), 1000*c.reqs[hookSecondsKey+name]/n))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(c.managerCounts)) {
		if path, ok := strings.CutPrefix(k, handlerKey); ok && !strings.HasPrefix(k, handlerSecondsKey) && c.managerCounts[k] > 0 {
			rows = append(rows, fmt.Sprintf("handled %s %.2f (%.1f ms)", path, c.perRun(c.managerCounts[k]), 1000*c.managerCounts[handlerSecondsKey+path]/c.managerCounts[k]))
		}
	}
	return rows
}
