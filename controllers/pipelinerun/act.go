package pipelinerun

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/environment"
)

// act carries out the plan: it takes the environment locks the plan takes,
// creates its Jobs and deletes those of a stopped run, with the finalizer in
// place before anything lives outside the run's namespace. The outcome says
// what happened; lost is true when another run took a lock first (nothing
// was created, and the plan is void).
func (r *Reconciler) act(ctx context.Context, run *conveyorv1.PipelineRun, facts engine.Facts, plan *engine.Plan) (engine.Outcome, bool, error) {
	outcome := engine.Outcome{Created: map[string]engine.CreatedJob{}}
	for env, reason := range facts.Blocked {
		outcome.Block(env, reason)
	}
	if err := r.ensureFinalizer(ctx, run, outsideNow(run, plan)); err != nil {
		return outcome, false, err
	}
	for _, req := range plan.Take {
		lost, err := r.takeLock(ctx, run, req, facts.Locks[req.Environment].Environment)
		if lost || err != nil {
			outcome.Unlocked = append(outcome.Unlocked, req)
			return outcome, lost, blockedOr(&outcome, req.Environment, err)
		}
	}
	var errs []error
	for _, c := range plan.Create {
		errs = append(errs, r.createJob(ctx, run, facts, c, plan, &outcome))
	}
	for _, obs := range plan.Delete {
		errs = append(errs, r.deleteJob(ctx, run, obs, plan))
	}
	// Ahead of need, after this reconcile's Jobs: the stage that first
	// deploys outside the run's namespace then starts without waiting for
	// this write (after an Approval, or a lock handed over). It is the same
	// one write per run; when it fails, that stage puts it on first.
	ahead := !controllerutil.ContainsFinalizer(run, conveyorv1.CleanupFinalizer) && engine.DeploysOutside(run, &plan.Status)
	if err := r.ensureFinalizer(ctx, run, ahead); err != nil {
		ctrl.LoggerFrom(ctx).V(1).Info("The cleanup finalizer was not put on ahead of need; the first stage outside the namespace puts it on", "error", err)
	}
	return outcome, false, errors.Join(errs...)
}

// outsideNow reports whether the plan creates a Job or takes a lock outside
// the run's namespace.
func outsideNow(run *conveyorv1.PipelineRun, plan *engine.Plan) bool {
	for _, c := range plan.Create {
		if c.Namespace != run.Namespace {
			return true
		}
	}
	return slices.ContainsFunc(slices.Concat(plan.Acquire, plan.Take), func(req engine.LockRequest) bool { return req.Environment != run.Namespace })
}

// blockedOr notes in the outcome a namespace where Conveyor may not act
// (missing, or forbidden), and returns any other error.
func blockedOr(o *engine.Outcome, ns string, err error) error {
	if reason := blockedReason(err); reason != "" {
		o.Block(ns, reason)
		return nil
	}
	return err
}

// blockedReason is why an error means Conveyor may not act in a namespace:
// it does not exist, or the manager's rights there do not reach; "" for any
// other error.
func blockedReason(err error) string {
	switch {
	case apierrors.IsNotFound(err):
		return conveyorv1.ReasonNamespaceNotFound
	case apierrors.IsForbidden(err):
		return conveyorv1.ReasonJobsForbidden
	}
	return ""
}

// ensureFinalizer ensures, when need is true, that the run carries the
// finalizer that deletes its Jobs in other namespaces (and so gives back its
// environments' locks) with it, before the first such Job or lock exists.
func (r *Reconciler) ensureFinalizer(ctx context.Context, run *conveyorv1.PipelineRun, need bool) error {
	if !need || controllerutil.ContainsFinalizer(run, conveyorv1.CleanupFinalizer) {
		return nil
	}
	// Patch a copy: the answer carries the stored status, not the one being built.
	patched := &conveyorv1.PipelineRun{ObjectMeta: *run.ObjectMeta.DeepCopy()}
	base := client.MergeFromWithOptions(patched.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.AddFinalizer(patched, conveyorv1.CleanupFinalizer)
	if err := r.Patch(ctx, patched, base); err != nil {
		return fmt.Errorf("adding finalizer: %w", err)
	}
	run.ObjectMeta = patched.ObjectMeta
	return nil
}

// createJob creates one Job of the plan and notes it in the outcome.
func (r *Reconciler) createJob(ctx context.Context, run *conveyorv1.PipelineRun, facts engine.Facts, c engine.JobToCreate, plan *engine.Plan, o *engine.Outcome) error {
	job := engine.BuildJob(run, c)
	ctrl.LoggerFrom(ctx).Info("Creating Job", "job", klog.KObj(job), "stage", c.Stage.Name)
	err := r.Create(ctx, job)
	switch {
	case err == nil:
		jobsCreated.Inc()
		o.Created[engine.JobKey(c.Stage.Name, c.Job.Name)] = engine.CreatedJob{Time: job.CreationTimestamp, UID: job.UID}
	case apierrors.IsAlreadyExists(err):
		// A Job holds the name though neither the cache nor the status as
		// read shows it: Conveyor's own (a stale read, or a status write
		// lost), adopted; or someone else's, made ahead of time or after
		// Conveyor's was deleted, which blocks the stage until it is gone.
		existing := &batchv1.Job{}
		if gerr := r.APIReader.Get(ctx, client.ObjectKeyFromObject(job), existing); gerr != nil {
			if apierrors.IsNotFound(gerr) {
				plan.Requeue(time.Second) // deleted meanwhile: created next time
				return nil
			}
			return fmt.Errorf("reading Job %s/%s: %w", job.Namespace, job.Name, gerr)
		}
		key := engine.JobKey(c.Stage.Name, c.Job.Name)
		if obs := engine.ObserveJob(existing); engine.OwnJob(facts, key, obs) {
			o.Created[key] = engine.CreatedJob{Time: existing.CreationTimestamp, UID: existing.UID}
			// It may have ended already: a Job that succeeded is not in the
			// cache and sends no event. The next reconcile reads it (the
			// status then names it), as the run's own status write is no
			// event (notOwnStatusWrite).
			plan.Requeue(staleRecheck)
			return nil
		}
		r.Recorder.Eventf(run, existing, corev1.EventTypeWarning, conveyorv1.EventJobIgnored, "IgnoreJob",
			"Job %s/%s holds the name of stage %s's job %s, but Conveyor did not make it for this run: delete it and the stage starts",
			existing.Namespace, existing.Name, c.Stage.Name, c.Job.Name)
		o.Block(c.Namespace, conveyorv1.ReasonJobNameTaken)
	default:
		if err := blockedOr(o, c.Namespace, err); err != nil {
			return fmt.Errorf("creating Job %s/%s: %w", job.Namespace, job.Name, err)
		}
	}
	return nil
}

// deleteJob deletes a Job of a stopped run; its pods go with it (background
// propagation, by the garbage collector).
func (r *Reconciler) deleteJob(ctx context.Context, run *conveyorv1.PipelineRun, obs engine.JobObservation, plan *engine.Plan) error {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: obs.Namespace, Name: obs.Name}}
	ctrl.LoggerFrom(ctx).Info("Deleting Job of a stopped run", "job", klog.KObj(job), "reason", plan.Reason)
	err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("deleting Job %s/%s: %w", obs.Namespace, obs.Name, err)
	}
	r.Recorder.Eventf(run, job, corev1.EventTypeNormal, conveyorv1.EventJobDeleted, "DeleteJob",
		"Deleted Job %s/%s: %s", job.Namespace, job.Name, plan.Message)
	return nil
}

// reconcileDelete deletes the run's Jobs in environment namespaces, then lets
// the run go. Jobs in the run's namespace go with it through their owner reference.
func (r *Reconciler) reconcileDelete(ctx context.Context, run *conveyorv1.PipelineRun) error {
	if !controllerutil.ContainsFinalizer(run, conveyorv1.CleanupFinalizer) {
		return nil
	}
	// Read from the API server: a Job created moments ago may not be cached yet.
	jobs := &batchv1.JobList{}
	if err := r.APIReader.List(ctx, jobs, client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)}); err != nil {
		return fmt.Errorf("listing Jobs: %w", err)
	}
	for i := range jobs.Items {
		job := &jobs.Items[i]
		if job.Namespace == run.Namespace {
			continue
		}
		ctrl.LoggerFrom(ctx).Info("Deleting Job", "job", klog.KObj(job))
		if err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("deleting Job %s/%s: %w", job.Namespace, job.Name, err)
		}
	}
	// Its locks go to the queues' heads, or to no one, so that no
	// Environment names a deleted run as its holder. Not a condition of
	// letting the run go: a run being deleted has released its locks
	// already (Reconciler.released), whatever the Environments say.
	ends := map[string]*ending{}
	for _, ss := range run.Status.Stages {
		if ss.Namespace != "" && ss.Namespace != run.Namespace && (ss.Phase == conveyorv1.StageRunning || ss.Phase == conveyorv1.StageQueued) {
			ends[ss.Namespace] = &ending{letGo: ss.Name}
		}
	}
	if len(ends) > 0 {
		envs, err := environment.ReadEnvironments(ctx, r.Client)
		if err == nil {
			err = r.passOn(ctx, run, ends, engine.Policy{Environments: envs})
		}
		if err != nil {
			ctrl.LoggerFrom(ctx).Info("The deleted run's environment locks were not passed on; the next run finds them released", "error", err.Error())
		}
	}
	base := client.MergeFromWithOptions(run.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(run, conveyorv1.CleanupFinalizer)
	if err := r.Patch(ctx, run, base); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("removing finalizer: %w", err))
	}
	return nil
}
