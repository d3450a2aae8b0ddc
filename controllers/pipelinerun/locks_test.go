package pipelinerun

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
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
				WithIndex(&conveyorv1.PipelineRun{}, index.RunQueued, func(o client.Object) []string {
					if env := engine.QueuedEnvironment(o.(*conveyorv1.PipelineRun)); env != "" {
						return []string{env}
					}
					return nil
				}).Build()
			r := &Reconciler{Client: c, leases: newLeaseMemory()}
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer q.ShutDown()
			before := run("joined", 0, conveyorv1.StagePending)
			r.environmentQueue().Update(context.Background(), event.TypedUpdateEvent[client.Object]{ObjectOld: before, ObjectNew: joined}, q)
			woken := false
			for q.Len() > 0 {
				req, _ := q.Get()
				woken = woken || req.Name == "joined"
				q.Done(req)
			}
			if woken != tc.woken {
				t.Fatalf("the run joining the queue woken: %v, want %v", woken, tc.woken)
			}
		})
	}
}
