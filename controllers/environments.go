package controllers

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/runstate"
)

// One deploy at a time per environment: a stage with an environment starts
// only while its run holds that environment's lock, a coordination.k8s.io
// Lease named EnvironmentLease in the environment's namespace. Creating the
// Lease takes the lock and deleting it (with preconditions) gives it back, so
// the API server, not a cache, decides who holds it. A holder whose stage
// finished, or which is gone, gives it back late or never: the next run then
// deletes the stale Lease itself.
const (
	// EnvironmentLease is the name of an environment's lock.
	EnvironmentLease = "conveyor-environment"
	// annotationStage is the stage of the run holding the lock.
	annotationStage = "conveyor.dev/stage"
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

// readLock reads an environment's lock from the API server; nil when free.
func (r *PipelineRunReconciler) readLock(ctx context.Context, env string) (*lockHolder, error) {
	lease := &coordinationv1.Lease{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: env, Name: EnvironmentLease}, lease)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &lockHolder{lease: lease, run: ptr.Deref(lease.Spec.HolderIdentity, ""),
		stage: lease.Annotations[annotationStage], uid: types.UID(lease.Labels[runstate.LabelRunUID])}, nil
}

// staleLock reports whether a lock's holder no longer needs it: the run is
// gone, or its stage there finished (it gives the lock back then, but may
// have failed to). It reads the holding run from the API server.
func (r *PipelineRunReconciler) staleLock(ctx context.Context, h *lockHolder) (bool, error) {
	ns, name, _ := strings.Cut(h.run, "/")
	holder := &conveyorv1.PipelineRun{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, holder)
	if apierrors.IsNotFound(err) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	if holder.UID != h.uid || !holder.DeletionTimestamp.IsZero() || holder.Status.Phase.Finished() {
		return true, nil
	}
	h.holder = holder
	for _, ss := range holder.Status.Stages {
		if ss.Name == h.stage {
			return ss.Phase.Finished(), nil
		}
	}
	return false, nil
}

// deleteLock deletes a Lease if it is still the one read.
func (r *PipelineRunReconciler) deleteLock(ctx context.Context, lease *coordinationv1.Lease) error {
	err := r.Delete(ctx, lease, client.Preconditions{UID: &lease.UID, ResourceVersion: &lease.ResourceVersion})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// acquireEnvironment tries to take env's lock for the run's stage. It learns
// who holds it, whether a newer run of a NewestFirst Pipeline supersedes this
// one, and whether an older queued run goes first.
func (r *PipelineRunReconciler) acquireEnvironment(ctx context.Context, run *conveyorv1.PipelineRun, req runstate.LockRequest) (runstate.EnvironmentFact, error) {
	stage, env := req.Stage, req.Environment
	h, err := r.readLock(ctx, env)
	if err != nil {
		return runstate.EnvironmentFact{}, err
	}
	if h != nil && h.uid == run.UID {
		return runstate.EnvironmentFact{Held: true}, nil
	}
	if h != nil {
		stale, err := r.staleLock(ctx, h)
		if err != nil {
			return runstate.EnvironmentFact{}, err
		}
		if stale {
			ctrl.LoggerFrom(ctx).Info("Deleting a stale environment lock", "environment", env, "holder", h.run, "stage", h.stage)
			if err := r.deleteLock(ctx, h.lease); err != nil {
				return runstate.EnvironmentFact{}, err
			}
			h = nil
		}
	}
	queued, err := r.queuedFor(ctx, env)
	if err != nil {
		return runstate.EnvironmentFact{}, err
	}
	if by := supersededBy(run, queued, h); by != "" {
		return runstate.EnvironmentFact{SupersededBy: by}, nil
	}
	if h != nil {
		return runstate.EnvironmentFact{Holder: h.run, HolderStage: h.stage}, nil
	}
	for _, other := range queued {
		if other.UID != run.UID && runstate.CreatedBefore(other, run) && supersededBy(other, queued, nil) == "" {
			return runstate.EnvironmentFact{Ahead: runstate.RunKey(other)}, nil
		}
	}
	now := r.Now()
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: env, Name: EnvironmentLease,
			Labels:      map[string]string{runstate.LabelRunUID: string(run.UID), "app.kubernetes.io/managed-by": "conveyor"},
			Annotations: map[string]string{annotationStage: stage, runstate.AnnotationRun: runstate.RunKey(run)}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(runstate.RunKey(run)), AcquireTime: &metav1.MicroTime{Time: now.Time}},
	}
	err = r.Create(ctx, lease)
	if apierrors.IsAlreadyExists(err) {
		// Another run took it first.
		if h, err = r.readLock(ctx, env); err != nil || h == nil {
			return runstate.EnvironmentFact{Holder: "another run", HolderStage: "unknown"}, err
		}
		if h.uid == run.UID {
			return runstate.EnvironmentFact{Held: true}, nil
		}
		return runstate.EnvironmentFact{Holder: h.run, HolderStage: h.stage}, nil
	}
	if err != nil {
		return runstate.EnvironmentFact{}, err
	}
	r.Recorder.Eventf(run, lease, corev1.EventTypeNormal, conveyorv1.EventEnvironmentAcquired, "LockEnvironment",
		"Stage %s holds environment %s: no other deploy runs there until it ends", stage, env)
	return runstate.EnvironmentFact{Held: true}, nil
}

// releaseEnvironment gives back env's lock if the run holds it.
func (r *PipelineRunReconciler) releaseEnvironment(ctx context.Context, run *conveyorv1.PipelineRun, env string) error {
	h, err := r.readLock(ctx, env)
	if err != nil || h == nil || h.uid != run.UID {
		return client.IgnoreNotFound(err)
	}
	ctrl.LoggerFrom(ctx).Info("Releasing environment", "environment", env, "stage", h.stage)
	return r.deleteLock(ctx, h.lease)
}

// queuedFor lists the runs queued for env, from the cache, oldest first.
func (r *PipelineRunReconciler) queuedFor(ctx context.Context, env string) ([]*conveyorv1.PipelineRun, error) {
	runs := &conveyorv1.PipelineRunList{}
	if err := r.List(ctx, runs, client.MatchingFields{indexRunQueued: env}); err != nil {
		return nil, fmt.Errorf("listing runs queued for %s: %w", env, err)
	}
	out := make([]*conveyorv1.PipelineRun, 0, len(runs.Items))
	for i := range runs.Items {
		if runs.Items[i].DeletionTimestamp.IsZero() && !runs.Items[i].Spec.Cancelled {
			out = append(out, &runs.Items[i])
		}
	}
	sort.Slice(out, func(i, j int) bool { return runstate.CreatedBefore(out[i], out[j]) })
	return out, nil
}

// supersededBy is the newest run of run's Pipeline queued for or holding the
// environment, when it is newer than run and the Pipeline's queue is
// NewestFirst; "" otherwise.
func supersededBy(run *conveyorv1.PipelineRun, queued []*conveyorv1.PipelineRun, h *lockHolder) string {
	if runstate.QueueOf(run) != conveyorv1.QueueNewestFirst {
		return ""
	}
	newest := ""
	for _, other := range queued {
		if other.UID != run.UID && other.Namespace == run.Namespace && other.Spec.PipelineRef == run.Spec.PipelineRef && runstate.CreatedBefore(run, other) {
			newest = runstate.RunKey(other)
		}
	}
	if newest == "" && h != nil && h.holder != nil && h.uid != run.UID {
		// The holder deploys now: if it is a newer run of the same Pipeline,
		// this older deploy is stale.
		other := h.holder
		if other.Namespace == run.Namespace && other.Spec.PipelineRef == run.Spec.PipelineRef && runstate.CreatedBefore(run, other) {
			newest = h.run
		}
	}
	return newest
}

// queuedRunsOfEnvironments maps a run to the runs queued for the environments
// its stages are queued for or deploying to: when it takes, gives back or
// leaves an environment's queue, they may move.
func (r *PipelineRunReconciler) queuedRunsOfEnvironments(ctx context.Context, o client.Object) []reconcile.Request {
	run := o.(*conveyorv1.PipelineRun)
	var reqs []reconcile.Request
	for _, ss := range run.Status.Stages {
		if ss.Namespace == "" || (ss.Phase != conveyorv1.StageQueued && ss.Phase != conveyorv1.StageRunning) {
			continue
		}
		queued, err := r.queuedFor(ctx, ss.Namespace)
		if err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Listing queued runs", "environment", ss.Namespace)
			continue
		}
		for _, q := range queued {
			if q.UID != run.UID {
				reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(q)})
			}
		}
	}
	return reqs
}

// releaseEnvironments gives back the lock of every environment where a stage
// of the run ended in this reconcile (finished, cancelled, superseded).
func (r *PipelineRunReconciler) releaseEnvironments(ctx context.Context, run *conveyorv1.PipelineRun, next *conveyorv1.PipelineRunStatus) error {
	was := map[string]conveyorv1.StagePhase{}
	for _, ss := range run.Status.Stages {
		was[ss.Name] = ss.Phase
	}
	var errs []error
	for _, stage := range runstate.RunStages(next.PipelineSpec, run.Spec.Git) {
		if stage.Environment == "" {
			continue
		}
		for _, ss := range next.Stages {
			if ss.Name == stage.Name && ss.Phase.Finished() && (was[ss.Name] == conveyorv1.StageRunning || was[ss.Name] == conveyorv1.StageQueued) {
				if err := r.releaseEnvironment(ctx, run, stage.Environment); err != nil {
					errs = append(errs, fmt.Errorf("releasing environment %s: %w", stage.Environment, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}
