package engine

import (
	"fmt"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// ApprovalVerdict says whether a run took an Approval into account, and if not why.
type ApprovalVerdict struct {
	// Accepted is true when the run recorded the Approval in its stage's decisions.
	Accepted bool
	// Final is true when the verdict cannot change any more.
	Final bool
	// Waiting is true when the stage waits for a decision and the run has not
	// recorded this one yet: it is about to.
	Waiting bool
	Reason  string
	Message string
}

// EvaluateApproval reads the run's status (nil when the run does not exist) to
// tell whether the Approval was taken into account, and if not, why not.
func EvaluateApproval(run *conveyorv1.PipelineRun, a *conveyorv1.Approval) ApprovalVerdict {
	stageName := a.Spec.Stage
	if run == nil {
		return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonRunNotFound,
			Message: fmt.Sprintf("PipelineRun %q does not exist in namespace %s", a.Spec.PipelineRunRef.Name, a.Namespace)}
	}
	// A decision the run recorded stays accepted, whatever happens to the run later.
	var status *conveyorv1.StageStatus
	for i := range run.Status.Stages {
		if run.Status.Stages[i].Name == stageName {
			status = &run.Status.Stages[i]
		}
	}
	if status != nil {
		for _, d := range status.Decisions {
			if d.Approval == a.Name {
				return ApprovalVerdict{Accepted: true, Final: status.Phase.Started(),
					Reason: conveyorv1.ReasonAccepted, Message: fmt.Sprintf("taken into account by stage %s of run %s", stageName, run.Name)}
			}
		}
	}
	if run.Status.PipelineSpec == nil {
		if run.Status.Phase.Finished() {
			return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonRunFinished, Message: fmt.Sprintf("run %s finished as %s", run.Name, run.Status.Phase)}
		}
		return ApprovalVerdict{Reason: conveyorv1.ReasonStageNotWaiting, Message: fmt.Sprintf("run %s has not started yet", run.Name)}
	}
	var stage *conveyorv1.Stage
	for i := range run.Status.PipelineSpec.Stages {
		if run.Status.PipelineSpec.Stages[i].Name == stageName {
			stage = &run.Status.PipelineSpec.Stages[i]
		}
	}
	if stage == nil {
		return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonStageNotFound,
			Message: fmt.Sprintf("pipeline %s has no stage %q", run.Spec.PipelineRef.Name, stageName)}
	}
	kind, ref := Ref(run.Spec.Git)
	if !StageApplies(stage, kind) {
		return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonStageNotInRun,
			Message: fmt.Sprintf("stage %s runs for %s only; run %s is for %s %s", stageName, stage.Refs, run.Name, kind, ref)}
	}
	if !IsGate(stage) && !IsManual(stage) {
		return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonStageNotManual,
			Message: fmt.Sprintf("stage %s starts by itself and takes no Approval", stageName)}
	}
	if IsManual(stage) && a.Spec.Decision == conveyorv1.DecisionReject {
		return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonRejectNotAllowed,
			Message: fmt.Sprintf("stage %s is a manual stage: Reject is a decision for approval stages only", stageName)}
	}
	if status != nil && (status.Phase.Started()) {
		return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonStageAlreadyDecided,
			Message: fmt.Sprintf("stage %s was already %s by %s", stageName, verb(status.Phase), decisionsBy(status.Decisions))}
	}
	if run.Status.Phase.Finished() {
		return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonRunFinished,
			Message: fmt.Sprintf("run %s finished as %s before stage %s was reached", run.Name, run.Status.Phase, stageName)}
	}
	if status != nil && status.Phase == conveyorv1.StageWaiting {
		for _, d := range status.Decisions {
			if d.Approver != "" && d.Approver == approverOf(a) {
				return ApprovalVerdict{Final: true, Reason: conveyorv1.ReasonDuplicateApprover,
					Message: fmt.Sprintf("%s already approved stage %s (Approval %s); approvals must come from distinct people", d.Approver, stageName, d.Approval)}
			}
		}
		return ApprovalVerdict{Reason: conveyorv1.ReasonStageNotWaiting, Waiting: true,
			Message: fmt.Sprintf("stage %s is waiting; the run has not recorded this Approval yet", stageName)}
	}
	return ApprovalVerdict{Reason: conveyorv1.ReasonStageNotWaiting,
		Message: fmt.Sprintf("stage %s has not been reached yet; the Approval counts once it is", stageName)}
}

func verb(p conveyorv1.StagePhase) string {
	switch p {
	case conveyorv1.StageRejected:
		return "rejected"
	case conveyorv1.StageSucceeded, conveyorv1.StageFailed, conveyorv1.StageRunning, conveyorv1.StageQueued:
		return "triggered or approved"
	}
	return "decided"
}

// approverOf is the username recorded on an Approval at admission, empty when
// none is.
func approverOf(a *conveyorv1.Approval) string {
	if a.Spec.Approver == nil {
		return ""
	}
	return a.Spec.Approver.Username
}

// Fact is what the engine needs of an Approval.
func Fact(a *conveyorv1.Approval) ApprovalFact {
	return ApprovalFact{Name: a.Name, Stage: a.Spec.Stage, Decision: a.Spec.Decision, Approver: approverOf(a), Created: a.CreationTimestamp}
}
