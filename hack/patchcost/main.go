// patchcost measures what one status patch of a PipelineRun costs the API
// server and etcd, by the run's size: their CPU seconds over a few hundred
// patches made one after another (4 at a time) on an API server that does
// nothing else, with no manager and no webhooks.
//
// The run is a finished run of the bench (controllers/manager/testdata),
// stored as it is, without its pipeline snapshot, and cut down to the
// floor's size (each stage's name and phase); each patch sends what the
// manager sends when a stage changes (the stages whole, since a merge patch
// replaces a list, and the current stage), and one variant sends the current
// stage alone, to tell the patch's size from the stored run's. The variants
// take turns, round after round, so a drift of the machine's speed spreads
// over all of them.
//
//	KUBEBUILDER_ASSETS=bin/k8s/<version> go run ./hack/patchcost
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

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/hack/internal/proc"
)

type variant struct {
	name string
	// shape makes the stored status from the finished run's.
	shape func(st *conveyorv1.PipelineRunStatus)
	// stagesInPatch: each patch sends the stages whole, as the manager does
	// when a stage changes.
	stagesInPatch bool
}

var variants = []variant{
	{"as stored", func(*conveyorv1.PipelineRunStatus) {}, true},
	{"as stored, patch without the stages", func(*conveyorv1.PipelineRunStatus) {}, false},
	{"without the pipeline snapshot", func(st *conveyorv1.PipelineRunStatus) { st.PipelineSpec = nil }, true},
	{"floor-sized: stages by name and phase", func(st *conveyorv1.PipelineRunStatus) {
		st.PipelineSpec, st.Conditions = nil, nil
		for i := range st.Stages {
			st.Stages[i] = conveyorv1.StageStatus{Name: st.Stages[i].Name, Phase: st.Stages[i].Phase}
		}
	}, true},
}

func main() {
	root := flag.String("root", ".", "the repository's root")
	runs := flag.Int("runs", 30, "runs per variant and round")
	patches := flag.Int("patches", 10, "status patches per run")
	rounds := flag.Int("rounds", 3, "rounds")
	flag.Parse()
	if err := run(*root, *runs, *patches, *rounds); err != nil {
		fmt.Fprintln(os.Stderr, "patchcost:", err)
		os.Exit(1)
	}
}

// cost is one variant's figures in one round.
type cost struct {
	bytes, managedFields int
	apiserver, etcd      float64 // ms per patch
}

func run(root string, runs, patches, rounds int) error {
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
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ci"}}); err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(root, "controllers/manager/testdata/finished-run.json"))
	if err != nil {
		return err
	}
	src := &conveyorv1.PipelineRun{}
	if err := json.Unmarshal(raw, src); err != nil {
		return err
	}
	got := make([][]cost, len(variants))
	for round := range rounds {
		for v := range variants {
			co, err := measure(ctx, c, src, variants[v], fmt.Sprintf("r%d-v%d", round, v), runs, patches)
			if err != nil {
				return err
			}
			got[v] = append(got[v], co)
		}
	}
	fmt.Printf("One PipelineRun status patch: the API server's and etcd's CPU, %d runs x %d patches per variant and round, %d rounds\n", runs, patches, rounds)
	fmt.Printf("%-40s %-26s %-30s %s\n", "run", "JSON bytes (managedFields)", "API server ms per patch", "etcd ms per patch")
	for v, cs := range got {
		var api, etcd []string
		for _, co := range cs {
			api = append(api, fmt.Sprintf("%.2f", co.apiserver))
			etcd = append(etcd, fmt.Sprintf("%.2f", co.etcd))
		}
		fmt.Printf("%-40s %-26s %-30s %s\n", variants[v].name, fmt.Sprintf("%d (%d)", cs[0].bytes, cs[0].managedFields),
			strings.Join(api, ", ")+fmt.Sprintf("; median %.2f", median(cs, func(c cost) float64 { return c.apiserver })),
			strings.Join(etcd, ", "))
	}
	return nil
}

// measure creates runs in the variant's shape and patches their status,
// reading the API server's and etcd's CPU before and after the patches.
func measure(ctx context.Context, c client.Client, src *conveyorv1.PipelineRun, v variant, prefix string, runs, patches int) (cost, error) {
	st := src.Status.DeepCopy()
	v.shape(st)
	objs := make([]*conveyorv1.PipelineRun, runs)
	for i := range objs {
		r := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), Namespace: "ci"}, Spec: *src.Spec.DeepCopy()}
		if err := c.Create(ctx, r); err != nil {
			return cost{}, err
		}
		r.Status = *st.DeepCopy()
		if err := c.Status().Update(ctx, r); err != nil {
			return cost{}, err
		}
		objs[i] = r
	}
	api0, etcd0 := proc.ChildrenCPU("kube-apiserver"), proc.ChildrenCPU("etcd")
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < runs; i += 4 {
				for k := range patches {
					// A change each time: the current stage moves on.
					patch := map[string]any{"currentStage": st.Stages[k%len(st.Stages)].Name}
					if v.stagesInPatch {
						patch["stages"] = st.Stages
					}
					body, err := json.Marshal(map[string]any{"status": patch})
					if err == nil {
						err = c.Status().Patch(ctx, objs[i], client.RawPatch(types.MergePatchType, body))
					}
					if err != nil {
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
	n := float64(runs * patches)
	co := cost{
		apiserver: (proc.ChildrenCPU("kube-apiserver") - api0) * 1000 / n,
		etcd:      (proc.ChildrenCPU("etcd") - etcd0) * 1000 / n,
	}
	stored := &conveyorv1.PipelineRun{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(objs[0]), stored); err != nil {
		return co, err
	}
	whole, err := json.Marshal(stored)
	if err != nil {
		return co, err
	}
	mf, err := json.Marshal(stored.ManagedFields)
	co.bytes, co.managedFields = len(whole), len(mf)
	return co, err
}

func median(cs []cost, f func(cost) float64) float64 {
	vs := make([]float64, 0, len(cs))
	for _, c := range cs {
		vs = append(vs, f(c))
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2]
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2
}
