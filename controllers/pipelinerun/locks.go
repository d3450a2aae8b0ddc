package pipelinerun

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/index"
)

// One deploy at a time per environment: a stage with an environment starts
// only while its run holds that environment's lock, a coordination.k8s.io
// Lease named conveyorv1.EnvironmentLease in the environment's namespace whose holder is
// the run and stage deploying there, or that deployed there last. The lock is
// free when that stage has ended (or its run is gone), as the API server has
// the run: nothing needs to give it back, so a crash can never leave it held.
// Taking it is a create, or an update of the Lease as read: the API server's
// optimistic concurrency lets only one run take it.
const (
	// queuedRecheck brings queued runs back even when no event does.
	queuedRecheck = 15 * time.Second
)

// lockHolder is the run holding an environment's lock, read from its Lease.
type lockHolder struct {
	lease      *coordinationv1.Lease
	run, stage string
	uid        types.UID
	// holder is the holding run as the API server has it; nil when gone.
	holder *conveyorv1.PipelineRun
}

// readLock reads an environment's lock from the API server; nil when it was
// never taken.
func (r *Reconciler) readLock(ctx context.Context, env string) (*lockHolder, error) {
	lease := &coordinationv1.Lease{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: env, Name: conveyorv1.EnvironmentLease}, lease)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &lockHolder{lease: lease, run: ptr.Deref(lease.Spec.HolderIdentity, ""),
		stage: lease.Annotations[conveyorv1.AnnotationStage], uid: types.UID(lease.Labels[conveyorv1.LabelRunUID])}, nil
}

// released reports whether a lock's holder is done with it: the run is gone,
// finished, or its stage there ended. It reads the holding run from the API
// server, never a cache that could be behind.
func (r *Reconciler) released(ctx context.Context, h *lockHolder) (bool, error) {
	ns, name, _ := strings.Cut(h.run, "/")
	holder := &conveyorv1.PipelineRun{}
	// The cache may be behind the API server, never ahead: when it already
	// shows the holder's stage ended, so does the API server.
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, holder); err == nil && holder.UID == h.uid && stageEnded(holder, h.stage) {
		return true, nil
	}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, holder)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if holder.UID != h.uid || !holder.DeletionTimestamp.IsZero() {
		return true, nil
	}
	h.holder = holder
	return stageEnded(holder, h.stage), nil
}

// stageEnded reports whether a run's stage has ended, or the run has.
func stageEnded(run *conveyorv1.PipelineRun, stage string) bool {
	if run.Status.Phase.Finished() {
		return true
	}
	for _, ss := range run.Status.Stages {
		if ss.Name == stage {
			return ss.Phase.Finished()
		}
	}
	return false
}

// acquireEnvironment tries to take env's lock for the run's stage. It learns
// who holds it, whether a newer run of a NewestFirst Pipeline supersedes this
// one, and whether an older queued run goes first.
func (r *Reconciler) acquireEnvironment(ctx context.Context, run *conveyorv1.PipelineRun, req engine.LockRequest) (engine.EnvironmentFact, error) {
	stage, env := req.Stage, req.Environment
	h, err := r.readLock(ctx, env)
	if err != nil {
		return engine.EnvironmentFact{}, err
	}
	if h != nil && h.uid == run.UID && h.stage == stage {
		return engine.EnvironmentFact{Held: true}, nil
	}
	holding := h
	if h != nil {
		// An earlier stage of this run that used the environment has ended.
		free := h.uid == run.UID
		if !free {
			if free, err = r.released(ctx, h); err != nil {
				return engine.EnvironmentFact{}, err
			}
		}
		if free {
			holding = nil
		}
	}
	queued, err := r.queuedFor(ctx, env)
	if err != nil {
		return engine.EnvironmentFact{}, err
	}
	if by := supersededBy(run, queued, holding); by != "" {
		return engine.EnvironmentFact{SupersededBy: by}, nil
	}
	if holding != nil {
		return engine.EnvironmentFact{Holder: h.run, HolderStage: h.stage}, nil
	}
	for _, other := range queued {
		if other.UID != run.UID && engine.CreatedBefore(other, run) && supersededBy(other, queued, nil) == "" {
			return engine.EnvironmentFact{Ahead: engine.RunKey(other)}, nil
		}
	}
	var last *coordinationv1.Lease
	if h != nil {
		last = h.lease
	}
	err = r.takeLock(ctx, run, stage, env, last)
	if apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err) {
		// Another run took it first.
		if h, err = r.readLock(ctx, env); err != nil || h == nil {
			return engine.EnvironmentFact{Holder: "another run", HolderStage: "unknown"}, err
		}
		if h.uid == run.UID && h.stage == stage {
			return engine.EnvironmentFact{Held: true}, nil
		}
		return engine.EnvironmentFact{Holder: h.run, HolderStage: h.stage}, nil
	}
	if err != nil {
		return engine.EnvironmentFact{}, err
	}
	r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, conveyorv1.EventEnvironmentAcquired, "LockEnvironment",
		"Stage %s holds environment %s: no other deploy runs there until it ends", stage, env)
	return engine.EnvironmentFact{Held: true}, nil
}

// takeLock makes the run's stage the holder of env's lock: it creates the
// Lease, or updates the one read last, which the API server refuses if
// another run changed it since.
func (r *Reconciler) takeLock(ctx context.Context, run *conveyorv1.PipelineRun, stage, env string, last *coordinationv1.Lease) error {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: env, Name: conveyorv1.EnvironmentLease}}
	if last != nil {
		lease = last.DeepCopy()
	}
	now := metav1.MicroTime{Time: r.Now().Time}
	lease.Labels = map[string]string{conveyorv1.LabelRunUID: string(run.UID), conveyorv1.LabelManagedBy: conveyorv1.ManagedByValue}
	lease.Annotations = map[string]string{conveyorv1.AnnotationStage: stage, conveyorv1.AnnotationRun: engine.RunKey(run)}
	lease.Spec.HolderIdentity, lease.Spec.AcquireTime = ptr.To(engine.RunKey(run)), &now
	if last != nil {
		return r.Update(ctx, lease)
	}
	return r.Create(ctx, lease)
}

// queuedFor lists the runs queued for env, from the cache, oldest first.
func (r *Reconciler) queuedFor(ctx context.Context, env string) ([]*conveyorv1.PipelineRun, error) {
	runs := &conveyorv1.PipelineRunList{}
	if err := r.List(ctx, runs, client.MatchingFields{index.RunQueued: env}); err != nil {
		return nil, fmt.Errorf("listing runs queued for %s: %w", env, err)
	}
	out := make([]*conveyorv1.PipelineRun, 0, len(runs.Items))
	for i := range runs.Items {
		if runs.Items[i].DeletionTimestamp.IsZero() && !runs.Items[i].Spec.Cancelled {
			out = append(out, &runs.Items[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return engine.CreatedBefore(out[i], out[j]) })
	return out, nil
}

// supersededBy is the newest run of run's Pipeline queued for or holding the
// environment, when it is newer than run and the Pipeline's queue is
// NewestFirst; "" otherwise.
func supersededBy(run *conveyorv1.PipelineRun, queued []*conveyorv1.PipelineRun, h *lockHolder) string {
	if engine.QueueOf(run) != conveyorv1.QueueNewestFirst {
		return ""
	}
	newest := ""
	for _, other := range queued {
		if other.UID != run.UID && other.Namespace == run.Namespace && other.Spec.PipelineRef == run.Spec.PipelineRef && engine.CreatedBefore(run, other) {
			newest = engine.RunKey(other)
		}
	}
	if newest == "" && h != nil && h.holder != nil && h.uid != run.UID {
		// The holder deploys now: if it is a newer run of the same Pipeline,
		// this older deploy is stale.
		other := h.holder
		if other.Namespace == run.Namespace && other.Spec.PipelineRef == run.Spec.PipelineRef && engine.CreatedBefore(run, other) {
			newest = h.run
		}
	}
	return newest
}

// environmentQueue wakes queued runs when their environment may have moved,
// and only those that can act: when a stage that held or waited for an
// environment ends (or its run is deleted), the head of that environment's
// queue, which takes it; when a run joins a queue, the older queued runs of
// its Pipeline, which a NewestFirst queue supersedes. The other queued runs
// learn of a new holder at their periodic recheck (queuedRecheck): waking the
// whole queue at every handoff would cost a reconcile and a status write per
// queued run, and delay the one run that can go.
func (r *Reconciler) environmentQueue() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, now := e.ObjectOld.(*conveyorv1.PipelineRun), e.ObjectNew.(*conveyorv1.PipelineRun)
			// A finished run's stages in the cache keep no namespace
			// (slimFinishedRun): the environment is read from the old object.
			was := map[string]conveyorv1.StageStatus{}
			for _, ss := range old.Status.Stages {
				was[ss.Name] = ss
			}
			for _, ss := range now.Status.Stages {
				before := was[ss.Name]
				switch {
				case (before.Phase == conveyorv1.StageRunning || before.Phase == conveyorv1.StageQueued) && ss.Phase.Finished() && before.Namespace != "":
					r.wakeHead(ctx, before.Namespace, now, q)
				case ss.Phase == conveyorv1.StageQueued && before.Phase != conveyorv1.StageQueued && ss.Namespace != "":
					r.wakeOlder(ctx, ss.Namespace, now, q)
				}
			}
		},
		DeleteFunc: func(ctx context.Context, e event.TypedDeleteEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			run, ok := e.Object.(*conveyorv1.PipelineRun)
			if !ok {
				return
			}
			for _, ss := range run.Status.Stages {
				if ss.Namespace != "" && (ss.Phase == conveyorv1.StageRunning || ss.Phase == conveyorv1.StageQueued) {
					r.wakeHead(ctx, ss.Namespace, run, q)
				}
			}
		},
	}
}

// wakeHead enqueues the first run queued for env that is not superseded.
func (r *Reconciler) wakeHead(ctx context.Context, env string, except *conveyorv1.PipelineRun, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	queued, err := r.queuedFor(ctx, env)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing queued runs", "environment", env)
		return
	}
	for _, run := range queued {
		if run.UID != except.UID && supersededBy(run, queued, nil) == "" {
			ctrl.LoggerFrom(ctx).V(1).Info("Waking the head of an environment's queue", "environment", env, "run", klog.KObj(run), "queued", len(queued))
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(run)})
			return
		}
	}
}

// wakeOlder enqueues the runs of newer's Pipeline queued for env before it.
func (r *Reconciler) wakeOlder(ctx context.Context, env string, newer *conveyorv1.PipelineRun, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if engine.QueueOf(newer) != conveyorv1.QueueNewestFirst {
		return
	}
	queued, err := r.queuedFor(ctx, env)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing queued runs", "environment", env)
		return
	}
	for _, run := range queued {
		if run.UID != newer.UID && run.Namespace == newer.Namespace && run.Spec.PipelineRef == newer.Spec.PipelineRef && engine.CreatedBefore(run, newer) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(run)})
		}
	}
}
