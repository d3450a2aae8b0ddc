package engine

import (
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// ApprovalVerdict says whether a run took an Approval into account, and if not
// why: what the Approval's status should read.
type ApprovalVerdict struct {
	// Accepted is true when the run recorded the Approval in its stage's decisions.
	Accepted bool
	// Final is true when the verdict cannot change any more.
	Final bool
	// Waiting is true when the stage waits for a decision and the run has not
	// recorded this one yet: it is about to.
	Waiting bool
	// Settled is true when no later event can change the verdict: the
	// Approval can leave the manager's cache (status.settled).
	Settled bool
	// Health is the Approval's kstatus health.
	Health  Health
	Reason  string
	Message string
}

// FirstStatusGrace is how long a new Approval for a stage not reached yet
// goes without a status: an Approval usually answers a stage already
// waiting, and a cache that has not seen the stage wait yet would otherwise
// cost a "not reached yet" write right before the "accepted" one.
const FirstStatusGrace = 5 * time.Second

// Postpone reports whether writing this verdict, the Approval's first, can
// wait, and for how long at most (0: until the run changes). The stage waits
// and its run is about to record the Approval, whose update brings the
// Approval back; or the stage is not reached yet and the Approval is younger
// than FirstStatusGrace. Each first status then takes one write, not two.
func (v ApprovalVerdict) Postpone(a *conveyorv1.Approval, now time.Time) (bool, time.Duration) {
	if len(a.Status.Conditions) != 0 {
		return false, 0
	}
	if v.Waiting {
		return true, 0
	}
	if age := now.Sub(a.CreationTimestamp.Time); !v.Final && !v.Accepted && age < FirstStatusGrace {
		return true, FirstStatusGrace - age
	}
	return false, 0
}

// EvaluateApproval reads the run's status (nil when the run does not exist) to
// tell whether the Approval was taken into account, and if not, why not: the
// approval rules' refusal, or how far the stage is from waiting.
// trustUnrecorded counts an Approval without a recorded approver (local use).
func EvaluateApproval(run *conveyorv1.PipelineRun, a *conveyorv1.Approval, trustUnrecorded bool) ApprovalVerdict {
	if v, ok := accepted(run, a); ok {
		return v
	}
	if r := CheckApprovalRules(ApprovalCase{Run: run, Approval: a, TrustUnrecorded: trustUnrecorded}); r != nil {
		return verdict(ApprovalVerdict{Final: r.Final, Reason: r.Reason, Message: r.Message})
	}
	stage := a.Spec.Stage
	if StageWaiting(run, stage) {
		return verdict(ApprovalVerdict{Reason: conveyorv1.ReasonStageNotWaiting, Waiting: true,
			Message: fmt.Sprintf("stage %s is waiting; the run has not recorded this Approval yet", stage)})
	}
	return verdict(ApprovalVerdict{Reason: conveyorv1.ReasonStageNotWaiting,
		Message: fmt.Sprintf("stage %s has not been reached yet; the Approval counts once it is", stage)})
}

// accepted is the verdict on an Approval its run recorded: it stays accepted,
// whatever happens to the run later.
func accepted(run *conveyorv1.PipelineRun, a *conveyorv1.Approval) (ApprovalVerdict, bool) {
	if run == nil {
		return ApprovalVerdict{}, false
	}
	for _, ss := range run.Status.Stages {
		if ss.Name != a.Spec.Stage {
			continue
		}
		for _, d := range ss.Decisions {
			if d.Approval == a.Name {
				return verdict(ApprovalVerdict{Accepted: true, Final: ss.Phase.Started(), Reason: conveyorv1.ReasonAccepted,
					Message: fmt.Sprintf("taken into account by stage %s of run %s", a.Spec.Stage, run.Name)}), true
			}
		}
	}
	return ApprovalVerdict{}, false
}

// verdict fills in what follows from the rest: health, and whether settled.
// An Approval naming a missing run, a second one from the same approver, or
// one without a recorded approver, is final but not settled: it can still
// count if a run of that name appears, the first Approval is deleted, or the
// manager is told to trust unrecorded approvers.
func verdict(v ApprovalVerdict) ApprovalVerdict {
	v.Settled = v.Final && v.Reason != conveyorv1.ReasonRunNotFound && v.Reason != conveyorv1.ReasonDuplicateApprover &&
		v.Reason != conveyorv1.ReasonApproverNotRecorded
	switch {
	case v.Accepted:
		v.Health = Healthy
	case v.Final:
		v.Health = Stalled
	default:
		v.Health = Progressing
	}
	return v
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
	f := ApprovalFact{Name: a.Name, Stage: a.Spec.Stage, Decision: a.Spec.Decision, Approver: approverOf(a), RunUID: runOf(a), Comment: a.Spec.Comment,
		OverrideFreeze: a.Spec.OverrideFreeze, Created: a.CreationTimestamp}
	if a.Spec.Approver != nil {
		f.Groups = a.Spec.Approver.Groups
	}
	if a.Spec.Run != nil {
		f.ValuesDigest = a.Spec.Run.ValuesDigest
	}
	return f
}

// runOf is the run UID recorded on an Approval at admission, empty when none is.
func runOf(a *conveyorv1.Approval) types.UID {
	if a.Spec.Run == nil {
		return ""
	}
	return types.UID(a.Spec.Run.UID)
}

// StageWaiting reports whether the run's status shows the stage waiting
// (for a person or its environment).
func StageWaiting(run *conveyorv1.PipelineRun, stage string) bool {
	for _, ss := range run.Status.Stages {
		if ss.Name == stage {
			return ss.Phase == conveyorv1.StageWaiting
		}
	}
	return false
}
