package engine

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// DecideRun is the one decision of a reconcile: how the run starts (while it
// has no snapshot of its Pipeline), then where its stages stand, with its
// environments' queue verdicts drawn from the locks observed.
func DecideRun(f Facts) Plan {
	if f.Run.Status.PipelineSpec == nil {
		p, snapshot := decideStart(f)
		if snapshot == nil {
			return p
		}
		run := f.Run.DeepCopy()
		run.Status = p.Status
		run.Status.PipelineSpec = snapshot
		f.Run = run
	}
	return Decide(f)
}

// LocksWanted are the environments whose locks the decision needs: those a
// stage of the run is ready to deploy to now.
func LocksWanted(f Facts) []LockRequest {
	f.Locks = nil
	return DecideRun(f).Acquire
}

// decideStart is the start ladder of a run without a snapshot: nothing more
// once it finished; cancelled before it started; waiting for its Pipeline to
// exist or be usable; failed for good when the Pipeline does not run its ref
// or its rerunOf is not allowed; else the snapshot it takes (returned), with
// the stages a rerun reuses, so that editing the Pipeline never changes a run
// in flight.
func decideStart(f Facts) (Plan, *conveyorv1.PipelineSpec) {
	run := f.Run
	if run.Status.Phase.Finished() {
		// Never decided again (the manager's cache keeps no snapshot of it).
		return Plan{Status: *run.Status.DeepCopy(), Unchanged: true, Health: RunHealth(run.Status.Phase)}, nil
	}
	p := Plan{Status: *run.Status.DeepCopy(), Health: Stalled}
	p.Status.Conditions = nil
	p.Status.Ref = RefString(run.Spec.Git)
	p.Status.Phase = conveyorv1.RunPending
	pipeline := f.Pipeline
	switch {
	case run.Spec.Cancelled:
		// Cancelled before it started (its Pipeline missing or unusable).
		p.Status.Phase, p.Status.CompletionTime = conveyorv1.RunCancelled, &f.Now
		p.Reason, p.Message = conveyorv1.ReasonCancelled, "cancelled (spec.cancelled) before any stage started"
		return p, nil
	case pipeline == nil:
		p.Reason = conveyorv1.ReasonPipelineNotFound
		p.Message = fmt.Sprintf("Pipeline %s not found in namespace %s; the run starts when it exists", run.Spec.PipelineRef.Name, run.Namespace)
		return p, nil
	}
	if err := ValidatePipeline(&pipeline.Spec); err != nil {
		p.Reason = conveyorv1.ReasonInvalidSpec
		p.Message = fmt.Sprintf("Pipeline %s is not usable: %v; the run starts when it is fixed", pipeline.Name, err)
		return p, nil
	}
	if err := RefAllowed(&pipeline.Spec, run.Spec.Git); err != nil {
		return failForGood(p, conveyorv1.ReasonRefNotAllowed, err, f), nil
	}
	params, errs := ResolveParams(&pipeline.Spec, run.Spec.Params)
	if len(errs) > 0 {
		return failForGood(p, conveyorv1.ReasonInvalidParams, errs.ToAggregate(), f), nil
	}
	var reused []conveyorv1.StageStatus
	if run.Spec.RerunOf != "" {
		if fe := CheckRerun(run, f.RerunSource); fe != nil {
			return failForGood(p, conveyorv1.ReasonInvalidRerun, fe, f), nil
		}
		// A stage's results hold only for the values it ran with: a rerun
		// whose params resolve otherwise (a default changed since) reuses none.
		if equality.Semantic.DeepEqual(paramMap(f.RerunSource.Status.Params), paramMap(params)) {
			reused = ReusedStages(f.RerunSource, run, &pipeline.Spec)
		}
	}
	if reason, err := ReleaseBar(run, f.Ledger); err != nil {
		return failForGood(p, reason, err, f), nil
	}
	p.Status.PipelineGeneration, p.Status.Stages, p.Status.Params = pipeline.Generation, reused, params
	return p, pipeline.Spec.DeepCopy()
}

// failForGood ends a run that cannot start, for the reason and error: as
// Rejected when its release was refused, else as Failed.
func failForGood(p Plan, reason string, err error, f Facts) Plan {
	p.Status.Phase, p.Status.CompletionTime = endOf(reason), &f.Now
	p.Reason, p.Message, p.Terminal = reason, err.Error(), err
	return p
}

// endOf is the phase a run ends in when it stops or cannot start for reason.
func endOf(reason string) conveyorv1.RunPhase {
	if reason == conveyorv1.ReasonReleaseRefused {
		return conveyorv1.RunRejected
	}
	return conveyorv1.RunFailed
}
