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

// TestOwnStatusWriteIsNoEvent: an update of a run's status alone does not
// bring the run back; a change of its spec (generation), labels,
// annotations, finalizers, owners or deletion does, and so does the status
// write a reconcile waits for the cache to show.
func TestOwnStatusWriteIsNoEvent(t *testing.T) {
	r := &Reconciler{fresh: newFreshness(10)}
	notOwnStatusWrite := r.notOwnStatusWrite()
	base := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "ci", Name: "run", Generation: 1, ResourceVersion: "7",
		Labels: map[string]string{"a": "1"}, Annotations: map[string]string{"b": "2"}, Finalizers: []string{conveyorv1.CleanupFinalizer}},
		Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunQueued}}
	statusOnly := base.DeepCopy()
	statusOnly.ResourceVersion = "8"
	statusOnly.Status.Stages = []conveyorv1.StageStatus{{Name: "deploy", Phase: conveyorv1.StageQueued, HeldBy: "ci/other"}}
	if notOwnStatusWrite.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: statusOnly}) {
		t.Errorf("a status write brought the run back")
	}
	now := metav1.Now()
	for name, change := range map[string]func(*conveyorv1.PipelineRun){
		"spec (cancel)":     func(r *conveyorv1.PipelineRun) { r.Spec.Cancelled, r.Generation = true, 2 },
		"a label":           func(r *conveyorv1.PipelineRun) { r.Labels["a"] = "2" },
		"an annotation":     func(r *conveyorv1.PipelineRun) { r.Annotations = nil },
		"the finalizers":    func(r *conveyorv1.PipelineRun) { r.Finalizers = nil },
		"the owners":        func(r *conveyorv1.PipelineRun) { r.OwnerReferences = []metav1.OwnerReference{{Name: "p"}} },
		"deletion":          func(r *conveyorv1.PipelineRun) { r.DeletionTimestamp = &now },
		"status and a spec": func(r *conveyorv1.PipelineRun) { r.Status.Phase, r.Generation = conveyorv1.RunRunning, 3 },
	} {
		next := base.DeepCopy()
		change(next)
		if !notOwnStatusWrite.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: next}) {
			t.Errorf("a change of %s did not bring the run back", name)
		}
	}
	if !notOwnStatusWrite.Create(event.CreateEvent{Object: base}) || !notOwnStatusWrite.Delete(event.DeleteEvent{Object: base}) {
		t.Errorf("a create or delete did not bring the run back")
	}

	// The manager wrote version 8; a reconcile met the cache at 7 and waits.
	base.UID = "uid-run"
	statusOnly.UID = base.UID
	r.fresh.wrote(statusOnly, false)
	if notOwnStatusWrite.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: statusOnly}) {
		t.Errorf("a status write nobody waits for brought the run back")
	}
	if got := r.fresh.check(base); got != waitForCache {
		t.Fatalf("a cache behind the manager's write: verdict %v, want waitForCache", got)
	}
	if !notOwnStatusWrite.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: statusOnly}) {
		t.Errorf("the status write a reconcile waits for did not bring the run back")
	}
	other := statusOnly.DeepCopy()
	other.ResourceVersion = "9"
	if notOwnStatusWrite.Update(event.UpdateEvent{ObjectOld: statusOnly, ObjectNew: other}) {
		t.Errorf("a status write of another version than the one waited for brought the run back")
	}
}
