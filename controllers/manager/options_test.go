package manager

import (
	"fmt"
	"os"
	"runtime"
	"testing"

	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/controller-runtime/pkg/cache"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// finishedRun decodes testdata/finished-run.json (run-0 of a `make bench`,
// as the API server returned it: six stages, four Approvals, managedFields)
// as the cache's watch does.
func finishedRun(tb testing.TB, data []byte) *conveyorv1.PipelineRun {
	run := &conveyorv1.PipelineRun{}
	if _, _, err := decoder.Decode(data, nil, run); err != nil {
		tb.Fatal(err)
	}
	return run
}

var decoder = serializer.NewCodecFactory(Scheme()).UniversalDeserializer()

// BenchmarkFinishedRunInCache prints the heap a finished run costs as the
// manager's cache keeps it (slimFinishedRun), the object alone: the
// informer's store and indexes add their entries to it. Live bytes after a
// collection, so the figure does not move with the heap's fragmentation as
// make bench's readings of a whole manager do.
//
//	go test ./controllers/manager -run '^$' -bench FinishedRunInCache
func BenchmarkFinishedRunInCache(b *testing.B) {
	data, err := os.ReadFile("testdata/finished-run.json")
	if err != nil {
		b.Fatal(err)
	}
	reportLiveBytes(b, "heap-B/run", func() (any, error) { return slimFinishedRun(finishedRun(b, data)) })
}

// BenchmarkReleaseInCache prints the heap a Release costs as the manager's
// cache keeps it (whole, but its managedFields): the release ledger updates
// a Release from that copy, so the cache cannot keep less. The Release is a
// bench's (testdata/release.json: one tag run 10 times, 10 decisions, 3
// environments) and the same with its first decision only, as a tag run
// once leaves it. Live bytes after a collection, as BenchmarkFinishedRunInCache.
//
//	go test ./controllers/manager -run '^$' -bench ReleaseInCache
func BenchmarkReleaseInCache(b *testing.B) {
	data, err := os.ReadFile("testdata/release.json")
	if err != nil {
		b.Fatal(err)
	}
	strip := cache.TransformStripManagedFields()
	for _, decisions := range []int{1, 10} {
		b.Run(fmt.Sprintf("decisions=%d", decisions), func(b *testing.B) {
			reportLiveBytes(b, "heap-B/release", func() (any, error) {
				rel := &conveyorv1.Release{}
				if _, _, err := decoder.Decode(data, nil, rel); err != nil {
					return nil, err
				}
				if len(rel.Status.Decisions) < decisions {
					return nil, fmt.Errorf("testdata/release.json has %d decisions, want %d", len(rel.Status.Decisions), decisions)
				}
				// A copy: the dropped decisions are not kept alive.
				rel.Status.Decisions = append([]conveyorv1.ReleaseDecision(nil), rel.Status.Decisions[:decisions]...)
				return strip(rel)
			})
		})
	}
}

// reportLiveBytes keeps b.N objects as cached makes them and reports the
// live heap they hold per object, after a collection on both sides.
func reportLiveBytes(b *testing.B, unit string, cached func() (any, error)) {
	kept := make([]any, 0, b.N)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ResetTimer()
	for range b.N {
		o, err := cached()
		if err != nil {
			b.Fatal(err)
		}
		kept = append(kept, o)
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/float64(b.N), unit)
	runtime.KeepAlive(kept)
}

// TestSlimFinishedRunKeepsWhatIsRead: a finished run in the cache still
// answers what is read of it there: history pruning (phase, times, the
// Pipeline), the Approval controller (each stage's name, phase and
// decisions), locks (finished), the cleanup finalizer.
func TestSlimFinishedRunKeepsWhatIsRead(t *testing.T) {
	data, err := os.ReadFile("testdata/finished-run.json")
	if err != nil {
		t.Fatal(err)
	}
	full := finishedRun(t, data)
	obj, err := slimFinishedRun(finishedRun(t, data))
	if err != nil {
		t.Fatal(err)
	}
	slim := obj.(*conveyorv1.PipelineRun)
	if slim.Status.PipelineSpec != nil || slim.ManagedFields != nil || slim.Status.Conditions != nil {
		t.Errorf("kept what no one reads of a finished run: snapshot %v, managedFields %d, conditions %d",
			slim.Status.PipelineSpec != nil, len(slim.ManagedFields), len(slim.Status.Conditions))
	}
	if slim.Name != full.Name || slim.UID != full.UID || slim.Spec.PipelineRef != full.Spec.PipelineRef ||
		slim.Status.Phase != full.Status.Phase || !slim.Status.CompletionTime.Equal(full.Status.CompletionTime) ||
		!slim.Status.StartTime.Equal(full.Status.StartTime) || !slim.CreationTimestamp.Equal(&full.CreationTimestamp) ||
		len(slim.Finalizers) != 1 || slim.Finalizers[0] != conveyorv1.CleanupFinalizer {
		t.Errorf("lost what pruning or cleanup reads: %+v", slim.ObjectMeta)
	}
	if len(slim.Status.Stages) != len(full.Status.Stages) {
		t.Fatalf("stages: %d, want %d", len(slim.Status.Stages), len(full.Status.Stages))
	}
	for i, ss := range slim.Status.Stages {
		want := full.Status.Stages[i]
		if ss.Name != want.Name || ss.Phase != want.Phase || len(ss.Decisions) != len(want.Decisions) {
			t.Errorf("stage %s: %+v, want name, phase and decisions of %+v", want.Name, ss, want)
			continue
		}
		for j, d := range ss.Decisions {
			if d != want.Decisions[j] {
				t.Errorf("stage %s decision %d: %+v, want %+v", want.Name, j, d, want.Decisions[j])
			}
		}
	}
	// The Approval controller's verdict on each Approval the run recorded is
	// the same against the slim run as against the full one.
	for _, ss := range full.Status.Stages {
		for _, d := range ss.Decisions {
			a := &conveyorv1.Approval{}
			a.Name, a.Namespace, a.Spec.Stage = d.Approval, full.Namespace, ss.Name
			a.Spec.PipelineRunRef.Name = full.Name
			got, want := engine.EvaluateApproval(slim, a, true), engine.EvaluateApproval(full, a, true)
			if got != want || !got.Accepted {
				t.Errorf("Approval %s: verdict %+v on the cached run, %+v on the stored one", d.Approval, got, want)
			}
		}
	}
	if !engine.ReleasedBy(slim, "production") {
		t.Error("a finished run in the cache still holds a lock")
	}
}
