package pipelinerun

import (
	"context"
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestJobsLeft: a Job's delete event (it left the cache) names the version
// its next read asks for, once; a delete whose final state is unknown names
// none; either way the run is enqueued.
func TestJobsLeft(t *testing.T) {
	r := &Reconciler{jobsLeft: newJobsLeft(10)}
	h := r.jobHandler()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	job := func(name, rv string) *batchv1.Job {
		return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: "staging", Name: name, ResourceVersion: rv,
			Annotations: map[string]string{conveyorv1.AnnotationRun: "shop/run-1"}}}
	}
	h.Delete(context.Background(), event.DeleteEvent{Object: job("left", "42")}, q)
	h.Delete(context.Background(), event.DeleteEvent{Object: job("unknown", "7"), DeleteStateUnknown: true}, q)
	if q.Len() != 1 { // the same run, enqueued once
		t.Fatalf("queue holds %d requests, want the run once", q.Len())
	}
	if got, _ := q.Get(); got.NamespacedName != (types.NamespacedName{Namespace: "shop", Name: "run-1"}) {
		t.Fatalf("enqueued %v, want shop/run-1", got)
	}
	rv := func(name string) string {
		opts := r.jobsLeft.readOptions(types.NamespacedName{Namespace: "staging", Name: name})
		if len(opts) == 0 {
			return ""
		}
		get := &client.GetOptions{}
		for _, o := range opts {
			o.ApplyToGet(get)
		}
		return get.Raw.ResourceVersion
	}
	if got := rv("left"); got != "42" {
		t.Errorf("first read of the Job that left at 42 asks for %q", got)
	}
	if got := rv("left"); got != "" {
		t.Errorf("second read asks for %q, want a quorum read", got)
	}
	if got := rv("unknown"); got != "" {
		t.Errorf("read of a Job whose final state is unknown asks for %q, want a quorum read", got)
	}
}
