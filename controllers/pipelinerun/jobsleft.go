package pipelinerun

import (
	"context"

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// jobsLeft remembers, per Job, the resource version at which it left the
// manager's cache: the version of the delete event the cache's watch sent
// when the Job succeeded (it no longer matched the cache's field selector)
// or was deleted. A run reads such a Job from the API server; naming that
// version lets the API server answer from its watch cache ("not older
// than"), instead of a quorum read from etcd, and the answer still shows
// the Job at least as it was when it left: succeeded (for good) or gone. A
// Job it does not know (a manager that restarted, an event it never saw, an
// entry it forgot, the oldest first) is read from etcd as before.
type jobsLeft struct {
	versions *lru.Cache
}

func newJobsLeft(size int) *jobsLeft { return &jobsLeft{versions: lru.New(size)} }

// left notes the version at which a Job left the cache.
func (j *jobsLeft) left(job client.Object) {
	if rv := job.GetResourceVersion(); rv != "" {
		j.versions.Add(types.NamespacedName{Namespace: job.GetNamespace(), Name: job.GetName()}, rv)
	}
}

// readOptions are the options of a read of the Job from the API server:
// at least as new as the version it left the cache at, when known. The
// version is used once: the run records what it reads (a later read, after
// a reconcile that failed, is a quorum read).
func (j *jobsLeft) readOptions(key types.NamespacedName) []client.GetOption {
	v, ok := j.versions.Get(key)
	if !ok {
		return nil
	}
	j.versions.Remove(key)
	return []client.GetOption{&client.GetOptions{Raw: &metav1.GetOptions{ResourceVersion: v.(string)}}}
}

// jobHandler enqueues a Job's run, noting first the version of a Job that
// left the cache. A delete whose final state is unknown (the watch broke
// and a list found the Job gone) carries the last version seen, from
// before it left: not noted.
func (r *Reconciler) jobHandler() handler.EventHandler {
	mapped := handler.EnqueueRequestsFromMapFunc(jobToRun)
	return handler.Funcs{
		CreateFunc: mapped.Create,
		UpdateFunc: mapped.Update,
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if _, ok := e.Object.(*batchv1.Job); ok && !e.DeleteStateUnknown {
				r.jobsLeft.left(e.Object)
			}
			mapped.Delete(ctx, e, q)
		},
		GenericFunc: mapped.Generic,
	}
}
