// Package pipelinerun reconciles PipelineRuns: it observes a run's world (its
// Pipeline, Jobs, Approvals and environments' locks), asks the engine for one
// decision, acts on it (locks, Job creates and deletes) and writes the run's
// status, telling each transition once in an Event and a metric.
package pipelinerun

import (
	"context"
	"errors"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/gitstatus"
	"github.com/conveyor-dev/conveyor/controllers/index"
	"github.com/conveyor-dev/conveyor/controllers/ledger"
	"github.com/conveyor-dev/conveyor/controllers/notify"
	"github.com/conveyor-dev/conveyor/controllers/status"
)

// Reconciler runs the stages of PipelineRuns as batch/v1 Jobs.
type Reconciler struct {
	client.Client
	// APIReader reads around the cache where a stale read would lose work.
	APIReader client.Reader
	Recorder  events.EventRecorder
	// Notifier sends a CloudEvent for each transition told (nil: none).
	Notifier *notify.Notifier
	// Reporter reports stages on commits for Pipelines that ask (nil: none).
	Reporter *gitstatus.Reporter
	// Now returns the current time; tests may pin it.
	Now func() metav1.Time
	// TrustUnrecordedApprovers counts Approvals without a recorded approver
	// (the webhooks not registered): local use only.
	TrustUnrecordedApprovers bool

	fresh *freshness
	told  *onceSet
	locks *lockMemory
	// jobsLeft has the versions at which Jobs left the cache.
	jobsLeft *jobsLeft
	// handed wakes the runs handed an environment's lock (handOver).
	handed chan event.GenericEvent
}

// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelineruns,verbs=get;list;watch;update;patch;delete
// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelineruns/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelineruns/finalizers,verbs=update
// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelines,verbs=get;list;watch
// +kubebuilder:rbac:groups=conveyor.dev,resources=approvals,verbs=get;list;watch
// +kubebuilder:rbac:groups=batch,resources=jobs,verbs=get;list;watch
// Creating and deleting Jobs is granted per namespace: see config/rbac/job_runner_role.yaml.
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// Environment locks are the Environments' status (environments/status, granted in controllers/environment).

// Reconcile moves one PipelineRun forward: observe → decide → ledger → act → status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	start := time.Now()
	run, wait, err := r.fetch(ctx, req.NamespacedName)
	if run == nil || wait > 0 || err != nil {
		return ctrl.Result{RequeueAfter: wait}, err
	}
	if !run.DeletionTimestamp.IsZero() {
		return ctrl.Result{}, r.reconcileDelete(ctx, run)
	}
	// observe: the run's Pipeline (until it has a snapshot), Jobs,
	// Approvals and the locks of the environments it is ready to deploy to.
	facts, err := r.observe(ctx, run)
	if err != nil {
		return ctrl.Result{}, err
	}
	// decide: one pure decision.
	plan := engine.DecideRun(facts)
	// ledger: a tag run's verdicts and deploys, and the deploys in their
	// Environments' records, before anything acts on them.
	if !plan.Unchanged {
		if err := r.record(ctx, run, &plan.Status, facts); err != nil {
			return ctrl.Result{}, err
		}
	}
	// act: take locks, create and delete Jobs; what happened goes into the plan.
	outcome, lost, actErr := r.act(ctx, run, facts, &plan)
	if lost {
		// Another run took the lock first: decide again from what is then observed.
		ctrl.LoggerFrom(ctx).V(1).Info("Lost an environment lock to another run", "took", time.Since(start), "retryIn", lockRetry)
		return ctrl.Result{RequeueAfter: lockRetry}, nil
	}
	// status: what the plan and its outcome say, each transition told once,
	// then one patch.
	blocked := plan.Record(outcome)
	r.tell(run, &plan, blocked)
	res, err := r.writeStatus(ctx, run, &plan, blocked, actErr)
	ctrl.LoggerFrom(ctx).V(1).Info("Reconciled", "took", time.Since(start), "phase", run.Status.Phase, "stage", run.Status.CurrentStage,
		"unchanged", plan.Unchanged, "locksTaken", len(plan.Take), "jobsCreated", len(outcome.Created), "requeueAfter", res.RequeueAfter, "error", err)
	return res, err
}

// record writes what the run's next status completes into the release
// ledger, and into its Environments' status the deploys it records and the
// locks it passes on (passOn), side by side: they are separate objects, each
// write is idempotent, and when one fails the run is decided again and
// neither record is told. Written one after the other, they were round
// trips in a row when a tag run's deploy ends, on the way to the next
// deploy in that environment. The Environments are written with the
// reconcile's context, not the group's, which a failed ledger write
// cancels: a lock handed over must wake the run it was handed to. With the
// group's context, a Release write that met a conflict cancelled it while
// the handover went through, the wake-up's send raced that cancellation
// (passOnIn's select), and the run handed the lock waited for its recheck
// (engine.QueuedRecheck): 12.8 s in a bench trial's debug log.
func (r *Reconciler) record(ctx context.Context, run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus, facts engine.Facts) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return ledger.Record(gctx, r.Client, r.Recorder, run, st, facts.Ledger) })
	g.Go(func() error { return r.passOn(ctx, run, endings(run, st), facts.Policy) })
	return g.Wait()
}

// fetch reads the run: from the cache, or from the API server where the cache
// may not show this manager's own last write (freshness). A run that is gone
// is nil; wait > 0 when the cache is behind and its watch event is due.
func (r *Reconciler) fetch(ctx context.Context, key types.NamespacedName) (*conveyorv1.PipelineRun, time.Duration, error) {
	run := &conveyorv1.PipelineRun{}
	if err := r.Get(ctx, key, run); err != nil {
		return nil, 0, client.IgnoreNotFound(err)
	}
	if !run.DeletionTimestamp.IsZero() {
		return run, 0, nil
	}
	switch r.fresh.check(run) {
	case waitForCache:
		return nil, staleRecheck, nil
	case readAPI:
		if err := r.APIReader.Get(ctx, key, run); err != nil {
			return nil, 0, client.IgnoreNotFound(err)
		}
		r.fresh.read(run)
	}
	return run, 0, nil
}

// writeStatus writes the plan's status with one merge patch (none when
// nothing changed). observedGeneration moves only when the reconcile
// succeeded: a stage blocked in its namespace, or an act that failed, is
// retried with backoff.
func (r *Reconciler) writeStatus(ctx context.Context, run *conveyorv1.PipelineRun, plan *engine.Plan, blocked []engine.Blocked, actErr error) (ctrl.Result, error) {
	before := run.Status.DeepCopy()
	next := plan.Status
	next.Conditions, next.ObservedGeneration = run.Status.Conditions, run.Status.ObservedGeneration
	if !plan.Unchanged {
		status.SetHealth(&next.Conditions, run.Generation, plan.Health, plan.Reason, plan.Message)
	}
	err := actErr
	for _, b := range blocked {
		err = errors.Join(err, b)
	}
	if err == nil {
		next.ObservedGeneration = run.Generation
	}
	run.Status = next
	if perr := status.Patch(ctx, r.Client, run, before, &run.Status); perr != nil {
		return ctrl.Result{}, errors.Join(err, perr)
	}
	r.fresh.wrote(run, before.Phase.Finished())
	if err != nil {
		return ctrl.Result{}, err // retried with backoff
	}
	if plan.Terminal != nil {
		return ctrl.Result{}, reconcile.TerminalError(plan.Terminal)
	}
	return ctrl.Result{RequeueAfter: plan.RequeueAfter}, nil
}

// SetupWithManager watches runs, their Jobs in any namespace, their Approvals,
// and Pipelines that runs wait for.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.Now == nil {
		r.Now = metav1.Now
	}
	// A few transitions per run in flight; the oldest are forgotten first.
	r.told = newOnceSet(50000)
	r.fresh = newFreshness(10000)
	r.locks = newLockMemory()
	r.jobsLeft = newJobsLeft(10000)
	r.handed = make(chan event.GenericEvent, 1024)
	queuedDeploys.use(mgr.GetClient(), mgr.Elected())
	return ctrl.NewControllerManagedBy(mgr).
		For(&conveyorv1.PipelineRun{}, builder.WithPredicates(r.notOwnStatusWrite())).
		Named("pipelinerun").
		WithOptions(opts).
		Watches(&batchv1.Job{}, r.jobHandler()).
		Watches(&conveyorv1.Approval{}, approvalHandler()).
		Watches(&conveyorv1.Pipeline{}, handler.EnqueueRequestsFromMapFunc(r.pipelineToWaitingRuns)).
		Watches(&conveyorv1.Release{}, handler.EnqueueRequestsFromMapFunc(r.releaseToRuns)).
		Watches(&conveyorv1.Environment{}, r.environmentHandler()).
		Watches(&conveyorv1.PipelineRun{}, r.environmentQueue()).
		WatchesRawSource(source.Channel(r.handed, &handler.EnqueueRequestForObject{})).
		Complete(r)
}

// notOwnStatusWrite lets through every event of a run but an update of its
// status alone. Only the manager writes a run's status, from a reconcile
// that decided on what it observed then: its own write brings nothing new to
// decide on. Letting it through cost a reconcile per status write, and
// looped for queued runs: each write (the environment's holder, named in
// the queued stage) brought the run back, to find a newer holder and write
// again, once or twice per handoff for every run queued there (with 50
// queued, handoff p50 227–407 ms against 78–145 ms without, in
// docs/performance.md). What moves a run comes as events of its Jobs,
// Approvals, Pipeline, Release and Environments, as its spec or metadata
// changing (cancel, delete), or as the requeue its reconcile asked for;
// queued runs that the environment's queue does not wake learn of a new
// holder at their periodic recheck (engine.QueuedRecheck). The one status
// write let through is the one a reconcile waits for, having met a cache
// that did not show it yet (freshness.awaited): without its event, that
// reconcile came back only at staleRecheck, 200 ms later.
func (r *Reconciler) notOwnStatusWrite() predicate.Funcs {
	return predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
		old, now := e.ObjectOld, e.ObjectNew
		return old.GetGeneration() != now.GetGeneration() ||
			!equality.Semantic.DeepEqual(old.GetLabels(), now.GetLabels()) ||
			!equality.Semantic.DeepEqual(old.GetAnnotations(), now.GetAnnotations()) ||
			!equality.Semantic.DeepEqual(old.GetFinalizers(), now.GetFinalizers()) ||
			!equality.Semantic.DeepEqual(old.GetOwnerReferences(), now.GetOwnerReferences()) ||
			!old.GetDeletionTimestamp().Equal(now.GetDeletionTimestamp()) ||
			r.fresh.awaited(now)
	}}
}

// jobToRun maps a Job, in the run's namespace or an environment's, to its run.
func jobToRun(_ context.Context, o client.Object) []reconcile.Request {
	ns, name, ok := strings.Cut(o.GetAnnotations()[conveyorv1.AnnotationRun], "/")
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}}
}

// PriorityPersonWaiting is the work queue priority of a run that a new
// Approval names: a person just pressed trigger or approve and waits for the
// stage to move, so the run goes ahead of the runs waiting in the queue for
// their Jobs' progress. The work queue is controller-runtime's priority
// queue; events of the cache's first list go last. (The same priority for
// the run an environment lets go next was tried: handoff p50 376 -> 501 ms,
// p99 1360 -> 991 ms in one 300-run trial each, no clear gain; not kept.)
const PriorityPersonWaiting = 10

// approvalHandler enqueues an Approval's run, a new Approval's ahead of the
// rest.
func approvalHandler() handler.EventHandler {
	mapped := handler.EnqueueRequestsFromMapFunc(approvalToRun)
	return handler.Funcs{
		CreateFunc: func(ctx context.Context, e event.CreateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if e.IsInInitialList {
				mapped.Create(ctx, e, q)
				return
			}
			addAhead(q, approvalToRun(ctx, e.Object)...)
		},
		UpdateFunc:  mapped.Update,
		DeleteFunc:  mapped.Delete,
		GenericFunc: mapped.Generic,
	}
}

// addAhead adds the requests at PriorityPersonWaiting (plainly when the
// queue has no priorities).
func addAhead(q workqueue.TypedRateLimitingInterface[reconcile.Request], reqs ...reconcile.Request) {
	pq, ok := q.(priorityqueue.PriorityQueue[reconcile.Request])
	if !ok {
		for _, r := range reqs {
			q.Add(r)
		}
		return
	}
	pq.AddWithOpts(priorityqueue.AddOpts{Priority: ptr.To(PriorityPersonWaiting)}, reqs...)
}

// approvalToRun maps an Approval to the run it names.
func approvalToRun(_ context.Context, o client.Object) []reconcile.Request {
	a := o.(*conveyorv1.Approval)
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.PipelineRunRef.Name}}}
}

// pipelineToWaitingRuns maps a Pipeline to the runs that have not snapshotted it yet.
func (r *Reconciler) pipelineToWaitingRuns(ctx context.Context, o client.Object) []reconcile.Request {
	return r.runsOf(ctx, o.GetNamespace(), o.GetName(), func(run *conveyorv1.PipelineRun) bool {
		return run.Status.PipelineSpec == nil
	})
}

// releaseToRuns maps a Release to the unfinished runs of its Pipeline that
// run a tag: a refusal stops those of the release and of its commit.
func (r *Reconciler) releaseToRuns(ctx context.Context, o client.Object) []reconcile.Request {
	rel := o.(*conveyorv1.Release)
	if rel.Status.Verdict != conveyorv1.VerdictRefused {
		return nil
	}
	return r.runsOf(ctx, rel.Namespace, rel.Spec.PipelineRef.Name, func(run *conveyorv1.PipelineRun) bool {
		return run.Spec.Git.Tag != ""
	})
}

// environmentToHeldRuns maps an Environment to the runs whose deploy stages
// it may let go: those Frozen or Blocked anywhere (a policy changed, a
// freeze lifted, a deploy recorded that another environment requires).
// Held runs are few. (Listing every Environment to look up its namespace's
// held runs was half the Environment copying that took 13 % of the
// manager's CPU in a bench profile, on every Environment write.)
func (r *Reconciler) environmentToHeldRuns(ctx context.Context, _ client.Object) []reconcile.Request {
	runs := &conveyorv1.PipelineRunList{}
	if err := r.List(ctx, runs, client.MatchingFields{index.RunHeld: index.Held}, client.UnsafeDisableDeepCopy); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing held runs")
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(runs.Items))
	for i := range runs.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&runs.Items[i])})
	}
	return reqs
}

// environmentHandler wakes, at an Environment's change, the held runs
// (environmentToHeldRuns), and when its lock is given back (its status
// names a holder no longer), the head of this manager's queue there: a
// deploy of another shard, or of a run deleted while it held the lock, has
// ended, and the head need not wait for its periodic recheck
// (engine.QueuedRecheck).
func (r *Reconciler) environmentHandler() handler.EventHandler {
	held := handler.EnqueueRequestsFromMapFunc(r.environmentToHeldRuns)
	return handler.Funcs{
		CreateFunc: held.Create,
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			held.Update(ctx, e, q)
			old, now := e.ObjectOld.(*conveyorv1.Environment), e.ObjectNew.(*conveyorv1.Environment)
			if old.Status.HolderUID != "" && now.Status.HolderUID == "" {
				gone := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{UID: types.UID(old.Status.HolderUID)}}
				r.wakeHead(ctx, now.Spec.Namespace, gone, q)
			}
		},
		DeleteFunc:  held.Delete,
		GenericFunc: held.Generic,
	}
}

// runsOf are the unfinished runs of a Pipeline that match.
func (r *Reconciler) runsOf(ctx context.Context, namespace, pipeline string, match func(*conveyorv1.PipelineRun) bool) []reconcile.Request {
	runs := &conveyorv1.PipelineRunList{}
	if err := r.List(ctx, runs, client.InNamespace(namespace), client.MatchingFields{index.RunPipeline: pipeline}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing runs of pipeline", "pipeline", klog.KRef(namespace, pipeline))
		return nil
	}
	var reqs []reconcile.Request
	for i := range runs.Items {
		if run := &runs.Items[i]; !run.Status.Phase.Finished() && match(run) {
			reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(run)})
		}
	}
	return reqs
}
