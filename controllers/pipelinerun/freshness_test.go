package pipelinerun

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestFreshness: a run read from a cache behind this manager's own write
// waits once for the write's watch event, then is read from the API server; a
// spec change by someone else is read at once; a cancelled run about to end
// as never started is always read from the API server.
func TestFreshness(t *testing.T) {
	run := func(rv string, gen int64) *conveyorv1.PipelineRun {
		return &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{UID: "uid-1", ResourceVersion: rv, Generation: gen},
			Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunRunning, PipelineSpec: &conveyorv1.PipelineSpec{}}}
	}
	f := newFreshness(10)
	if got := f.check(run("1", 1)); got != useCache {
		t.Fatalf("a run never written: %d, want useCache", got)
	}
	f.wrote(run("5", 1), false)
	if got := f.check(run("5", 1)); got != useCache {
		t.Fatalf("the cache shows the write: %d, want useCache", got)
	}
	if got := f.check(run("4", 1)); got != waitForCache {
		t.Fatalf("the cache is behind the write: %d, want waitForCache", got)
	}
	if got := f.check(run("4", 1)); got != readAPI {
		t.Fatalf("still behind after waiting: %d, want readAPI", got)
	}
	f.wrote(run("7", 1), false)
	if got := f.check(run("6", 2)); got != readAPI {
		t.Fatalf("someone changed the spec: %d, want readAPI", got)
	}
	// A finished run caught up is forgotten: never decided again.
	done := run("7", 1)
	done.Status.Phase = conveyorv1.RunSucceeded
	if got := f.check(done); got != useCache {
		t.Fatalf("finished and caught up: %d", got)
	}
	if _, ok := f.latest.Get(done.UID); ok {
		t.Fatal("a finished run caught up is still remembered")
	}
	// A write of a run that had finished is not remembered.
	f.wrote(run("9", 1), true)
	if got := f.check(run("8", 1)); got != useCache {
		t.Fatalf("a finished run's write was remembered: %d", got)
	}
	cancelled := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{UID: "uid-2"}, Spec: conveyorv1.PipelineRunSpec{Cancelled: true}}
	if got := f.check(cancelled); got != readAPI {
		t.Fatalf("a cancelled run without a snapshot: %d, want readAPI", got)
	}

	once := newOnceSet(10)
	if !once.first("uid-1", "build/Running") || once.first("uid-1", "build/Running") || !once.first("uid-2", "build/Running") {
		t.Fatal("a transition is told once per run")
	}
}
