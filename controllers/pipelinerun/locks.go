package pipelinerun

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
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
// only while its run holds that environment's lock, which is its
// Environment's status (holder, holderStage, holderUID, heldSince): the run
// and stage deploying there, or that deployed there last. Only Conveyor's
// managers write an Environment's status (RBAC: environments/status). The
// lock is free when nobody holds it, or when the holding stage has ended (or
// its run is gone), as the API server has the run: a crash can never leave
// it held. A deploy that ends gives it back in the write that records it,
// or hands it to the next queued run in that same write; a queued stage held
// back by a freeze or policy gives it back (passOn).
// Taking it is a status update of the Environment as read (or as this
// manager last wrote it, lockMemory): the API server's optimistic
// concurrency lets only one run take it. (Until 2026-12-03 the lock was a
// Lease in the environment's namespace, written beside the Environment's
// status: 3 writes and a read more per run of the seed's pipeline.)
// Who goes next is the engine's queue verdict (engine.QueueVerdict).

// lockRetry is how soon a run that lost the race for a free lock looks again.
const lockRetry = 100 * time.Millisecond

// observeLocks reads the locks of the environments the run is ready to
// deploy to (engine.LocksWanted): the holder, whether it is done with the
// lock, and the runs queued there. A namespace no single Environment names
// has no lock to read: the policy blocks the stage.
func (r *Reconciler) observeLocks(ctx context.Context, f *engine.Facts) error {
	for _, req := range engine.LocksWanted(*f) {
		env, breach := f.Policy.For(req.Environment)
		if breach != nil {
			continue
		}
		l, err := r.readLock(ctx, f.Run, req, env.Name)
		if err != nil {
			return fmt.Errorf("reading the lock of environment %s: %w", req.Environment, err)
		}
		if f.Locks == nil {
			f.Locks = map[string]engine.Lock{}
		}
		f.Locks[req.Environment] = l
	}
	return nil
}

// readLock reads an environment's lock for the run's stage. The Environment
// is read from the API server, or from this manager's last copy when that
// names another holder or none (lockMemory); the queue from the cache.
func (r *Reconciler) readLock(ctx context.Context, run *conveyorv1.PipelineRun, req engine.LockRequest, name string) (engine.Lock, error) {
	l := engine.Lock{}
	env, err := r.readEnvironment(ctx, req.Environment, name, run.UID)
	if err != nil {
		return l, err
	}
	l.Environment = env
	if l.Holder = engine.HolderOf(env); l.Holder == nil {
		if l.Holder, err = r.deployingThere(ctx, req.Environment, run.UID); err != nil {
			return l, err
		}
	}
	if l.Holder != nil && l.Holder.UID != run.UID {
		if err := r.released(ctx, l.Holder); err != nil {
			return l, err
		}
	}
	if l.Holder != nil && l.Holder.UID == run.UID && l.Holder.Stage == req.Stage {
		return l, nil // held: the queue does not matter
	}
	l.Queued, err = r.queuedFor(ctx, req.Environment)
	return l, err
}

// readEnvironment is the Environment holding ns's lock: the copy this
// manager last wrote or read when it names a holder other than the run, or
// none; else read from the API server.
func (r *Reconciler) readEnvironment(ctx context.Context, ns, name string, run types.UID) (*conveyorv1.Environment, error) {
	if env := r.locks.heldByOther(ns, run); env != nil && env.Name == name {
		return env, nil
	}
	env := &conveyorv1.Environment{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Name: name}, env); err != nil {
		r.locks.remember(ns, nil)
		return nil, err
	}
	r.locks.remember(ns, env)
	return env, nil
}

// deployingThere is, when an Environment names no holder, another run the
// cache shows deploying to its namespace: an Environment deleted and
// created again while a deploy runs starts with an empty status, and its
// lock must not be free until that deploy ends. (The cache holds this
// shard's runs only; see docs/performance.md.)
func (r *Reconciler) deployingThere(ctx context.Context, ns string, run types.UID) (*engine.LockHolder, error) {
	runs := &conveyorv1.PipelineRunList{}
	if err := r.List(ctx, runs, client.MatchingFields{index.RunDeploying: ns}, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing runs deploying to %s: %w", ns, err)
	}
	for i := range runs.Items {
		other := &runs.Items[i]
		if other.UID == run {
			continue
		}
		for _, ss := range other.Status.Stages {
			if ss.Namespace == ns && ss.Phase == conveyorv1.StageRunning {
				return &engine.LockHolder{Run: engine.RunKey(other), Stage: ss.Name, UID: other.UID}, nil
			}
		}
	}
	return nil, nil
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

// takeLock makes the run's stage the holder of an environment's lock: a
// status update of its Environment as read, which the API server refuses if
// anyone changed it since. lost is true when that happened, or the
// Environment is gone (the next reconcile reads it again).
func (r *Reconciler) takeLock(ctx context.Context, run *conveyorv1.PipelineRun, req engine.LockRequest, read *conveyorv1.Environment) (lost bool, err error) {
	if read == nil {
		return true, nil
	}
	env := read.DeepCopy()
	engine.SetHolder(&env.Status, run, req.Stage, r.Now())
	err = r.writeLock(ctx, read, env)
	switch {
	case err == nil:
		r.locks.remember(req.Environment, env)
	case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
		r.locks.remember(req.Environment, nil)
		return true, nil
	}
	return false, err
}

// writeLock writes an Environment's status as changed from read: a merge
// patch of the fields that changed, which the API server applies only to
// that version of the Environment (optimistic concurrency, as an update;
// the patch carries the holder, or the deploy record, not the whole status,
// whose record keeps up to 100 deploys).
func (r *Reconciler) writeLock(ctx context.Context, read, next *conveyorv1.Environment) error {
	return r.Status().Patch(ctx, next, client.MergeFromWithOptions(read, client.MergeFromWithOptimisticLock{}))
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
	if e := r.locks.heldByOther(env, except.UID); e != nil && e.Status.HolderUID != "" {
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

// ending is what a run's next status ends in one environment namespace:
// the deploys to record there, and the stage whose lock it lets go ("" when
// none).
type ending struct {
	deploys []conveyorv1.Deploy
	letGo   string
}

// endings are, per environment namespace, the deploys the run's next status
// completes (engine.DeploysDone) and the locks it lets go: of a deploy that
// ends (engine.EndedDeploys) where the run has no other stage yet to deploy
// there, and of a queued stage held back (Frozen, Blocked): a stage handed
// the lock while queued, then stopped by a freeze or a policy changed
// meanwhile, would otherwise keep every other deploy out until it ends.
func endings(run *conveyorv1.PipelineRun, next *conveyorv1.PipelineRunStatus) map[string]*ending {
	out := map[string]*ending{}
	at := func(ns string) *ending {
		if out[ns] == nil {
			out[ns] = &ending{}
		}
		return out[ns]
	}
	for _, d := range engine.DeploysDone(run, next) {
		for _, ss := range next.Stages {
			if ss.Name == d.Stage && ss.Namespace != "" {
				at(ss.Namespace).deploys = append(at(ss.Namespace).deploys, d)
			}
		}
	}
	for ns, stage := range engine.EndedDeploys(&run.Status, next) {
		if !deploysAgain(run, next, ns, stage) {
			at(ns).letGo = stage
		}
	}
	for _, ss := range next.Stages {
		if ss.Namespace != "" && (ss.Phase == conveyorv1.StageFrozen || ss.Phase == conveyorv1.StageBlocked) {
			at(ss.Namespace).letGo = ss.Name
		}
	}
	return out
}

// passOn writes what the run's next status ends in each environment (its
// endings) into that Environment's status, one update per Environment,
// before the run's status says so: a deploy told is a deploy recorded. The
// same update passes the lock on where the run lets it go and holds it: to
// the run the environment's queue lets go next (engine.HandOver), woken at
// once, which finds itself the holder and creates its Job instead of
// waiting for the ended run's status write to reach the cache; or, with
// nobody to hand it to, to no one. The head's stage is queued, which no
// other run takes for released (engine.ReleasedBy), and before its Job it
// reads the Environment from the API server, as any holder does. Nothing is
// handed in an open freeze window: the lock is given back. The first try
// writes the Environment as this manager last wrote it naming the run (or,
// where the run lets a lock go and this manager has no such copy, as read
// from the API server; where it only records, as the cache has it); the
// API server refuses it if that is behind (optimistic concurrency), and
// each retry reads it from the API server: many runs write one Environment.
// Where the run neither records a deploy nor holds the lock, nothing is
// written.
func (r *Reconciler) passOn(ctx context.Context, run *conveyorv1.PipelineRun, ends map[string]*ending, pol engine.Policy) error {
	var errs []error
	for ns, end := range ends {
		env, breach := pol.For(ns)
		if breach != nil {
			continue // no Environment to record in (deleted while it deployed)
		}
		if err := r.passOnIn(ctx, run, ns, env, end, pol); err != nil {
			errs = append(errs, fmt.Errorf("recording in Environment %s: %w", env.Name, err))
		}
	}
	return errors.Join(errs...)
}

// passOnIn is passOn's update of one Environment: whom the lock goes to,
// one write (retried on conflict), then the wake-up of the run handed it.
func (r *Reconciler) passOnIn(ctx context.Context, run *conveyorv1.PipelineRun, ns string, env *conveyorv1.Environment, end *ending, pol engine.Policy) error {
	var to *engine.Handover
	if end.letGo != "" {
		queued, err := r.queuedFor(ctx, ns)
		if err != nil {
			return err
		}
		to = engine.HandOver(pol, ns, queued, run.UID, r.Now().Time)
	}
	// The Environment as this manager last wrote it naming the run; else,
	// where the run may hold the lock, as the API server has it (after a
	// restart: a stage held back must give back the lock it took before,
	// which a cache behind would not show); else as the cache has it.
	fresh := r.locks.heldBy(ns, run.UID, end.letGo)
	if fresh == nil && end.letGo == "" {
		fresh = env.DeepCopy()
	}
	var handed *engine.Handover
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if fresh == nil {
			fresh = &conveyorv1.Environment{}
			if err := r.APIReader.Get(ctx, types.NamespacedName{Name: env.Name}, fresh); err != nil {
				return err
			}
		}
		next, read := fresh, fresh.DeepCopy()
		fresh = nil // a retry reads the API server
		var changed bool
		if changed, handed = r.applyEnding(next, run, end, to); !changed {
			return nil
		}
		if err := r.writeLock(ctx, read, next); err != nil {
			r.locks.remember(ns, nil)
			return err
		}
		r.locks.remember(ns, next)
		return nil
	})
	if err != nil {
		return client.IgnoreNotFound(err)
	}
	if handed != nil {
		r.wakeHanded(ctx, ns, handed)
	}
	return nil
}

// applyEnding changes an Environment's status as the run's ending there
// says: its deploys recorded, and the lock, where the run's stage holds
// it, handed to `to` (or to nobody when nil). handed is `to` when it was.
func (r *Reconciler) applyEnding(env *conveyorv1.Environment, run *conveyorv1.PipelineRun, end *ending, to *engine.Handover) (changed bool, handed *engine.Handover) {
	st := &env.Status
	for _, d := range end.deploys {
		changed = engine.RecordDeploy(st, d) || changed
	}
	if end.letGo == "" || !engine.Holds(env, run.UID, end.letGo) {
		return changed, nil
	}
	if to == nil {
		engine.SetHolder(st, nil, "", r.Now())
		return true, nil
	}
	engine.SetHolder(st, to.To, to.Stage, r.Now())
	return true, to
}

// wakeHanded counts a handover and wakes the run handed the lock.
func (r *Reconciler) wakeHanded(ctx context.Context, ns string, h *engine.Handover) {
	lockHandovers.WithLabelValues(ns).Inc()
	ctrl.LoggerFrom(ctx).V(1).Info("Handed an environment's lock over", "environment", ns, "to", klog.KObj(h.To), "stage", h.Stage)
	select {
	case r.handed <- event.GenericEvent{Object: h.To}:
	case <-ctx.Done():
	}
}

// deploysAgain reports whether a stage of the run other than the one given
// has yet to deploy to env.
func deploysAgain(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus, env, ended string) bool {
	return engine.StageAhead(run, st, func(s *conveyorv1.Stage) bool {
		return s.Name != ended && s.Environment != "" && engine.StageNamespace(run.Namespace, s) == env
	})
}
