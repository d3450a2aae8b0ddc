package pipelinerun

import (
	"context"
	"fmt"
	"slices"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/environment"
	"github.com/conveyor-dev/conveyor/controllers/index"
	"github.com/conveyor-dev/conveyor/controllers/ledger"
)

// observe collects the facts of a run: its Pipeline and the run it reruns
// (until it has a snapshot), its Jobs (from the cache, by index, and from
// the API server where the cache cannot hold them), the Approvals that name
// it, and the locks of the environments it is ready to deploy to.
func (r *Reconciler) observe(ctx context.Context, run *conveyorv1.PipelineRun) (engine.Facts, error) {
	facts := engine.Facts{Run: run, Jobs: map[string]engine.JobObservation{}, Now: r.Now(), TrustUnrecordedApprovers: r.TrustUnrecordedApprovers}
	steps := []func(context.Context, *engine.Facts) error{r.observeStart, r.observeJobs, r.observeApprovals, r.observeLedger, r.observePolicy, r.observeLocks}
	for _, step := range steps {
		if err := step(ctx, &facts); err != nil {
			return facts, err
		}
	}
	return facts, nil
}

// observeStart reads, for a run that has no snapshot yet, its Pipeline and
// the run it reruns (around the cache: it drops the snapshot of finished runs).
func (r *Reconciler) observeStart(ctx context.Context, f *engine.Facts) error {
	run := f.Run
	if run.Status.PipelineSpec != nil || run.Status.Phase.Finished() || run.Spec.Cancelled {
		return nil
	}
	pipeline := &conveyorv1.Pipeline{}
	err := r.Get(ctx, types.NamespacedName{Namespace: run.Namespace, Name: run.Spec.PipelineRef.Name}, pipeline)
	switch {
	case err == nil:
		f.Pipeline = pipeline
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("getting Pipeline: %w", err)
	}
	if run.Spec.RerunOf == "" {
		return nil
	}
	source := &conveyorv1.PipelineRun{}
	err = r.APIReader.Get(ctx, types.NamespacedName{Namespace: run.Namespace, Name: run.Spec.RerunOf}, source)
	switch {
	case err == nil:
		f.RerunSource = source
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("getting the run to rerun: %w", err)
	}
	return nil
}

// observeLedger reads, for a tag run that has not finished, what the release
// ledger says of it (from the cache: a Release written since is met as a
// conflict when the run writes its own).
func (r *Reconciler) observeLedger(ctx context.Context, f *engine.Facts) error {
	if f.Run.Status.Phase.Finished() {
		return nil
	}
	l, err := ledger.Read(ctx, r.Client, f.Run)
	f.Ledger = l
	return err
}

// observePolicy reads, for a run that has not finished and deploys
// somewhere, every Environment and its namespace's labels (from the cache:
// Environments are few; a policy changed since brings the run back).
func (r *Reconciler) observePolicy(ctx context.Context, f *engine.Facts) error {
	if f.Run.Status.Phase.Finished() || !deploys(f) {
		return nil
	}
	pol, err := environment.ReadPolicy(ctx, r.Client, f.Run.Namespace)
	f.Policy = pol
	return err
}

// deploys reports whether the run's Pipeline has a stage with an environment.
func deploys(f *engine.Facts) bool {
	spec := f.Run.Status.PipelineSpec
	if spec == nil && f.Pipeline != nil {
		spec = &f.Pipeline.Spec
	}
	return spec != nil && slices.ContainsFunc(spec.Stages, func(s conveyorv1.Stage) bool { return s.Environment != "" })
}

// observeJobs reads the run's Jobs from the cache, and from the API server
// those its status names as created (or being created) that the cache does
// not hold: a Job that succeeded leaves the cache (see the manager's
// options), and one created moments ago may not be in it yet. A Job that
// left the cache is read at least as new as the version it left at, which
// the API server answers from its watch cache (jobsLeft); others with a
// quorum read. A Job that does not exist stays unobserved.
func (r *Reconciler) observeJobs(ctx context.Context, f *engine.Facts) error {
	run := f.Run
	jobs := &batchv1.JobList{}
	if err := r.List(ctx, jobs, client.MatchingFields{index.JobRun: engine.RunKey(run)}); err != nil {
		return fmt.Errorf("listing Jobs: %w", err)
	}
	for i := range jobs.Items {
		r.observeJob(f, &jobs.Items[i])
	}
	for _, ss := range run.Status.Stages {
		for _, js := range ss.Jobs {
			if _, ok := f.Jobs[engine.JobKey(ss.Name, js.Name)]; ok || js.JobName == "" || (js.Phase != conveyorv1.JobRunning && js.Phase != conveyorv1.JobPending) {
				continue
			}
			job, key := &batchv1.Job{}, types.NamespacedName{Namespace: js.Namespace, Name: js.JobName}
			err := r.APIReader.Get(ctx, key, job, r.jobsLeft.readOptions(key)...)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("reading Job %s/%s: %w", js.Namespace, js.JobName, err)
			}
			r.observeJob(f, job)
		}
	}
	return r.observeResults(ctx, f)
}

// observeResults reads, for each Job seen succeeded whose job declares
// results and whose status does not hold them yet, the termination message
// of its succeeded pod (from the API server: pods are not cached).
func (r *Reconciler) observeResults(ctx context.Context, f *engine.Facts) error {
	run := f.Run
	if run.Status.PipelineSpec == nil {
		return nil
	}
	recorded := map[string]bool{}
	for _, ss := range run.Status.Stages {
		for _, js := range ss.Jobs {
			recorded[engine.JobKey(ss.Name, js.Name)] = js.Phase == conveyorv1.JobSucceeded || js.Phase == conveyorv1.JobFailed
		}
	}
	for _, st := range run.Status.PipelineSpec.Stages {
		for _, j := range st.Jobs {
			key := engine.JobKey(st.Name, j.Name)
			obs, seen := f.Jobs[key]
			if !seen || len(j.Results) == 0 || obs.Phase != conveyorv1.JobSucceeded || recorded[key] {
				continue
			}
			msg, err := r.terminationMessage(ctx, obs)
			if err != nil {
				return err
			}
			obs.ResultsRead, obs.ResultsMessage = true, msg
			f.Jobs[key] = obs
		}
	}
	return nil
}

// terminationMessage is the termination message of a Job's succeeded pod
// (its newest), "" when it has none.
func (r *Reconciler) terminationMessage(ctx context.Context, obs engine.JobObservation) (string, error) {
	pods := &corev1.PodList{}
	if err := r.APIReader.List(ctx, pods, client.InNamespace(obs.Namespace), client.MatchingLabels{batchv1.ControllerUidLabel: string(obs.UID)}); err != nil {
		return "", fmt.Errorf("reading the results of Job %s/%s from its pods: %w", obs.Namespace, obs.Name, err)
	}
	var newest *corev1.Pod
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.Status.Phase == corev1.PodSucceeded && (newest == nil || newest.CreationTimestamp.Before(&p.CreationTimestamp)) {
			newest = p
		}
	}
	if newest == nil {
		return "", nil
	}
	for _, cs := range newest.Status.ContainerStatuses {
		if cs.State.Terminated != nil {
			return cs.State.Terminated.Message, nil
		}
	}
	return "", nil
}

// observeJob notes a Job of the run; one left by an earlier run of the same
// name does not count.
func (r *Reconciler) observeJob(f *engine.Facts, job *batchv1.Job) {
	if job.Labels[conveyorv1.LabelRunUID] != string(f.Run.UID) {
		return
	}
	f.Jobs[engine.JobKey(job.Labels[conveyorv1.LabelStage], job.Labels[conveyorv1.LabelJob])] = engine.ObserveJob(job)
}

// observeApprovals reads the Approvals that name the run.
func (r *Reconciler) observeApprovals(ctx context.Context, f *engine.Facts) error {
	approvals := &conveyorv1.ApprovalList{}
	if err := r.List(ctx, approvals, client.InNamespace(f.Run.Namespace), client.MatchingFields{index.ApprovalRun: f.Run.Name}); err != nil {
		return fmt.Errorf("listing Approvals: %w", err)
	}
	for _, a := range approvals.Items {
		if a.DeletionTimestamp.IsZero() {
			f.Approvals = append(f.Approvals, engine.Fact(&a))
		}
	}
	return nil
}
