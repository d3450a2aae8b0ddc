package pipelinerun

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
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
// Lease named conveyorv1.EnvironmentLease in the environment's namespace
// whose holder is the run and stage deploying there, or that deployed there
// last. The lock is free when that stage has ended (or its run is gone), as
// the API server has the run: nothing needs to give it back, so a crash can
// never leave it held. (A deploy that ends hands it to the next queued run,
// handOver; a queued stage held back by a freeze or policy gives it back,
// giveBack: a Lease naming no holder is free.) Taking it is a create, or an
// update of the Lease as read (or as this manager last wrote it,
// leaseMemory): the API server's optimistic concurrency lets only one run
// take it.
// Who goes next is the engine's queue verdict (engine.QueueVerdict).

// lockRetry is how soon a run that lost the race for a free lock looks again.
const lockRetry = 100 * time.Millisecond

// observeLocks reads the locks of the environments the run is ready to
// deploy to (engine.LocksWanted): the Lease, whether its holder is done with
// it, and the runs queued there.
func (r *Reconciler) observeLocks(ctx context.Context, f *engine.Facts) error {
	for _, req := range engine.LocksWanted(*f) {
		l, err := r.readLock(ctx, f.Run, req)
		switch reason := blockedReason(err); {
		case err == nil:
			if f.Locks == nil {
				f.Locks = map[string]engine.Lock{}
			}
			f.Locks[req.Environment] = l
		case reason != "":
			if f.Blocked == nil {
				f.Blocked = map[string]string{}
			}
			f.Blocked[req.Environment] = reason
		default:
			return fmt.Errorf("reading the lock of environment %s: %w", req.Environment, err)
		}
	}
	return nil
}

// readLock reads an environment's lock for the run's stage. The Lease is
// read from the API server, or from this manager's last copy when that
// names another holder (leaseMemory); the queue from the cache.
func (r *Reconciler) readLock(ctx context.Context, run *conveyorv1.PipelineRun, req engine.LockRequest) (engine.Lock, error) {
	l := engine.Lock{}
	lease, err := r.readLease(ctx, req.Environment, run.UID)
	switch {
	case err != nil:
		return l, err
	case lease != nil && ptr.Deref(lease.Spec.HolderIdentity, "") == "":
		l.Lease = lease // given back (giveBack): free, taken by updating it
	case lease != nil:
		l.Lease = lease
		l.Holder = &engine.LockHolder{Run: ptr.Deref(lease.Spec.HolderIdentity, ""),
			Stage: lease.Annotations[conveyorv1.AnnotationStage], UID: types.UID(lease.Labels[conveyorv1.LabelRunUID])}
		if l.Holder.UID != run.UID {
			if err := r.released(ctx, l.Holder); err != nil {
				return l, err
			}
		}
	}
	if l.Holder != nil && l.Holder.UID == run.UID && l.Holder.Stage == req.Stage {
		return l, nil // held: the queue does not matter
	}
	l.Queued, err = r.queuedFor(ctx, req.Environment)
	return l, err
}

// readLease is env's Lease: the copy this manager last wrote or read when
// it names a holder other than the run, else read from the API server; nil
// when it was never taken (a missing namespace shows when it is created).
func (r *Reconciler) readLease(ctx context.Context, env string, run types.UID) (*coordinationv1.Lease, error) {
	if lease := r.leases.heldByOther(env, run); lease != nil {
		return lease, nil
	}
	lease := &coordinationv1.Lease{}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: env, Name: conveyorv1.EnvironmentLease}, lease)
	switch {
	case apierrors.IsNotFound(err):
		r.leases.remember(env, nil)
		return nil, nil
	case err != nil:
		return nil, err
	}
	r.leases.remember(env, lease)
	return lease, nil
}

// released learns whether a lock's holder is done with it: the run is gone,
// finished, or its stage there ended. It reads the holding run from the API
// server, never a cache that could be behind; while the holder still
// deploys, h.Deploying is that run.
func (r *Reconciler) released(ctx context.Context, h *engine.LockHolder) error {
	ns, name, _ := strings.Cut(h.Run, "/")
	holder := &conveyorv1.PipelineRun{}
	// The cache may be behind the API server, never ahead: when it already
	// shows the holder's stage ended, so does the API server.
	if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, holder); err == nil && holder.UID == h.UID && engine.ReleasedBy(holder, h.Stage) {
		h.Released = true
		return nil
	}
	err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, holder)
	switch {
	case apierrors.IsNotFound(err):
		h.Released = true
	case err != nil:
		return err
	case holder.UID != h.UID || !holder.DeletionTimestamp.IsZero():
		h.Released = true
	default:
		h.Released = engine.ReleasedBy(holder, h.Stage)
		if !h.Released {
			h.Deploying = holder
		}
	}
	return nil
}

// takeLock makes the run's stage the holder of env's lock: it creates the
// Lease, or updates the one read, which the API server refuses if another
// run changed it since. lost is true when another run took it first, or
// the Lease read is gone (the next reconcile reads it again).
func (r *Reconciler) takeLock(ctx context.Context, run *conveyorv1.PipelineRun, req engine.LockRequest, read *coordinationv1.Lease) (lost bool, err error) {
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: req.Environment, Name: conveyorv1.EnvironmentLease}}
	if read != nil {
		lease = read.DeepCopy()
	}
	now := metav1.MicroTime{Time: r.Now().Time}
	lease.Labels = map[string]string{conveyorv1.LabelRunUID: string(run.UID), conveyorv1.LabelManagedBy: conveyorv1.ManagedByValue}
	lease.Annotations = map[string]string{conveyorv1.AnnotationStage: req.Stage, conveyorv1.AnnotationRun: engine.RunKey(run)}
	lease.Spec.HolderIdentity, lease.Spec.AcquireTime = ptr.To(engine.RunKey(run)), &now
	if read != nil {
		err = r.Update(ctx, lease)
	} else {
		err = r.Create(ctx, lease)
	}
	switch {
	case err == nil:
		r.leases.remember(req.Environment, lease)
	case apierrors.IsAlreadyExists(err) || apierrors.IsConflict(err),
		read != nil && apierrors.IsNotFound(err): // deleted since it was read
		r.leases.remember(req.Environment, nil)
		return true, nil
	}
	return false, err
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

// environmentQueue wakes queued runs when their environment may have moved,
// and only those that can act: when a stage that held or waited for an
// environment ends (or its run is deleted), the head of that environment's
// queue, which takes it; when a run joins a queue, the older queued runs of
// its Pipeline, which a NewestFirst queue supersedes, and the run itself when
// it joins at the head (wakeOnJoin). The other queued runs
// learn of a new holder at their periodic recheck (engine.QueuedRecheck):
// waking the whole queue at every handoff would cost a reconcile and a status
// write per queued run, and delay the one run that can go.
func (r *Reconciler) environmentQueue() handler.TypedEventHandler[client.Object, reconcile.Request] {
	return handler.TypedFuncs[client.Object, reconcile.Request]{
		UpdateFunc: func(ctx context.Context, e event.TypedUpdateEvent[client.Object], q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			old, now := e.ObjectOld.(*conveyorv1.PipelineRun), e.ObjectNew.(*conveyorv1.PipelineRun)
			// A finished run's stages in the cache keep no namespace
			// (the manager's cache transform): the environment is read from the old object.
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
					r.wakeOnJoin(ctx, ss.Namespace, now, q)
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

// wakeHead enqueues the run env's queue lets go next (engine.QueueHead).
func (r *Reconciler) wakeHead(ctx context.Context, env string, except *conveyorv1.PipelineRun, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	if l := r.leases.heldByOther(env, except.UID); l != nil && ptr.Deref(l.Spec.HolderIdentity, "") != "" {
		// The lock has moved on, handed over (and its new holder woken then)
		// or taken; the queue's head learns of it when that deploy ends.
		return
	}
	queued, err := r.queuedFor(ctx, env)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing queued runs", "environment", env)
		return
	}
	if head := engine.QueueHead(queued, except.UID); head != nil {
		ctrl.LoggerFrom(ctx).V(1).Info("Waking the head of an environment's queue", "environment", env, "run", klog.KObj(head), "queued", len(queued))
		q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(head)})
	}
}

// wakeOnJoin wakes, as a run joins env's queue, the runs of its Pipeline
// queued there before it, which a NewestFirst queue supersedes; and the run
// itself when it joins at the queue's head. The deploy before it may have
// ended while the run decided to queue, and that end's wake-up (wakeHead)
// found the queue without it, the cache not showing the run queued yet;
// its own status write brings no reconcile (notOwnStatusWrite), so it waited
// for its recheck (engine.QueuedRecheck, 15 s). This race was found by
// reading the code, not seen in a trace. Of the two events, the one the
// cache shows second sees both.
func (r *Reconciler) wakeOnJoin(ctx context.Context, env string, joined *conveyorv1.PipelineRun, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
	queued, err := r.queuedFor(ctx, env)
	if err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing queued runs", "environment", env)
		return
	}
	if head := engine.QueueHead(queued, ""); head != nil && head.UID == joined.UID {
		q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(joined)})
	}
	if engine.QueueOf(joined) != conveyorv1.QueueNewestFirst {
		return
	}
	for _, run := range queued {
		if engine.NewerInLine(run, joined) {
			q.Add(reconcile.Request{NamespacedName: client.ObjectKeyFromObject(run)})
		}
	}
}

// handOver passes the lock of each environment whose deploy the run's next
// status ends to the run that environment's queue lets go next
// (engine.HandOver), before that status is written: the head, woken at once,
// finds itself the holder and creates its Job, instead of waiting for the
// ended run's status write to reach the cache and then taking the lock. The
// lock still changes hands in one write, an update of the Lease as this
// manager last wrote it for the ended deploy, which the API server refuses if
// anyone changed it since. The head's stage is queued, which no other run
// takes for released (engine.ReleasedBy), and before its Job it reads the
// Lease from the API server, as any holder does. Nothing is handed where the
// run still has a stage to deploy to that environment, where this manager
// does not know the Lease as naming the ended deploy, or where the head
// could not deploy now (a freeze): the next run then takes the lock itself.
// A handover that fails changes nothing for the ended run.
func (r *Reconciler) handOver(ctx context.Context, run *conveyorv1.PipelineRun, next *conveyorv1.PipelineRunStatus, pol engine.Policy) {
	for env, stage := range engine.EndedDeploys(&run.Status, next) {
		if lease := r.leases.heldBy(env, run.UID, stage); lease != nil && !deploysAgain(run, next, env, stage) {
			r.passLock(ctx, run, env, lease, pol)
		}
	}
}

// giveBack lets go of the locks the run holds for stages its next status
// holds back (Frozen, Blocked): a stage handed the lock while queued, then
// stopped by a freeze or a policy changed meanwhile (or one that took the
// lock before a restart and is stopped now), would otherwise keep every
// other deploy out until it ends. The lock is handed to the queue's next run,
// or else left with no holder, which any run may take. The Lease is read
// from the API server when this manager knows nothing of it.
func (r *Reconciler) giveBack(ctx context.Context, run *conveyorv1.PipelineRun, next *conveyorv1.PipelineRunStatus, pol engine.Policy) error {
	for _, ss := range next.Stages {
		if ss.Namespace == "" || (ss.Phase != conveyorv1.StageFrozen && ss.Phase != conveyorv1.StageBlocked) {
			continue
		}
		if !r.leases.known(ss.Namespace) {
			if _, err := r.readLease(ctx, ss.Namespace, run.UID); err != nil {
				return fmt.Errorf("reading the lock of environment %s: %w", ss.Namespace, err)
			}
		}
		if lease := r.leases.heldBy(ss.Namespace, run.UID, ss.Name); lease != nil && r.passLock(ctx, run, ss.Namespace, lease, pol) {
			r.freeLock(ctx, ss.Namespace, lease)
		}
	}
	return nil
}

// passLock updates env's Lease, as this manager has it naming run, to name
// the run the queue lets go next (engine.HandOver), and wakes that run. It
// reports true when the queue has nobody to hand it to; a refused update
// (the Lease changed since) leaves it: the next run takes the lock itself.
func (r *Reconciler) passLock(ctx context.Context, run *conveyorv1.PipelineRun, env string, lease *coordinationv1.Lease, pol engine.Policy) (nobody bool) {
	log := ctrl.LoggerFrom(ctx).WithValues("environment", env)
	queued, err := r.queuedFor(ctx, env)
	if err != nil {
		log.V(1).Info("The lock was not passed on", "error", err)
		return false
	}
	h := engine.HandOver(pol, env, queued, run.UID, r.Now().Time)
	if h == nil {
		return true
	}
	lost, err := r.takeLock(ctx, h.To, engine.LockRequest{Environment: env, Stage: h.Stage}, lease)
	if lost || err != nil {
		log.V(1).Info("The lock was not handed over; the next run takes it itself", "to", klog.KObj(h.To), "error", err)
		return false
	}
	lockHandovers.WithLabelValues(env).Inc()
	log.V(1).Info("Handed an environment's lock over", "to", klog.KObj(h.To), "stage", h.Stage)
	select {
	case r.handed <- event.GenericEvent{Object: h.To}:
	case <-ctx.Done():
	}
	return false
}

// freeLock updates env's Lease, as read, to name no holder.
func (r *Reconciler) freeLock(ctx context.Context, env string, lease *coordinationv1.Lease) {
	lease.Spec.HolderIdentity, lease.Spec.AcquireTime = nil, nil
	lease.Labels = map[string]string{conveyorv1.LabelManagedBy: conveyorv1.ManagedByValue}
	lease.Annotations = nil
	if err := r.Update(ctx, lease); err != nil {
		r.leases.remember(env, nil)
		ctrl.LoggerFrom(ctx).V(1).Info("The lock was not given back", "environment", env, "error", err)
		return
	}
	r.leases.remember(env, lease)
	ctrl.LoggerFrom(ctx).V(1).Info("Gave an environment's lock back", "environment", env)
}

// deploysAgain reports whether a stage of the run other than the one given
// has yet to deploy to env.
func deploysAgain(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus, env, ended string) bool {
	return engine.StageAhead(run, st, func(s *conveyorv1.Stage) bool {
		return s.Name != ended && s.Environment != "" && engine.StageNamespace(run.Namespace, s) == env
	})
}
