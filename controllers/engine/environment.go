package engine

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// EnvironmentFact is what was learnt of an environment's lock for a run whose
// stage is ready to deploy there: one deploy at a time per environment.
type EnvironmentFact struct {
	// Held: the run holds the environment; its stage may start.
	Held bool
	// Take: the environment is free and the run is first in its queue: the
	// run takes the lock, and its stage starts once it has.
	Take bool
	// Holder is the run ("namespace/name") deploying there, and HolderStage
	// its stage, when another run holds the environment.
	Holder, HolderStage string
	// Ahead is the run queued before this one that goes first, when the
	// environment is free.
	Ahead string
	// SupersededBy is a newer run of the same Pipeline queued for or
	// deploying to the environment, when the Pipeline's queue is NewestFirst.
	SupersededBy string
}

// queueStage decides a job stage with an environment that is ready to start
// but may not hold its environment yet. It returns false when the stage may
// start (the run holds the environment), and otherwise the stage's status:
// Queued (asking for the lock when nothing is known of it yet) or Cancelled
// when superseded.
func queueStage(stage *conveyorv1.Stage, old *conveyorv1.StageStatus, ss conveyorv1.StageStatus, f Facts) (conveyorv1.StageStatus, bool, bool) {
	env := stage.Environment
	fact, known := environmentFact(f, stage)
	if known && (fact.Held || fact.Take) {
		return ss, false, false
	}
	ss.Phase = conveyorv1.StageQueued
	ss.StartTime = old.StartTime
	if old.Phase != conveyorv1.StageQueued {
		ss.StartTime = &f.Now
	}
	ss.StartTime = orNow(ss.StartTime, f.Now)
	for _, j := range stage.Jobs {
		ss.Jobs = append(ss.Jobs, conveyorv1.JobStatus{Name: j.Name, Namespace: ss.Namespace, Phase: conveyorv1.JobPending})
	}
	switch {
	case !known:
		ss.Message = fmt.Sprintf("queued for environment %s", env)
		return ss, true, true
	case fact.SupersededBy != "":
		ss.Phase, ss.CompletionTime = conveyorv1.StageCancelled, &f.Now
		ss.Message = fmt.Sprintf("superseded: run %s of this Pipeline is newer and queued for or deploying to environment %s (environmentQueue: NewestFirst)", fact.SupersededBy, env)
		for i := range ss.Jobs {
			ss.Jobs[i].Phase, ss.Jobs[i].Reason, ss.Jobs[i].Message = conveyorv1.JobCancelled, conveyorv1.ReasonSuperseded, "never started: superseded"
		}
	case fact.Holder != "":
		ss.HeldBy = fact.Holder
		ss.Message = fmt.Sprintf("queued: environment %s is in use by run %s (stage %s)", env, fact.Holder, fact.HolderStage)
	case fact.Ahead != "":
		ss.Message = fmt.Sprintf("queued: environment %s is free and run %s, queued before this one, goes first", env, fact.Ahead)
	default:
		ss.Message = fmt.Sprintf("queued for environment %s", env)
	}
	return ss, true, false
}

// environmentFact is what is known of the lock of the stage's environment:
// a verdict given in Facts.Environments, or else one drawn from the lock
// observed in Facts.Locks; false when nothing is known.
func environmentFact(f Facts, stage *conveyorv1.Stage) (EnvironmentFact, bool) {
	if fact, ok := f.Environments[stage.Environment]; ok {
		return fact, true
	}
	if l, ok := f.Locks[stage.Environment]; ok {
		return QueueVerdict(f.Run, stage.Name, l), true
	}
	return EnvironmentFact{}, false
}

// QueueOf is the queue order of a run's Pipeline (OldestFirst when unset).
func QueueOf(run *conveyorv1.PipelineRun) conveyorv1.EnvironmentQueue {
	if spec := run.Status.PipelineSpec; spec != nil && spec.EnvironmentQueue != "" {
		return spec.EnvironmentQueue
	}
	return conveyorv1.QueueOldestFirst
}

// QueuedEnvironment is the environment a run's stage is queued for, "" when none.
func QueuedEnvironment(run *conveyorv1.PipelineRun) string {
	if run.Status.Phase.Finished() {
		return ""
	}
	for _, ss := range run.Status.Stages {
		if ss.Phase == conveyorv1.StageQueued {
			return ss.Namespace
		}
	}
	return ""
}

// CreatedBefore orders runs by creation time, then name: the queue's order.
func CreatedBefore(a, b *conveyorv1.PipelineRun) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}

// Lock is what was observed of an environment's lock (its Environment's
// status: holder, holderStage, holderUID, heldSince) and queue, for a run
// whose stage is ready to deploy there.
type Lock struct {
	// Holder is the run and stage holding the lock; nil when nobody does.
	Holder *LockHolder
	// Queued are the runs queued for the environment, oldest first.
	Queued []*conveyorv1.PipelineRun
	// Environment is the Environment as read, for the status update that
	// takes the lock.
	Environment *conveyorv1.Environment
}

// HolderOf is the holder an Environment's status names, nil when none.
func HolderOf(env *conveyorv1.Environment) *LockHolder {
	if env == nil || env.Status.HolderUID == "" {
		return nil
	}
	return &LockHolder{Run: env.Status.Holder, Stage: env.Status.HolderStage, UID: types.UID(env.Status.HolderUID)}
}

// Holds reports whether env's status names run's stage as the lock's holder.
func Holds(env *conveyorv1.Environment, run types.UID, stage string) bool {
	return env != nil && env.Status.HolderUID == string(run) && env.Status.HolderStage == stage
}

// SetHolder names run's stage (nil: nobody) as the holder of the lock in
// an Environment's status.
func SetHolder(st *conveyorv1.EnvironmentStatus, run *conveyorv1.PipelineRun, stage string, now metav1.Time) {
	if run == nil {
		st.Holder, st.HolderStage, st.HolderUID, st.HeldSince = "", "", "", nil
		return
	}
	st.Holder, st.HolderStage, st.HolderUID, st.HeldSince = RunKey(run), stage, string(run.UID), &now
}

// LockHolder is a run holding an environment's lock.
type LockHolder struct {
	// Run is "namespace/name", Stage its stage, UID its UID.
	Run, Stage string
	UID        types.UID
	// Released: the holder is done with the lock (its run is gone or
	// finished, or its stage there ended), as the API server has it.
	Released bool
	// Deploying is the holding run as the API server has it, while it still
	// deploys there; nil otherwise.
	Deploying *conveyorv1.PipelineRun
}

// QueueVerdict decides where a run's stage stands in an environment's queue:
// it holds the lock, or takes it (free, and first in the queue), or waits for
// the holder or an older queued run, or is superseded by a newer run of its
// Pipeline (NewestFirst).
func QueueVerdict(run *conveyorv1.PipelineRun, stage string, l Lock) EnvironmentFact {
	h := l.Holder
	if h != nil && h.UID == run.UID && h.Stage == stage {
		return EnvironmentFact{Held: true}
	}
	// An earlier stage of this run that used the environment has ended.
	holding := h != nil && h.UID != run.UID && !h.Released
	var deploying *conveyorv1.PipelineRun
	if holding {
		deploying = h.Deploying
	}
	if by := SupersededBy(run, l.Queued, deploying); by != "" {
		return EnvironmentFact{SupersededBy: by}
	}
	if holding {
		return EnvironmentFact{Holder: h.Run, HolderStage: h.Stage}
	}
	for _, other := range l.Queued {
		if other.UID != run.UID && CreatedBefore(other, run) && SupersededBy(other, l.Queued, nil) == "" {
			return EnvironmentFact{Ahead: RunKey(other)}
		}
	}
	return EnvironmentFact{Take: true}
}

// SupersededBy is the newest run of run's Pipeline queued for the
// environment, or else deploying there, when it is newer than run and the
// Pipeline's queue is NewestFirst; "" otherwise.
func SupersededBy(run *conveyorv1.PipelineRun, queued []*conveyorv1.PipelineRun, deploying *conveyorv1.PipelineRun) string {
	if QueueOf(run) != conveyorv1.QueueNewestFirst {
		return ""
	}
	newest := ""
	for _, other := range queued {
		if NewerInLine(run, other) {
			newest = RunKey(other)
		}
	}
	if newest == "" && deploying != nil && NewerInLine(run, deploying) {
		// The holder deploys now: if it is a newer run of the same Pipeline,
		// this older deploy is stale.
		newest = RunKey(deploying)
	}
	return newest
}

// NewerInLine reports whether other is a newer run of run's Pipeline: the
// runs a NewestFirst queue lets go first.
func NewerInLine(run, other *conveyorv1.PipelineRun) bool {
	return other.UID != run.UID && other.Namespace == run.Namespace &&
		other.Spec.PipelineRef == run.Spec.PipelineRef && CreatedBefore(run, other)
}

// QueueHead is the run an environment's queue lets go next, except the one
// given: the oldest that is not superseded; nil when none.
func QueueHead(queued []*conveyorv1.PipelineRun, except types.UID) *conveyorv1.PipelineRun {
	for _, run := range queued {
		if run.UID != except && SupersededBy(run, queued, nil) == "" {
			return run
		}
	}
	return nil
}

// ReleasedBy reports whether a run no longer needs an environment's lock for
// stage: the run has finished, or that stage of it has ended.
func ReleasedBy(run *conveyorv1.PipelineRun, stage string) bool {
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

// EndedDeploys are the environments whose lock a run's stage may hold and
// its next status ends: a stage there that was running or queued and is now
// finished. The values are the stages.
func EndedDeploys(old, next *conveyorv1.PipelineRunStatus) map[string]string {
	was := map[string]conveyorv1.StagePhase{}
	for _, ss := range old.Stages {
		was[ss.Name] = ss.Phase
	}
	var out map[string]string
	for _, ss := range next.Stages {
		if p := was[ss.Name]; ss.Namespace == "" || !ss.Phase.Finished() || (p != conveyorv1.StageRunning && p != conveyorv1.StageQueued) {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		out[ss.Namespace] = ss.Name
	}
	return out
}

// Handover is the run, and its stage, that an environment's lock is handed
// to when the deploy holding it ends.
type Handover struct {
	To    *conveyorv1.PipelineRun
	Stage string
}

// HandOver is who the lock of environment namespace env goes to when the
// deploy holding it ends, instead of waiting for the next run to take it:
// the head of its queue (QueueHead, but the run given), when the
// environment lets a deploy start now (one Environment names the namespace,
// its freeze windows read, and none is open). Nil when nobody is handed the
// lock: the next run then takes it itself, deciding every rule again.
func HandOver(pol Policy, env string, queued []*conveyorv1.PipelineRun, except types.UID, now time.Time) *Handover {
	head := QueueHead(queued, except)
	if head == nil {
		return nil
	}
	e, breach := pol.For(env)
	if breach != nil {
		return nil
	}
	if windows, err := ParseWindows(e); err != nil || Frozen(windows, now) != nil {
		return nil
	}
	if stage := QueuedStage(head, env); stage != "" {
		return &Handover{To: head, Stage: stage}
	}
	return nil
}

// QueuedStage is the stage of a run queued for environment namespace env,
// "" when none.
func QueuedStage(run *conveyorv1.PipelineRun, env string) string {
	for _, ss := range run.Status.Stages {
		if ss.Phase == conveyorv1.StageQueued && ss.Namespace == env {
			return ss.Name
		}
	}
	return ""
}
