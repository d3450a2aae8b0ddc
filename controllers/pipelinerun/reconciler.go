package pipelinerun

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/klog/v2"
	"k8s.io/utils/lru"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/index"
	"github.com/conveyor-dev/conveyor/controllers/status"
)

// Reconciler runs the stages of PipelineRuns as batch/v1 Jobs.
type Reconciler struct {
	client.Client
	// APIReader reads around the cache where a stale read would lose work.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Now returns the current time; tests may pin it.
	Now func() metav1.Time

	// recorded remembers the transitions already told by Events and metrics:
	// a reconcile that reads a run from a cache not yet showing the last status
	// patch computes the same transition again, and must not tell it twice.
	recorded *lru.Cache
	// latest remembers, per run UID, the version of the run this manager
	// last wrote or read from the API server (a seenVersion): a cached run at
	// another version may not show that write yet (see Reconcile).
	latest *lru.Cache
}

// seenVersion is the version of a run this manager last wrote or read.
type seenVersion struct {
	resourceVersion string
	generation      int64
	// waited is set once a reconcile met a cache behind this version and
	// waited for it.
	waited bool
}

// staleRecheck is how soon a run whose cached version is not the one last
// written is looked at again, should no watch event bring it back sooner.
const staleRecheck = 200 * time.Millisecond

// firstTime reports whether a transition is told for the first time.
func (r *Reconciler) firstTime(run *conveyorv1.PipelineRun, parts ...string) bool {
	key := string(run.UID) + "/" + strings.Join(parts, "/")
	if _, ok := r.recorded.Get(key); ok {
		return false
	}
	r.recorded.Add(key, struct{}{})
	return true
}

// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelineruns,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelineruns/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelineruns/finalizers,verbs=update
// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelines,verbs=get;list;watch
// +kubebuilder:rbac:groups=conveyor.dev,resources=approvals,verbs=get;list;watch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch
// Creating and deleting Jobs is granted per namespace: see config/rbac/job_runner_role.yaml.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// Environment locks (Leases in environment namespaces) are granted per namespace with the Jobs.

// Reconcile moves one PipelineRun forward: fetch, then the named steps, then one
// status patch.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	run := &conveyorv1.PipelineRun{}
	if err := r.Get(ctx, req.NamespacedName, run); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !run.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, run)
	}
	stale := false
	if v, ok := r.latest.Get(run.UID); ok {
		seen := v.(seenVersion)
		switch {
		case seen.resourceVersion == run.ResourceVersion:
			if run.Status.Phase.Finished() {
				r.latest.Remove(run.UID) // caught up, and never decided again
			}
		case seen.generation == run.Generation && !seen.waited:
			// The cache does not show this manager's last write yet:
			// deciding from it would tell transitions again and rewrite
			// status already written. The write's own watch event brings the
			// run back; the recheck is in case the difference is someone
			// else's metadata write.
			seen.waited = true
			r.latest.Add(run.UID, seen)
			return ctrl.Result{RequeueAfter: staleRecheck}, nil
		default:
			// Someone changed the spec (cancelled it), or the cache still
			// differs after the recheck: read the run from the API server.
			stale = true
		}
	}
	if run.Spec.Cancelled && run.Status.PipelineSpec == nil && !run.Status.Phase.Finished() {
		// About to end a cancelled run as never started: the cache may not
		// show yet the snapshot (and Jobs) an earlier reconcile wrote.
		stale = true
	}
	if stale {
		if err := r.APIReader.Get(ctx, req.NamespacedName, run); err != nil {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		if run.Status.Phase.Finished() {
			r.latest.Remove(run.UID) // never decided again
		}
	}

	before := run.Status.DeepCopy()
	defer func() {
		if retErr == nil || errors.Is(retErr, reconcile.TerminalError(nil)) {
			run.Status.ObservedGeneration = run.Generation
		}
		if err := status.Patch(ctx, r.Client, run, before, &run.Status); err != nil {
			retErr = errors.Join(retErr, err)
			return
		}
		if !before.Phase.Finished() {
			r.latest.Add(run.UID, seenVersion{resourceVersion: run.ResourceVersion, generation: run.Generation})
		}
	}()

	// reconcileSnapshot: the run carries a snapshot of its Pipeline's spec.
	if done, err := r.reconcileSnapshot(ctx, run); err != nil || done {
		return ctrl.Result{}, err
	}
	// reconcileStages: the Jobs of the stages allowed to run exist, those of a
	// stopped run do not; status says where the run stands; a pending deadline
	// brings the run back.
	requeue, err := r.reconcileStages(ctx, run)
	if err != nil {
		return ctrl.Result{}, err // retried with backoff
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

// reconcileSnapshot ensures the run carries a snapshot of its Pipeline's spec,
// taken once, so that editing the Pipeline never changes a run in flight. It
// stops the reconcile while the Pipeline is missing or unusable, and fails the
// run for good when the Pipeline does not allow the run's ref.
func (r *Reconciler) reconcileSnapshot(ctx context.Context, run *conveyorv1.PipelineRun) (bool, error) {
	if run.Status.PipelineSpec != nil {
		return false, nil
	}
	if run.Status.Phase.Finished() {
		return true, nil
	}
	run.Status.Ref = engine.RefString(run.Spec.Git)
	run.Status.Phase = conveyorv1.RunPending
	if run.Spec.Cancelled {
		// Cancelled before it started (its Pipeline missing or unusable).
		now := r.Now()
		run.Status.Phase, run.Status.CompletionTime = conveyorv1.RunCancelled, &now
		status.SetHealth(&run.Status.Conditions, run.Generation, engine.Stalled, conveyorv1.ReasonCancelled, "cancelled (spec.cancelled) before any stage started")
		r.recordRunEnd(run, conveyorv1.RunCancelled)
		return true, nil
	}
	pipeline := &conveyorv1.Pipeline{}
	err := r.Get(ctx, types.NamespacedName{Namespace: run.Namespace, Name: run.Spec.PipelineRef.Name}, pipeline)
	if apierrors.IsNotFound(err) {
		status.SetHealth(&run.Status.Conditions, run.Generation, engine.Stalled, conveyorv1.ReasonPipelineNotFound,
			fmt.Sprintf("Pipeline %s not found in namespace %s; the run starts when it exists", run.Spec.PipelineRef.Name, run.Namespace))
		return true, nil
	}
	if err != nil {
		return true, fmt.Errorf("getting Pipeline: %w", err)
	}
	if err := engine.ValidatePipeline(&pipeline.Spec); err != nil {
		status.SetHealth(&run.Status.Conditions, run.Generation, engine.Stalled, conveyorv1.ReasonInvalidSpec,
			fmt.Sprintf("Pipeline %s is not usable: %v; the run starts when it is fixed", pipeline.Name, err))
		return true, nil
	}
	if err := engine.RefAllowed(&pipeline.Spec, run.Spec.Git); err != nil {
		return true, r.failForGood(run, conveyorv1.ReasonRefNotAllowed, err)
	}
	var reused []conveyorv1.StageStatus
	if run.Spec.RerunOf != "" {
		// Read around the cache: it drops the snapshot of finished runs.
		source := &conveyorv1.PipelineRun{}
		err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: run.Namespace, Name: run.Spec.RerunOf}, source)
		if apierrors.IsNotFound(err) {
			source = nil
		} else if err != nil {
			return true, fmt.Errorf("getting the run to rerun: %w", err)
		}
		if err := engine.CheckRerun(run, source); err != nil {
			return true, r.failForGood(run, conveyorv1.ReasonInvalidRerun, err)
		}
		reused = engine.ReusedStages(source, &pipeline.Spec, run.Spec.Git)
	}
	if r.firstTime(run, "run", "started") {
		ctrl.LoggerFrom(ctx).Info("Snapshotting pipeline", "pipeline", klog.KObj(pipeline), "generation", pipeline.Generation)
		runsStarted.Inc()
		for _, ss := range reused {
			r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, conveyorv1.EventStageReused, "ReuseStage",
				"Stage %s reuses the result of run %s (%s): it does not run again", ss.Name, ss.ReusedFrom, strings.ToLower(string(ss.Phase)))
		}
	}
	run.Status.PipelineSpec = pipeline.Spec.DeepCopy()
	run.Status.PipelineGeneration = pipeline.Generation
	run.Status.Stages = reused
	return false, nil
}

// failForGood ends a run that cannot start as Failed, with the reason and
// error in its conditions and an Event.
func (r *Reconciler) failForGood(run *conveyorv1.PipelineRun, reason string, err error) error {
	now := r.Now()
	run.Status.Phase = conveyorv1.RunFailed
	run.Status.CompletionTime = &now
	status.SetHealth(&run.Status.Conditions, run.Generation, engine.Stalled, reason, err.Error())
	if r.firstTime(run, "run", string(conveyorv1.RunFailed)) {
		runsFinished.WithLabelValues(string(conveyorv1.RunFailed)).Inc()
		r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, reason, "Validate", err.Error())
	}
	return reconcile.TerminalError(err)
}

// ensureFinalizer ensures the run carries the finalizer that deletes its Jobs
// in other namespaces with it, before the first such Job is created.
func (r *Reconciler) ensureFinalizer(ctx context.Context, run *conveyorv1.PipelineRun) error {
	if controllerutil.ContainsFinalizer(run, conveyorv1.CleanupFinalizer) {
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

// reconcileStages ensures the Jobs of every stage allowed to run exist, and
// rebuilds the run's status from its Jobs and Approvals.
func (r *Reconciler) reconcileStages(ctx context.Context, run *conveyorv1.PipelineRun) (time.Duration, error) {
	log := ctrl.LoggerFrom(ctx)
	facts, err := r.observe(ctx, run)
	if err != nil {
		return 0, err
	}
	plan := engine.Decide(facts)
	// blocked holds, per namespace, why Jobs cannot be created (or its
	// environment locked) there.
	blocked := map[string]string{}
	var errs []error
	if len(plan.Acquire) > 0 {
		// A stage is ready to deploy to an environment: take its lock, or
		// learn who holds it, then decide again knowing.
		facts.Environments = map[string]engine.EnvironmentFact{}
		for _, req := range plan.Acquire {
			if req.Environment != run.Namespace {
				// The lock lives in the environment: deleting the run gives it back.
				if err := r.ensureFinalizer(ctx, run); err != nil {
					return 0, err
				}
			}
			fact, err := r.acquireEnvironment(ctx, run, req)
			switch {
			case err == nil:
				facts.Environments[req.Environment] = fact
				log.V(1).Info("Environment lock", "environment", req.Environment, "stage", req.Stage, "held", fact.Held,
					"holder", fact.Holder, "ahead", fact.Ahead, "supersededBy", fact.SupersededBy)
			case apierrors.IsForbidden(err):
				blocked[req.Environment] = conveyorv1.ReasonJobsForbidden
			case apierrors.IsNotFound(err):
				blocked[req.Environment] = conveyorv1.ReasonNamespaceNotFound
			default:
				errs = append(errs, fmt.Errorf("locking environment %s: %w", req.Environment, err))
			}
		}
		plan = engine.Decide(facts)
	}
	if plan.Status.Phase == conveyorv1.RunQueued {
		// Events bring a queued run back when its environment frees; this is
		// in case one is missed.
		plan.Requeue(queuedRecheck)
	}

	created := map[string]*batchv1.Job{}
	for _, c := range plan.Create {
		if c.Namespace != run.Namespace {
			if err := r.ensureFinalizer(ctx, run); err != nil {
				return 0, err
			}
		}
		job := engine.BuildJob(run, c)
		log.Info("Creating Job", "job", klog.KObj(job), "stage", c.Stage.Name)
		err := r.Create(ctx, job)
		switch {
		case err == nil:
			jobsCreated.Inc()
			created[engine.JobKey(c.Stage.Name, c.Job.Name)] = job
			r.Recorder.Eventf(run, job, corev1.EventTypeNormal, conveyorv1.EventJobCreated, "CreateJob",
				"Created Job %s/%s for stage %s", job.Namespace, job.Name, c.Stage.Name)
		case apierrors.IsAlreadyExists(err):
			// The Job exists though neither the cache nor the status as read
			// shows it (a stale read, or a status write lost): the status now
			// names it, and the next reconcile reads it from the API server
			// (observeUncached); a Job that succeeded sends no more events.
			plan.Requeue(time.Second)
		case apierrors.IsNotFound(err):
			blocked[c.Namespace] = conveyorv1.ReasonNamespaceNotFound
		case apierrors.IsForbidden(err):
			blocked[c.Namespace] = conveyorv1.ReasonJobsForbidden
		default:
			errs = append(errs, fmt.Errorf("creating Job %s/%s: %w", job.Namespace, job.Name, err))
		}
	}
	for _, obs := range plan.Delete {
		// Background propagation: the garbage collector deletes the pods.
		job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: obs.Namespace, Name: obs.Name}}
		log.Info("Deleting Job of a stopped run", "job", klog.KObj(job), "reason", plan.Reason)
		err := r.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground))
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("deleting Job %s/%s: %w", obs.Namespace, obs.Name, err))
			continue
		}
		r.Recorder.Eventf(run, job, corev1.EventTypeNormal, conveyorv1.EventJobDeleted, "DeleteJob",
			"Deleted Job %s/%s: %s", job.Namespace, job.Name, plan.Message)
	}
	for i := range plan.Status.Stages {
		ss := &plan.Status.Stages[i]
		for j := range ss.Jobs {
			js := &ss.Jobs[j]
			if job := created[engine.JobKey(ss.Name, js.Name)]; job != nil {
				js.Phase, js.Message, js.StartTime = conveyorv1.JobRunning, "", &job.CreationTimestamp
			} else if js.Phase == conveyorv1.JobPending && blocked[ss.Namespace] != "" {
				js.Message = blockedMessage(blocked[ss.Namespace], ss.Namespace)
			}
		}
	}

	r.recordTransitions(run, &plan.Status)
	plan.Status.ObservedGeneration = run.Status.ObservedGeneration
	plan.Status.Conditions = run.Status.Conditions
	run.Status = plan.Status
	status.SetHealth(&run.Status.Conditions, run.Generation, engine.RunHealth(run.Status.Phase), plan.Reason, plan.Message)

	for ns, reason := range blocked {
		msg := fmt.Sprintf("stage %s cannot start: %s", run.Status.CurrentStage, blockedMessage(reason, ns))
		status.SetHealth(&run.Status.Conditions, run.Generation, engine.Stalled, reason, msg)
		r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, reason, "CreateJob", msg)
		errs = append(errs, errors.New(msg))
	}
	return plan.RequeueAfter, errors.Join(errs...)
}

// blockedMessage says why Jobs cannot be created in a namespace, and what to do.
func blockedMessage(reason, ns string) string {
	if reason == conveyorv1.ReasonJobsForbidden {
		return fmt.Sprintf("Conveyor may not create Jobs in namespace %s: bind the ClusterRole conveyor-job-runner to the manager there", ns)
	}
	return fmt.Sprintf("namespace %s does not exist", ns)
}

// observe collects the facts of a run: its Jobs (from the cache, by index) and
// the Approvals that name it.
func (r *Reconciler) observe(ctx context.Context, run *conveyorv1.PipelineRun) (engine.Facts, error) {
	facts := engine.Facts{Run: run, Jobs: map[string]engine.JobObservation{}, Now: r.Now()}
	jobs := &batchv1.JobList{}
	if err := r.List(ctx, jobs, client.MatchingFields{index.JobRun: engine.RunKey(run)}); err != nil {
		return facts, fmt.Errorf("listing Jobs: %w", err)
	}
	for i := range jobs.Items {
		job := &jobs.Items[i]
		if job.Labels[conveyorv1.LabelRunUID] != string(run.UID) {
			continue // left by an earlier run of the same name
		}
		facts.Jobs[engine.JobKey(job.Labels[conveyorv1.LabelStage], job.Labels[conveyorv1.LabelJob])] = engine.ObserveJob(job)
	}
	if err := r.observeUncached(ctx, run, facts.Jobs); err != nil {
		return facts, err
	}
	approvals := &conveyorv1.ApprovalList{}
	if err := r.List(ctx, approvals, client.InNamespace(run.Namespace), client.MatchingFields{index.ApprovalRun: run.Name}); err != nil {
		return facts, fmt.Errorf("listing Approvals: %w", err)
	}
	for _, a := range approvals.Items {
		if !a.DeletionTimestamp.IsZero() {
			continue
		}
		facts.Approvals = append(facts.Approvals, engine.Fact(&a))
	}
	return facts, nil
}

// observeUncached reads from the API server the Jobs the run's status names
// as created (or being created) that the cache does not hold: a Job that
// succeeded leaves the cache (see ManagerOptions), and one created moments ago
// may not be in it yet. A Job that does not exist stays unobserved.
func (r *Reconciler) observeUncached(ctx context.Context, run *conveyorv1.PipelineRun, seen map[string]engine.JobObservation) error {
	for _, ss := range run.Status.Stages {
		for _, js := range ss.Jobs {
			key := engine.JobKey(ss.Name, js.Name)
			if _, ok := seen[key]; ok || js.JobName == "" || (js.Phase != conveyorv1.JobRunning && js.Phase != conveyorv1.JobPending) {
				continue
			}
			job := &batchv1.Job{}
			err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: js.Namespace, Name: js.JobName}, job)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return fmt.Errorf("reading Job %s/%s: %w", js.Namespace, js.JobName, err)
			}
			if job.Labels[conveyorv1.LabelRunUID] == string(run.UID) {
				seen[key] = engine.ObserveJob(job)
			}
		}
	}
	return nil
}

// recordTransitions records an Event for every stage that started, waits or
// finished, every decision taken into account, and the run's end.
func (r *Reconciler) recordTransitions(run *conveyorv1.PipelineRun, next *conveyorv1.PipelineRunStatus) {
	old := map[string]conveyorv1.StageStatus{}
	for _, s := range run.Status.Stages {
		old[s.Name] = s
	}
	for _, s := range next.Stages {
		prev := old[s.Name]
		known := map[string]bool{}
		for _, d := range prev.Decisions {
			known[d.Approval] = true
		}
		for _, d := range s.Decisions {
			if !known[d.Approval] && r.firstTime(run, s.Name, "decision", d.Approval) {
				r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, conveyorv1.EventDecisionAccepted, "Decide",
					"Approval %s (%s) taken into account for stage %s", d.Approval, d.Decision, s.Name)
			}
		}
		if prev.Phase == s.Phase {
			continue
		}
		r.observeStage(run, prev, s)
		if !r.firstTime(run, s.Name, string(s.Phase)) {
			continue
		}
		switch s.Phase {
		case conveyorv1.StageRunning:
			r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, conveyorv1.EventStageStarted, "StartStage", "Stage %s started: %s", s.Name, s.Message)
		case conveyorv1.StageWaiting:
			r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, conveyorv1.EventStageWaiting, "WaitStage", "Stage %s is %s", s.Name, s.Message)
		case conveyorv1.StageQueued:
			r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, conveyorv1.ReasonQueued, "QueueStage", "Stage %s %s", s.Name, s.Message)
		case conveyorv1.StageSucceeded:
			r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, conveyorv1.EventStageSucceeded, "FinishStage", "Stage %s succeeded: %s", s.Name, s.Message)
		case conveyorv1.StageFailed:
			r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, conveyorv1.EventStageFailed, "FinishStage", "Stage %s failed: %s", s.Name, s.Message)
		case conveyorv1.StageRejected:
			r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, conveyorv1.ReasonRejected, "FinishStage", "Stage %s %s", s.Name, s.Message)
		case conveyorv1.StageExpired:
			r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, conveyorv1.ReasonExpired, "FinishStage", "Stage %s %s", s.Name, s.Message)
		case conveyorv1.StageCancelled:
			r.Recorder.Eventf(run, nil, corev1.EventTypeNormal, conveyorv1.ReasonCancelled, "FinishStage", "Stage %s cancelled: %s", s.Name, s.Message)
		}
	}
	if next.Phase != run.Status.Phase && next.Phase.Finished() {
		r.recordRunEnd(run, next.Phase)
	}
}

// recordRunEnd counts a finished run and tells it in an Event, once.
func (r *Reconciler) recordRunEnd(run *conveyorv1.PipelineRun, phase conveyorv1.RunPhase) {
	if !r.firstTime(run, "run", string(phase)) {
		return
	}
	runsFinished.WithLabelValues(string(phase)).Inc()
	typ := corev1.EventTypeWarning
	if phase == conveyorv1.RunSucceeded || phase == conveyorv1.RunCancelled {
		typ = corev1.EventTypeNormal
	}
	r.Recorder.Eventf(run, nil, typ, string(phase), "FinishRun", "Run %s", strings.ToLower(string(phase)))
}

// observeStage records a stage's wait for people when it ends, and its
// duration when it finishes, each once: a stale read of the run may show the
// same wait ending as another transition.
func (r *Reconciler) observeStage(run *conveyorv1.PipelineRun, prev, next conveyorv1.StageStatus) {
	if prev.Phase == conveyorv1.StageQueued && next.Phase != conveyorv1.StageQueued && prev.StartTime != nil && r.firstTime(run, next.Name, "queued") {
		end := next.StartTime
		if next.Phase.Finished() && next.CompletionTime != nil {
			end = next.CompletionTime
		}
		if end != nil {
			environmentQueueWait.WithLabelValues(prev.Namespace).Observe(end.Sub(prev.StartTime.Time).Seconds())
		}
	}
	if prev.Phase == conveyorv1.StageWaiting && prev.StartTime != nil && r.firstTime(run, next.Name, "waited") {
		end := next.StartTime
		if next.Phase.Finished() && next.CompletionTime != nil {
			end = next.CompletionTime
		}
		if end != nil {
			approvalWait.WithLabelValues(next.Name).Observe(end.Sub(prev.StartTime.Time).Seconds())
		}
	}
	if next.Phase.Finished() && next.StartTime != nil && next.CompletionTime != nil && r.firstTime(run, next.Name, "finished") {
		stageDuration.WithLabelValues(next.Name, string(next.Phase)).Observe(next.CompletionTime.Sub(next.StartTime.Time).Seconds())
	}
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
	base := client.MergeFromWithOptions(run.DeepCopy(), client.MergeFromWithOptimisticLock{})
	controllerutil.RemoveFinalizer(run, conveyorv1.CleanupFinalizer)
	if err := r.Patch(ctx, run, base); err != nil {
		return client.IgnoreNotFound(fmt.Errorf("removing finalizer: %w", err))
	}
	return nil
}

// SetupWithManager watches runs, their Jobs in any namespace, their Approvals,
// and Pipelines that runs wait for.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.Now == nil {
		r.Now = metav1.Now
	}
	// A few transitions per run in flight; the oldest are forgotten first.
	r.recorded = lru.New(50000)
	r.latest = lru.New(10000)
	queuedDeploys.use(mgr.GetClient(), mgr.Elected())
	return ctrl.NewControllerManagedBy(mgr).
		For(&conveyorv1.PipelineRun{}).
		Named("pipelinerun").
		WithOptions(opts).
		Watches(&batchv1.Job{}, handler.EnqueueRequestsFromMapFunc(jobToRun)).
		Watches(&conveyorv1.Approval{}, handler.EnqueueRequestsFromMapFunc(approvalToRun)).
		Watches(&conveyorv1.Pipeline{}, handler.EnqueueRequestsFromMapFunc(r.pipelineToWaitingRuns)).
		Watches(&conveyorv1.PipelineRun{}, r.environmentQueue()).
		Complete(r)
}

// jobToRun maps a Job, in the run's namespace or an environment's, to its run.
func jobToRun(_ context.Context, o client.Object) []reconcile.Request {
	ns, name, ok := strings.Cut(o.GetAnnotations()[conveyorv1.AnnotationRun], "/")
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
}

// approvalToRun maps an Approval to the run it names.
func approvalToRun(_ context.Context, o client.Object) []reconcile.Request {
	a := o.(*conveyorv1.Approval)
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.PipelineRunRef.Name}}}
}

// pipelineToWaitingRuns maps a Pipeline to the runs that have not snapshotted it yet.
func (r *Reconciler) pipelineToWaitingRuns(ctx context.Context, o client.Object) []reconcile.Request {
	runs := &conveyorv1.PipelineRunList{}
	if err := r.List(ctx, runs, client.InNamespace(o.GetNamespace()), client.MatchingFields{index.RunPipeline: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing runs of pipeline", "pipeline", klog.KObj(o))
		return nil
	}
	var reqs []reconcile.Request
	for _, run := range runs.Items {
		if run.Status.PipelineSpec == nil && !run.Status.Phase.Finished() {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&run)})
		}
	}
	return reqs
}
