package pipelinerun

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/index"
)

// TestJoinAtHeadWakes: a run whose stage joins an environment's queue at
// its head is woken by its own queued status reaching the cache (the deploy
// before it may have ended, its wake-up finding the queue without this run);
// one that joins behind an older queued run is not (the older one is the
// head, woken when the deploy ends).
func TestJoinAtHeadWakes(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	run := func(name string, created time.Duration, phase conveyorv1.StagePhase) *conveyorv1.PipelineRun {
		return &conveyorv1.PipelineRun{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name), CreationTimestamp: metav1.NewTime(t0.Add(created))},
			Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}},
			Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunRunning, Stages: []conveyorv1.StageStatus{
				{Name: "production", Namespace: "production", Phase: phase}}},
		}
	}
	cases := []struct {
		name   string
		others []*conveyorv1.PipelineRun
		woken  bool
	}{
		{"alone in the queue", nil, true},
		{"ahead of a newer queued run", []*conveyorv1.PipelineRun{run("newer", time.Minute, conveyorv1.StageQueued)}, true},
		{"behind an older queued run", []*conveyorv1.PipelineRun{run("older", -time.Minute, conveyorv1.StageQueued)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			joined := run("joined", 0, conveyorv1.StageQueued)
			objs := []client.Object{joined}
			for _, o := range tc.others {
				objs = append(objs, o)
			}
			scheme := runtime.NewScheme()
			if err := conveyorv1.AddToScheme(scheme); err != nil {
				t.Fatal(err)
			}
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
				WithIndex(&conveyorv1.PipelineRun{}, index.RunQueued, index.QueuedFor).Build()
			r := &Reconciler{Client: c, locks: newLockMemory()}
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer q.ShutDown()
			before := run("joined", 0, conveyorv1.StagePending)
			r.environmentQueue().Update(context.Background(), event.TypedUpdateEvent[client.Object]{ObjectOld: before, ObjectNew: joined}, q)
			if woken := drainHas(q, "joined"); woken != tc.woken {
				t.Fatalf("the run joining the queue woken: %v, want %v", woken, tc.woken)
			}
		})
	}
}

// TestHandoverWakesDespiteFailedRecord: a deploy's end hands the lock to the
// queue's head while, side by side, its Release write meets a conflict. The
// head is woken all the same: with the record's group context, which the
// failed write cancels, the wake-up raced the cancellation and was lost (a
// 12.8 s handoff in a bench trial). Repeated, since a race.
func TestHandoverWakesDespiteFailedRecord(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := conveyorv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	spec := &conveyorv1.PipelineSpec{Stages: []conveyorv1.Stage{{Name: "production", Environment: "production", Jobs: []conveyorv1.JobSpec{{Name: "deploy", Image: "helm"}}}}}
	git := conveyorv1.GitRef{Tag: "v1", Commit: "abc"}
	ended := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "ended", UID: "uid-ended", CreationTimestamp: metav1.NewTime(t0)},
		Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: git},
		Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunRunning, PipelineSpec: spec, Stages: []conveyorv1.StageStatus{
			{Name: "production", Namespace: "production", Phase: conveyorv1.StageRunning}}},
	}
	next := ended.Status.DeepCopy()
	next.Phase, next.Stages[0].Phase, next.Stages[0].CompletionTime = conveyorv1.RunSucceeded, conveyorv1.StageSucceeded, &metav1.Time{Time: t0.Add(time.Minute)}
	head := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "head", UID: "uid-head", CreationTimestamp: metav1.NewTime(t0.Add(time.Second))},
		Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: git},
		Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunQueued, PipelineSpec: spec, Stages: []conveyorv1.StageStatus{
			{Name: "production", Namespace: "production", Phase: conveyorv1.StageQueued}}},
	}
	release := &conveyorv1.Release{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: engine.ReleaseName("shop", "v1")},
		Spec: conveyorv1.ReleaseSpec{PipelineRef: ended.Spec.PipelineRef, Tag: "v1", Commit: "abc"}}
	for i := 0; i < 50; i++ {
		env := &conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: "production"}, Spec: conveyorv1.EnvironmentSpec{Namespace: "production"}}
		engine.SetHolder(&env.Status, ended, "production", metav1.NewTime(t0))
		c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(head.DeepCopy(), env, release.DeepCopy()).
			WithStatusSubresource(&conveyorv1.Environment{}).
			WithIndex(&conveyorv1.PipelineRun{}, index.RunQueued, index.QueuedFor).
			WithInterceptorFuncs(interceptor.Funcs{Update: func(ctx context.Context, c client.WithWatch, o client.Object, opts ...client.UpdateOption) error {
				if _, ok := o.(*conveyorv1.Release); ok {
					return apierrors.NewConflict(schema.GroupResource{Resource: "releases"}, o.GetName(), errors.New("changed since read"))
				}
				return c.Update(ctx, o, opts...)
			}}).Build()
		stored := &conveyorv1.Environment{}
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(env), stored); err != nil {
			t.Fatal(err)
		}
		r := &Reconciler{Client: c, APIReader: c, locks: newLockMemory(), handed: make(chan event.GenericEvent, 1), Now: func() metav1.Time { return metav1.NewTime(t0) }}
		r.locks.remember("production", stored)
		rel := &conveyorv1.Release{}
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(release), rel); err != nil {
			t.Fatal(err)
		}
		pol := engine.Policy{Environments: []conveyorv1.Environment{*stored.DeepCopy()}}
		if err := r.record(context.Background(), ended, next, engine.Facts{Policy: pol, Ledger: engine.Ledger{Release: rel}}); err == nil {
			t.Fatal("the Release write did not fail: the test does not test the race")
		}
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(env), stored); err != nil || stored.Status.Holder != "shop/head" || stored.Status.HolderUID != "uid-head" {
			t.Fatalf("try %d: the lock was not handed to the head: holder %q, %v", i, stored.Status.Holder, err)
		}
		if stored.Status.LastDeploy == nil || stored.Status.LastDeploy.RunUID != "uid-ended" {
			t.Fatalf("try %d: the ended deploy was not recorded in the same write: %+v", i, stored.Status.LastDeploy)
		}
		select {
		case e := <-r.handed:
			if e.Object.GetName() != "head" {
				t.Fatalf("try %d: woke %s, want head", i, e.Object.GetName())
			}
		default:
			t.Fatalf("try %d: the lock was handed to the head, and the head was not woken", i)
		}
	}
}

// TestLockGivenBackWakesTheHead: an Environment whose status stops naming a
// holder (another shard's deploy ended with nobody queued in its shard, or
// a deleted run gave the lock back) wakes the head of this manager's queue
// there; a lock passed from one holder to another wakes nobody (the new
// holder deploys, and the head learns of its end).
func TestLockGivenBackWakesTheHead(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	queued := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "queued", UID: "uid-queued", CreationTimestamp: metav1.NewTime(t0)},
		Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}},
		Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunQueued, Stages: []conveyorv1.StageStatus{
			{Name: "production", Namespace: "production", Phase: conveyorv1.StageQueued}}},
	}
	other := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "other-shard", UID: "uid-other"}}
	next := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "next", UID: "uid-next"}}
	env := func(holder *conveyorv1.PipelineRun) *conveyorv1.Environment {
		e := &conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: "production"}, Spec: conveyorv1.EnvironmentSpec{Namespace: "production"}}
		engine.SetHolder(&e.Status, holder, "production", metav1.NewTime(t0))
		return e
	}
	cases := []struct {
		name     string
		old, now *conveyorv1.Environment
		woken    bool
	}{
		{"given back", env(other), env(nil), true},
		{"handed to another run", env(other), env(next), false},
		{"taken while free", env(nil), env(next), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			scheme := runtime.NewScheme()
			if err := conveyorv1.AddToScheme(scheme); err != nil {
				t.Fatal(err)
			}
			c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(queued.DeepCopy()).
				WithIndex(&conveyorv1.PipelineRun{}, index.RunQueued, index.QueuedFor).
				WithIndex(&conveyorv1.PipelineRun{}, index.RunHeld, func(client.Object) []string { return nil }).Build()
			r := &Reconciler{Client: c, locks: newLockMemory()}
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer q.ShutDown()
			r.environmentHandler().Update(context.Background(), event.UpdateEvent{ObjectOld: tc.old, ObjectNew: tc.now}, q)
			if woken := drainHas(q, "queued"); woken != tc.woken {
				t.Fatalf("the queue's head woken: %v, want %v", woken, tc.woken)
			}
		})
	}
}

// drainHas empties the queue and reports whether it held a request for the
// run of that name.
func drainHas(q workqueue.TypedRateLimitingInterface[reconcile.Request], name string) bool {
	has := false
	for q.Len() > 0 {
		req, _ := q.Get()
		has = has || req.Name == name
		q.Done(req)
	}
	return has
}
