package engine

import (
	"errors"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestTransitions: what a person is told as a run moves, keyed so that a
// stale reconcile computing the same move again tells it once.
func TestTransitions(t *testing.T) {
	run := newRun(branch)
	building := decide(Facts{Run: run, Now: t0})
	tested := decide(Facts{Run: withStatus(run.DeepCopy(), building), Jobs: done("build/compile", "testing/unit", "testing/lint"), Now: t0})
	triggered := decide(Facts{Run: withStatus(run.DeepCopy(), tested), Jobs: done("build/compile", "testing/unit", "testing/lint"),
		Approvals: []ApprovalFact{approve("a1", "staging", "dev")}, Now: t0})
	unstarted := &conveyorv1.PipelineRunStatus{}
	for _, tc := range []struct {
		name string
		old  *conveyorv1.PipelineRunStatus
		next Plan
		want []string // keys, in order
	}{
		{"start", unstarted, building, []string{"run/started", "build/Running", "testing/Pending", "staging/Pending", "pre-production/Pending"}},
		{"testing passes, staging waits", &building.Status, tested, []string{"build/Succeeded", "testing/Succeeded", "staging/Waiting"}},
		{"a trigger", &tested.Status, triggered, []string{"staging/decision/a1", "staging/Running"}},
		{"nothing new", &triggered.Status, triggered, nil},
		{"a run that can never start", unstarted, Plan{Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunFailed}, Reason: conveyorv1.ReasonRefNotAllowed,
			Message: "not allowed", Terminal: errors.New("not allowed")}, []string{"run/Failed"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var keys []string
			for _, tr := range Transitions(tc.old, &tc.next) {
				keys = append(keys, tr.Key)
			}
			if len(keys) != len(tc.want) {
				t.Fatalf("got %v, want %v", keys, tc.want)
			}
			for i := range keys {
				if keys[i] != tc.want[i] {
					t.Fatalf("got %v, want %v", keys, tc.want)
				}
			}
		})
	}
	// Events only for what a person acts on or looks for: the wait, not the
	// starts and successes (those are in the status); a success that
	// recorded results names them.
	told := map[string]string{}
	for _, p := range []struct {
		old  *conveyorv1.PipelineRunStatus
		next Plan
	}{{unstarted, building}, {&building.Status, tested}, {&tested.Status, triggered}} {
		for _, tr := range Transitions(p.old, &p.next) {
			if tr.Event != nil {
				told[tr.Key] = tr.Event.Reason
			}
		}
	}
	if len(told) != 1 || told["staging/Waiting"] != conveyorv1.EventStageWaiting {
		t.Fatalf("Events told from start to the trigger: %v, want only staging/Waiting", told)
	}
	withResult := tested.Status.DeepCopy()
	withResult.Stages[0].Jobs[0].Results = []conveyorv1.Result{{Name: "digest", Value: "sha256:1"}}
	for _, tr := range Transitions(&building.Status, &Plan{Status: *withResult}) {
		if tr.Key == "build/Succeeded" && (tr.Event == nil || tr.Event.Reason != conveyorv1.EventStageSucceeded) {
			t.Fatalf("a success with results is told: %+v", tr.Event)
		}
	}
	ended := Transitions(&building.Status, &Plan{Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunFailed}, Reason: conveyorv1.ReasonRefNotAllowed, Terminal: errors.New("x"), Message: "x"})
	if e := ended[len(ended)-1].Event; e == nil || e.Reason != conveyorv1.ReasonRefNotAllowed || e.Action != "Validate" {
		t.Fatalf("a run that could never start is told as such: %+v", e)
	}
	cancelled := Transitions(&building.Status, &Plan{Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunCancelled}})
	if e := cancelled[len(cancelled)-1].Event; e == nil || e.Reason != "Cancelled" || e.Type != "Normal" || e.Message != "Run cancelled" {
		t.Fatalf("cancelled run: %+v", e)
	}
	// A rerun tells the stages it reuses, not their phases.
	reused := Plan{Status: conveyorv1.PipelineRunStatus{PipelineSpec: seed(), Stages: []conveyorv1.StageStatus{{Name: "build", Phase: conveyorv1.StageSucceeded, ReusedFrom: "shop-0"}}}}
	got := Transitions(unstarted, &reused)
	if len(got) != 2 || got[1].Kind != StageReused || got[1].Event == nil {
		t.Fatalf("rerun start: %+v", got)
	}
}

// TestPrune: the history keeps the newest runs of each kind, whatever a
// whole-second tie says about which ended last.
func TestPrune(t *testing.T) {
	at := func(name string, phase conveyorv1.RunPhase, created, ended int) *conveyorv1.PipelineRun {
		r := newRun(branch)
		r.Name, r.UID = name, types.UID("uid-"+name)
		r.CreationTimestamp = metav1.NewTime(t0.Add(time.Duration(created) * time.Second))
		r.Status.Phase = phase
		if ended >= 0 {
			r.Status.CompletionTime = ptr.To(metav1.NewTime(t0.Add(time.Duration(ended) * time.Second)))
		}
		return r
	}
	ok1, ok2, ok3 := at("ok1", conveyorv1.RunSucceeded, 0, 10), at("ok2", conveyorv1.RunSucceeded, 1, 11), at("ok3", conveyorv1.RunSucceeded, 2, 12)
	bad1, bad2 := at("z-bad1", conveyorv1.RunFailed, 3, 20), at("a-bad2", conveyorv1.RunRejected, 3, 20)
	running := at("running", conveyorv1.RunRunning, 0, -1)
	names := func(ps []Pruned) []string {
		var out []string
		for _, p := range ps {
			out = append(out, p.Run.Name)
		}
		return out
	}
	history := &conveyorv1.History{Succeeded: ptr.To[int32](2), Failed: ptr.To[int32](1)}
	got := names(Prune([]*conveyorv1.PipelineRun{running, ok1, ok2, ok3, bad1, bad2}, history, nil))
	if len(got) != 2 || got[0] != "ok1" || got[1] != "a-bad2" {
		t.Fatalf("pruned %v, want ok1 and (by name, a tie) a-bad2", got)
	}
	// Seen ending last, a-bad2 is the newest whatever its name says.
	later := func(a, b *conveyorv1.PipelineRun) (bool, bool) { return a == bad2, true }
	got = names(Prune([]*conveyorv1.PipelineRun{running, ok1, ok2, ok3, bad1, bad2}, history, later))
	if len(got) != 2 || got[1] != "z-bad1" {
		t.Fatalf("pruned %v, want z-bad1 (it ended before a-bad2)", got)
	}
	if got := Prune([]*conveyorv1.PipelineRun{ok1, ok2, ok3}, nil, nil); len(got) != 0 {
		t.Fatalf("the default history (3 succeeded) pruned %v", names(got))
	}
}
