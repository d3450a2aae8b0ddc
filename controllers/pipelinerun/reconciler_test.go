package pipelinerun

import (
	"context"
	"fmt"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestApprovalJumpsTheQueue: with 50 runs waiting in controller-runtime's
// priority queue, a new Approval's run is handed out first; an Approval of
// the cache's first list, and an update, wait their turn.
func TestApprovalJumpsTheQueue(t *testing.T) {
	q := priorityqueue.New[reconcile.Request]("test")
	defer q.ShutDown()
	for i := range 50 {
		q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: "ci", Name: fmt.Sprintf("run-%02d", i)}})
	}
	approval := func(run string) *conveyorv1.Approval {
		return &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "a-" + run},
			Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run}}}
	}
	h := approvalHandler()
	ctx := context.Background()
	h.Create(ctx, event.CreateEvent{Object: approval("listed"), IsInInitialList: true}, q)
	h.Update(ctx, event.UpdateEvent{ObjectOld: approval("updated"), ObjectNew: approval("updated")}, q)
	h.Create(ctx, event.CreateEvent{Object: approval("pressed")}, q)
	first, priority, _ := q.GetWithPriority()
	if first.Name != "pressed" || priority != PriorityPersonWaiting {
		t.Fatalf("first out of the queue: %s (priority %d), want the new Approval's run at %d", first.Name, priority, PriorityPersonWaiting)
	}
	next, _, _ := q.GetWithPriority()
	if next.Name == "listed" || next.Name == "updated" {
		t.Errorf("second out of the queue: %s, ahead of the runs that waited", next.Name)
	}
}
