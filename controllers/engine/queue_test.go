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

// TestHandOver: the lock of a deploy that ends goes to the queue's head
// only where that head could deploy now, and only the stages that held or
// waited for a lock and end now count as ended.
func TestHandOver(t *testing.T) {
	queued := func(name string, age int, stage, env string) *conveyorv1.PipelineRun {
		r := newRun(tag)
		r.Name, r.UID = name, types.UID("uid-"+name)
		r.CreationTimestamp = metav1.NewTime(t0.Add(time.Duration(age) * time.Second))
		r.Status.Stages = []conveyorv1.StageStatus{{Name: stage, Namespace: env, Phase: conveyorv1.StageQueued}}
		return r
	}
	ended, older, newer := queued("ended", 0, "production", "prod"), queued("a", 1, "deploy", "prod"), queued("b", 2, "production", "prod")
	env := conveyorv1.Environment{Spec: conveyorv1.EnvironmentSpec{Namespace: "prod"}}
	frozen := *env.DeepCopy()
	frozen.Spec.FreezeWindows = []conveyorv1.FreezeWindow{{Name: "launch", Start: &t0, End: &metav1.Time{Time: t0.Add(time.Hour)}}}
	broken := *env.DeepCopy()
	broken.Spec.FreezeWindows = []conveyorv1.FreezeWindow{{Name: "bad", Schedule: "not a schedule", Duration: &metav1.Duration{Duration: time.Hour}}}
	now := t0.Add(time.Minute)
	for _, tc := range []struct {
		name      string
		envs      []conveyorv1.Environment
		queue     []*conveyorv1.PipelineRun
		to, stage string
	}{
		{"the oldest queued run, at its queued stage", []conveyorv1.Environment{env}, []*conveyorv1.PipelineRun{ended, older, newer}, "a", "deploy"},
		{"nobody queued but the ended run", []conveyorv1.Environment{env}, []*conveyorv1.PipelineRun{ended}, "", ""},
		{"no Environment names the namespace", nil, []*conveyorv1.PipelineRun{older}, "", ""},
		{"two Environments name it", []conveyorv1.Environment{env, env}, []*conveyorv1.PipelineRun{older}, "", ""},
		{"a freeze window is open", []conveyorv1.Environment{frozen}, []*conveyorv1.PipelineRun{older}, "", ""},
		{"the freeze windows do not read", []conveyorv1.Environment{broken}, []*conveyorv1.PipelineRun{older}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := HandOver(Policy{Environments: tc.envs}, "prod", tc.queue, ended.UID, now)
			switch {
			case tc.to == "" && h != nil:
				t.Fatalf("handed to %s, want nobody", h.To.Name)
			case tc.to != "" && (h == nil || h.To.Name != tc.to || h.Stage != tc.stage):
				t.Fatalf("handed %+v, want %s at stage %s", h, tc.to, tc.stage)
			}
		})
	}

	old := &conveyorv1.PipelineRunStatus{Stages: []conveyorv1.StageStatus{
		{Name: "build", Namespace: "", Phase: conveyorv1.StageRunning},
		{Name: "staging", Namespace: "stg", Phase: conveyorv1.StageRunning},
		{Name: "canary", Namespace: "can", Phase: conveyorv1.StageQueued},
		{Name: "production", Namespace: "prod", Phase: conveyorv1.StageRunning},
		{Name: "frozen", Namespace: "frz", Phase: conveyorv1.StageFrozen},
	}}
	next := old.DeepCopy()
	next.Stages[0].Phase, next.Stages[1].Phase, next.Stages[2].Phase, next.Stages[4].Phase =
		conveyorv1.StageSucceeded, conveyorv1.StageFailed, conveyorv1.StageCancelled, conveyorv1.StageCancelled
	got := EndedDeploys(old, next)
	want := map[string]string{"stg": "staging", "can": "canary"}
	if len(got) != len(want) || got["stg"] != "staging" || got["can"] != "canary" {
		t.Fatalf("ended deploys %v, want %v (a stage without a namespace, one still running and one never queued do not count)", got, want)
	}
}
