// patchcost measures what one write of each kind a tag run makes costs the
// API server and etcd: their CPU seconds over a few hundred writes made 4 at
// a time, on an API server that does nothing else, with no manager and no
// webhooks. The objects are those of a bench run (make bench with --dump;
// kept in hack/patchcost/testdata), written again as the manager writes them:
//
//   - a PipelineRun's status patch, which sends the stages whole (a merge
//     patch replaces a list) and the current stage; with the run as stored,
//     without its pipeline snapshot, and cut down to the floor's size (each
//     stage's name and phase); and once sending the current stage alone, to
//     tell the patch's size from the stored run's;
//   - an Approval's status patch (its condition);
//   - an Environment's status update (the lock taken), with the deploy
//     record the bench left in it;
//   - a Release's update (the ledger's record);
//   - an Event's create, and a Job's create.
//
// The kinds take turns, round after round, so a drift of the machine's speed
// spreads over all of them.
//
//	make patch-cost
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/hack/internal/proc"
)

func main() {
	root := flag.String("root", ".", "the repository's root")
	objects := flag.String("objects", "hack/patchcost/testdata", "the bench's objects (make bench BENCH_FLAGS=--dump=DIR); a relative path is under the root")
	objs := flag.Int("objects-per-kind", 30, "objects of each kind per round")
	writes := flag.Int("writes", 10, "writes per object")
	rounds := flag.Int("rounds", 3, "rounds")
	flag.Parse()
	dir := *objects
	if !filepath.IsAbs(dir) {
		dir = filepath.Join(*root, dir)
	}
	if err := run(*root, dir, *objs, *writes, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "patchcost:", err)
		os.Exit(1)
	}
}

// kind is one kind of write: prepare makes n objects for it (named with
// the prefix) and returns the write to make, the k-th time, to the i-th.
type kind struct {
	name    string
	prepare func(ctx context.Context, c client.Client, prefix string, n int) (write func(i, k int) error, sample client.Object, err error)
}

// cost is one kind's figures in one round.
type cost struct {
	bytes, managedFields int
	apiserver, etcd      float64 // ms per write
}

func run(root, dir string, n, writes, rounds int) error {
	var src sources
	if err := src.read(dir); err != nil {
		return err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := conveyorv1.AddToScheme(scheme); err != nil {
		return err
	}
	env := &envtest.Environment{CRDDirectoryPaths: []string{filepath.Join(root, "config/crd/bases")}, ErrorIfCRDPathMissing: true}
	cfg, err := env.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS, cfg.Burst = 1000, 1000
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	ctx := context.Background()
	for _, ns := range []string{src.run.Namespace, src.job.Namespace} {
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	kinds := src.kinds()
	got := make([][]cost, len(kinds))
	for round := range rounds {
		for i, k := range kinds {
			co, err := measure(ctx, c, k, fmt.Sprintf("r%d-k%d", round, i), n, writes)
			if err != nil {
				return fmt.Errorf("%s: %w", k.name, err)
			}
			got[i] = append(got[i], co)
		}
	}
	fmt.Printf("One write's CPU, the API server's and etcd's: %d objects x %d writes per kind and round, %d rounds\n", n, writes, rounds)
	fmt.Printf("%-52s %-26s %-32s %s\n", "write", "JSON bytes (managedFields)", "API server ms per write", "etcd ms per write")
	for i, cs := range got {
		var api, etcd []string
		for _, co := range cs {
			api = append(api, fmt.Sprintf("%.2f", co.apiserver))
			etcd = append(etcd, fmt.Sprintf("%.2f", co.etcd))
		}
		fmt.Printf("%-52s %-26s %-32s %s\n", kinds[i].name, fmt.Sprintf("%d (%d)", cs[0].bytes, cs[0].managedFields),
			strings.Join(api, ", ")+fmt.Sprintf("; median %.2f", median(cs)), strings.Join(etcd, ", "))
	}
	return nil
}

// measure prepares the objects of a kind and writes them, reading the API
// server's and etcd's CPU before and after the writes.
func measure(ctx context.Context, c client.Client, k kind, prefix string, n, writes int) (cost, error) {
	write, sample, err := k.prepare(ctx, c, prefix, n)
	if err != nil {
		return cost{}, err
	}
	api0, etcd0 := proc.ChildrenCPU("kube-apiserver"), proc.ChildrenCPU("etcd")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				for j := range writes {
					if err := write(i, j); err != nil {
						errs <- err
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return cost{}, err
	}
	total := float64(n * writes)
	co := cost{
		apiserver: (proc.ChildrenCPU("kube-apiserver") - api0) * 1000 / total,
		etcd:      (proc.ChildrenCPU("etcd") - etcd0) * 1000 / total,
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(sample), sample); err != nil {
		return co, err
	}
	whole, err := json.Marshal(sample)
	if err != nil {
		return co, err
	}
	mf, err := json.Marshal(sample.GetManagedFields())
	co.bytes, co.managedFields = len(whole), len(mf)
	return co, err
}

func median(cs []cost) float64 {
	vs := make([]float64, 0, len(cs))
	for _, c := range cs {
		vs = append(vs, c.apiserver)
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}

// sources are the bench's objects.
type sources struct {
	run         conveyorv1.PipelineRun
	approval    conveyorv1.Approval
	environment conveyorv1.Environment
	release     conveyorv1.Release
	event       eventsv1.Event
	job         batchv1.Job
}

func (s *sources) read(dir string) error {
	for name, into := range map[string]any{"run": &s.run, "approval": &s.approval, "environment": &s.environment,
		"release": &s.release, "event": &s.event, "job": &s.job} {
		data, err := os.ReadFile(filepath.Join(dir, name+".json"))
		if err != nil {
			return err
		}
		if err := json.Unmarshal(data, into); err != nil {
			return fmt.Errorf("%s.json: %w", name, err)
		}
	}
	return nil
}

// fresh is the object's metadata as a client creates it: its name, namespace,
// labels and annotations.
func fresh(m metav1.ObjectMeta, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: m.Namespace, Labels: m.Labels, Annotations: m.Annotations}
}

// createAll creates n objects made by mk, and writes the status of each
// where status is set.
func createAll[T client.Object](ctx context.Context, c client.Client, n int, mk func(i int) T, status func(T)) ([]T, error) {
	out := make([]T, n)
	for i := range out {
		o := mk(i)
		if err := c.Create(ctx, o); err != nil {
			return nil, err
		}
		if status != nil {
			status(o)
			if err := c.Status().Update(ctx, o); err != nil {
				return nil, err
			}
		}
		out[i] = o
	}
	return out, nil
}

func (s *sources) kinds() []kind {
	runPatch := func(name string, shape func(*conveyorv1.PipelineRunStatus), withStages bool) kind {
		return kind{name, func(ctx context.Context, c client.Client, prefix string, n int) (func(i, k int) error, client.Object, error) {
			st := s.run.Status.DeepCopy()
			shape(st)
			runs, err := createAll(ctx, c, n, func(i int) *conveyorv1.PipelineRun {
				return &conveyorv1.PipelineRun{ObjectMeta: fresh(s.run.ObjectMeta, fmt.Sprintf("%s-%d", prefix, i)), Spec: *s.run.Spec.DeepCopy()}
			}, func(r *conveyorv1.PipelineRun) { r.Status = *st.DeepCopy() })
			if err != nil {
				return nil, nil, err
			}
			return func(i, k int) error {
				// A change each time: the current stage moves on.
				patch := map[string]any{"currentStage": st.Stages[k%len(st.Stages)].Name}
				if withStages {
					patch["stages"] = st.Stages
				}
				body, err := json.Marshal(map[string]any{"status": patch})
				if err != nil {
					return err
				}
				return c.Status().Patch(ctx, runs[i].DeepCopy(), client.RawPatch(types.MergePatchType, body))
			}, runs[0], nil
		}}
	}
	same := func(*conveyorv1.PipelineRunStatus) {}
	return []kind{
		runPatch("PipelineRun status patch, as stored", same, true),
		runPatch("PipelineRun status patch, only the current stage", same, false),
		runPatch("PipelineRun status patch, without the snapshot", func(st *conveyorv1.PipelineRunStatus) { st.PipelineSpec = nil }, true),
		runPatch("PipelineRun status patch, floor-sized run", func(st *conveyorv1.PipelineRunStatus) {
			st.PipelineSpec, st.Conditions = nil, nil
			for i := range st.Stages {
				st.Stages[i] = conveyorv1.StageStatus{Name: st.Stages[i].Name, Phase: st.Stages[i].Phase}
			}
		}, true),
		{"Approval status patch", func(ctx context.Context, c client.Client, prefix string, n int) (func(i, k int) error, client.Object, error) {
			as, err := createAll(ctx, c, n, func(i int) *conveyorv1.Approval {
				return &conveyorv1.Approval{ObjectMeta: fresh(s.approval.ObjectMeta, fmt.Sprintf("%s-%d", prefix, i)), Spec: *s.approval.Spec.DeepCopy()}
			}, func(a *conveyorv1.Approval) { a.Status = *s.approval.Status.DeepCopy() })
			if err != nil {
				return nil, nil, err
			}
			return func(i, k int) error {
				st := s.approval.Status.DeepCopy()
				for j := range st.Conditions {
					st.Conditions[j].Message = fmt.Sprintf("%s (%d)", st.Conditions[j].Message, k)
				}
				body, err := json.Marshal(map[string]any{"status": st})
				if err != nil {
					return err
				}
				return c.Status().Patch(ctx, as[i].DeepCopy(), client.RawPatch(types.MergePatchType, body))
			}, as[0], nil
		}},
		{"Environment status update (the lock taken)", func(ctx context.Context, c client.Client, prefix string, n int) (func(i, k int) error, client.Object, error) {
			es, err := createAll(ctx, c, n, func(i int) *conveyorv1.Environment {
				spec := *s.environment.Spec.DeepCopy()
				spec.Namespace = fmt.Sprintf("%s-%d", prefix, i)
				return &conveyorv1.Environment{ObjectMeta: fresh(s.environment.ObjectMeta, fmt.Sprintf("%s-%d", prefix, i)), Spec: spec}
			}, func(e *conveyorv1.Environment) { e.Status = *s.environment.Status.DeepCopy() })
			if err != nil {
				return nil, nil, err
			}
			return func(i, k int) error {
				// Each object is written by one goroutine: its copy is current.
				e := es[i]
				e.Status.HeldSince = &metav1.Time{Time: time.Now()}
				e.Status.HolderStage = s.run.Status.Stages[k%len(s.run.Status.Stages)].Name
				return c.Status().Update(ctx, e)
			}, es[0].DeepCopy(), nil
		}},
		{"Release update (the ledger's record)", func(ctx context.Context, c client.Client, prefix string, n int) (func(i, k int) error, client.Object, error) {
			rs, err := createAll(ctx, c, n, func(i int) *conveyorv1.Release {
				return &conveyorv1.Release{ObjectMeta: fresh(s.release.ObjectMeta, fmt.Sprintf("%s-%d", prefix, i)),
					Spec: *s.release.Spec.DeepCopy(), Status: *s.release.Status.DeepCopy()}
			}, nil)
			if err != nil {
				return nil, nil, err
			}
			return func(i, k int) error {
				r := rs[i]
				r.Status.DecidedAt = &metav1.Time{Time: time.Now()}
				return c.Update(ctx, r)
			}, rs[0].DeepCopy(), nil
		}},
		{"Event create", func(ctx context.Context, c client.Client, prefix string, n int) (func(i, k int) error, client.Object, error) {
			mk := func(name string) *eventsv1.Event {
				e := s.event.DeepCopy()
				e.ObjectMeta = fresh(s.event.ObjectMeta, name)
				return e
			}
			first := mk(prefix + "-sample")
			return func(i, k int) error {
				return c.Create(ctx, mk(fmt.Sprintf("%s-%d-%d", prefix, i, k)))
			}, first, c.Create(ctx, first)
		}},
		{"Job create", func(ctx context.Context, c client.Client, prefix string, n int) (func(i, k int) error, client.Object, error) {
			mk := func(name string) *batchv1.Job {
				j := &batchv1.Job{ObjectMeta: fresh(s.job.ObjectMeta, name), Spec: *s.job.Spec.DeepCopy()}
				// What the API server adds at create, it adds again.
				j.Spec.Selector, j.Spec.ManualSelector = nil, nil
				j.Labels, j.Spec.Template.Labels = ownLabels(j.Labels), ownLabels(j.Spec.Template.Labels)
				return j
			}
			first := mk(prefix + "-sample")
			return func(i, k int) error {
				return c.Create(ctx, mk(fmt.Sprintf("%s-%d-%d", prefix, i, k)))
			}, first, c.Create(ctx, first)
		}},
	}
}

// ownLabels are a Job's labels without those the API server gives it at
// create (its controller UID and name).
func ownLabels(in map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range in {
		if !strings.Contains(k, "controller-uid") && !strings.Contains(k, "job-name") {
			out[k] = v
		}
	}
	return out
}
