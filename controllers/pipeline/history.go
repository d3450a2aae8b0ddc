package pipeline

import (
	"context"
	"fmt"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/lru"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/index"
)

// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelineruns,verbs=get;list;watch;delete

// endings remembers the order in which this manager saw runs end: times in
// status have whole seconds, and of two runs that ended in the same second the
// one that ended last is the newest (a run that just ended must not be
// deleted as history in favour of one that ended before it). The oldest
// endings (least recently used) are forgotten first.
type endings struct {
	next atomic.Uint64
	seq  *lru.Cache
}

func newEndings(size int) *endings { return &endings{seq: lru.New(size)} }

func (e *endings) saw(uid types.UID) { e.seq.Add(uid, e.next.Add(1)) }

// later reports whether a ended after b, when both endings were seen.
func (e *endings) later(a, b *conveyorv1.PipelineRun) (bool, bool) {
	sa, okA := e.seq.Get(a.UID)
	sb, okB := e.seq.Get(b.UID)
	if !okA || !okB {
		return false, false
	}
	return sa.(uint64) > sb.(uint64), true
}

// runEnded enqueues a run's Pipeline when the run ends: its history may now
// be over the limits.
func (r *Reconciler) runEnded() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		UpdateFunc: func(_ context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, now := e.ObjectOld.(*conveyorv1.PipelineRun), e.ObjectNew.(*conveyorv1.PipelineRun)
			if old.Status.Phase.Finished() || !now.Status.Phase.Finished() {
				return
			}
			r.endings.saw(now.UID)
			q.Add(reconcile.Request{NamespacedName: types.NamespacedName{Namespace: now.Namespace, Name: now.Spec.PipelineRef.Name}})
		},
	}
}

// reconcileHistory ensures no more finished runs of the Pipeline are kept than
// its history limits allow, newest kept. Their Jobs go with them: owned ones
// by the garbage collector, those in environment namespaces by the runs'
// finalizer.
func (r *Reconciler) reconcileHistory(ctx context.Context, pipeline *conveyorv1.Pipeline) error {
	log := ctrl.LoggerFrom(ctx)
	list := &conveyorv1.PipelineRunList{}
	// Read only (pruning reads the runs, and deletes by name and UID): no
	// deep copy of every run of the Pipeline at each run's end.
	if err := r.List(ctx, list, client.InNamespace(pipeline.Namespace), client.MatchingFields{index.RunPipeline: pipeline.Name}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("listing runs for the history limits: %w", err)
	}
	runs := make([]*conveyorv1.PipelineRun, len(list.Items))
	for i := range list.Items {
		runs[i] = &list.Items[i]
	}
	for _, p := range engine.Prune(runs, pipeline.Spec.History, r.endings.later) {
		old := p.Run
		err := r.Delete(ctx, old, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &old.UID})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			continue // gone already, or a new run reuses its name
		}
		if err != nil {
			return fmt.Errorf("deleting old run %s: %w", old.Name, err)
		}
		log.Info("Deleted an old run", "run", klog.KObj(old), "phase", old.Status.Phase)
		r.Recorder.Eventf(pipeline, old, corev1.EventTypeNormal, conveyorv1.EventHistoryPruned, "DeleteRun",
			"Deleted run %s (%s): the history keeps the newest %d %s run(s)", old.Name, old.Status.Phase, p.Keep, p.Kind)
	}
	return nil
}
