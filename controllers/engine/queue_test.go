package engine

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestQueueVerdict drives the environment queue's policy: held, take,
// wait for the holder or an older run, superseded (NewestFirst).
func TestQueueVerdict(t *testing.T) {
	run := func(name string, age int, queue conveyorv1.EnvironmentQueue, pipeline string) *conveyorv1.PipelineRun {
		r := newRun(tag)
		r.Name, r.UID = name, types.UID("uid-"+name)
		r.CreationTimestamp = metav1.NewTime(t0.Add(time.Duration(age) * time.Second))
		r.Spec.PipelineRef.Name = pipeline
		r.Status.PipelineSpec.EnvironmentQueue = queue
		return r
	}
	const oldest, newest = conveyorv1.QueueOldestFirst, conveyorv1.QueueNewestFirst
	me := run("b", 2, oldest, "shop")
	meNewest := run("b", 2, newest, "shop")
	older := run("a", 1, oldest, "web")
	newer := run("c", 3, newest, "shop")
	holder := func(r *conveyorv1.PipelineRun, released bool) *LockHolder {
		h := &LockHolder{Run: RunKey(r), Stage: "production", UID: r.UID, Released: released}
		if !released {
			h.Deploying = r
		}
		return h
	}
	for _, tc := range []struct {
		name string
		run  *conveyorv1.PipelineRun
		lock Lock
		want EnvironmentFact
	}{
		{"never taken, nobody queued", me, Lock{}, EnvironmentFact{Take: true}},
		{"held by this stage", me, Lock{Holder: &LockHolder{Run: RunKey(me), Stage: "production", UID: me.UID}}, EnvironmentFact{Held: true}},
		{"held by an earlier stage of this run", me, Lock{Holder: &LockHolder{Run: RunKey(me), Stage: "staging", UID: me.UID}}, EnvironmentFact{Take: true}},
		{"held by another run deploying", me, Lock{Holder: holder(older, false)}, EnvironmentFact{Holder: RunKey(older), HolderStage: "production"}},
		{"released by another run", me, Lock{Holder: holder(older, true)}, EnvironmentFact{Take: true}},
		{"free, an older run queued first", me, Lock{Queued: []*conveyorv1.PipelineRun{older, me}}, EnvironmentFact{Ahead: RunKey(older)}},
		{"free, a newer run queued after", me, Lock{Queued: []*conveyorv1.PipelineRun{me, newer}}, EnvironmentFact{Take: true}},
		{"NewestFirst: a newer run of the Pipeline queued", meNewest, Lock{Queued: []*conveyorv1.PipelineRun{meNewest, newer}}, EnvironmentFact{SupersededBy: RunKey(newer)}},
		{"NewestFirst: a newer run of the Pipeline deploying", meNewest, Lock{Holder: holder(newer, false)}, EnvironmentFact{SupersededBy: RunKey(newer)}},
		{"NewestFirst: an older run of another Pipeline queued first", meNewest, Lock{Queued: []*conveyorv1.PipelineRun{older, meNewest}}, EnvironmentFact{Ahead: RunKey(older)}},
		{"an older superseded run does not go first", newer, Lock{Queued: []*conveyorv1.PipelineRun{meNewest, newer}}, EnvironmentFact{Take: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := QueueVerdict(tc.run, "production", tc.lock); got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if head := QueueHead([]*conveyorv1.PipelineRun{meNewest, newer}, ""); head != newer {
		t.Fatalf("queue head %v, want the newest run of a NewestFirst Pipeline", head)
	}
	if head := QueueHead([]*conveyorv1.PipelineRun{older, me}, older.UID); head != me {
		t.Fatalf("queue head %v, want the next run after the one leaving", head)
	}
}

// TestDecideTakesFreeLock: with the lock observed free, the stage starts and
// the plan takes the lock; held by another, it stays queued and takes nothing.
func TestDecideTakesFreeLock(t *testing.T) {
	tested := done("build/compile", "testing/unit", "testing/lint")
	trigger := []ApprovalFact{approve("a1", "staging", "dev")}
	run := newRun(branch)
	wanted := LocksWanted(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: t0}))
	if len(wanted) != 1 || wanted[0] != (LockRequest{Stage: "staging", Environment: "staging"}) {
		t.Fatalf("locks wanted %v", wanted)
	}
	free := DecideRun(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: t0, Locks: map[string]Lock{"staging": {}}}))
	if free.Status.Phase != conveyorv1.RunRunning || len(free.Create) != 1 || len(free.Take) != 1 || len(free.Acquire) != 0 {
		t.Fatalf("free lock: phase %s creates %d take %v acquire %v", free.Status.Phase, len(free.Create), free.Take, free.Acquire)
	}
	other := newRun(branch)
	other.Name, other.UID = "shop-0", "uid-0"
	busy := DecideRun(observed(Facts{Run: run, Jobs: tested, Approvals: trigger, Now: t0,
		Locks: map[string]Lock{"staging": {Holder: &LockHolder{Run: RunKey(other), Stage: "staging", UID: other.UID, Deploying: other}}}}))
	if busy.Status.Phase != conveyorv1.RunQueued || len(busy.Create) != 0 || len(busy.Take) != 0 || busy.RequeueAfter != QueuedRecheck {
		t.Fatalf("busy lock: phase %s creates %d take %v requeue %s", busy.Status.Phase, len(busy.Create), busy.Take, busy.RequeueAfter)
	}
	// A lock that could not be taken keeps the stage queued, its Jobs unmade.
	blocked := free
	blocked.Status = *free.Status.DeepCopy()
	msgs := blocked.Record(Outcome{Unlocked: free.Take, Blocked: map[string]string{"staging": conveyorv1.ReasonNamespaceNotFound}})
	ss := blocked.Status.Stages[2]
	if blocked.Status.Phase != conveyorv1.RunQueued || ss.Phase != conveyorv1.StageQueued || ss.Jobs[0].JobName != "" ||
		blocked.Health != Stalled || blocked.Reason != conveyorv1.ReasonNamespaceNotFound || len(msgs) != 1 {
		t.Fatalf("unlocked: phase %s stage %s job %q health %d reason %s", blocked.Status.Phase, ss.Phase, ss.Jobs[0].JobName, blocked.Health, blocked.Reason)
	}
}
