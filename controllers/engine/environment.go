package engine

import (
	"fmt"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// EnvironmentFact is what was learnt of an environment's lock for a run whose
// stage is ready to deploy there: one deploy at a time per environment.
type EnvironmentFact struct {
	// Held: the run holds the environment; its stage may start.
	Held bool
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
	fact, known := f.Environments[env]
	if known && fact.Held {
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
