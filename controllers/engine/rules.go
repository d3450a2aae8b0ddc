package engine

import (
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// The approval rules: who may trigger or decide which stage of which run, and
// when. They are one ordered chain (cert-manager's policies.Chain is the
// model), read by admission to refuse an Approval and by the controllers to
// say on an Approval why its run did not take it: a rule changes here and
// nowhere else.

// ApprovalCase is what the approval rules read.
type ApprovalCase struct {
	// Run is the Approval's run as the API server has it; nil when it does not exist.
	Run *conveyorv1.PipelineRun
	// Approval is the Approval being created or evaluated.
	Approval *conveyorv1.Approval
	// User is who acts: the authenticated requester at admission (groups
	// included). nil when a controller evaluates an Approval already stored:
	// the approver recorded on it at admission acts then, and the rules that
	// need the user's groups were applied at admission.
	User *conveyorv1.UserInfo
	// TrustUnrecorded counts a stored Approval that carries no approver
	// recorded at admission (the webhooks were not registered): for local
	// use only (make run).
	TrustUnrecorded bool
	// Environment is the Environment of the stage's namespace when the
	// stage deploys (read at admission): its triggerGroups bound who
	// triggers, its overrideGroups who overrides a freeze. nil otherwise.
	Environment *conveyorv1.Environment

	// Filled in by the chain as it goes: the stage named, and its status.
	stage  *conveyorv1.Stage
	status *conveyorv1.StageStatus
}

// Refusal is why an Approval does not count (or may not be created).
type Refusal struct {
	// Reason is the condition reason (a Reason* constant).
	Reason string
	// Message says what is wrong and who may act, for a person.
	Message string
	// Final is true when nothing but a new run can change the refusal.
	Final bool
}

// Error makes a Refusal an error: admission returns it to the user.
func (r *Refusal) Error() string { return r.Message }

// approvalRule refuses an Approval, or passes it to the next rule (nil).
type approvalRule func(c *ApprovalCase) *Refusal

// approvalRules are applied in this order; the first refusal counts.
var approvalRules = []approvalRule{
	runExists,
	recordedForRun,
	runOpen,
	runStarted,
	stageExists,
	stageInRun,
	stageTakesApprovals,
	rejectOnGatesOnly,
	memberOfGroups,
	separationOfDuties,
	stageOpen,
	stageWaits,
	distinctApprover,
}

// CheckApprovalRules applies the chain; nil when the Approval passes every rule.
func CheckApprovalRules(c ApprovalCase) *Refusal {
	for _, rule := range approvalRules {
		if r := rule(&c); r != nil {
			return r
		}
	}
	return nil
}

func runExists(c *ApprovalCase) *Refusal {
	if c.Run != nil {
		return nil
	}
	return &Refusal{Reason: conveyorv1.ReasonRunNotFound, Final: true,
		Message: fmt.Sprintf("PipelineRun %q does not exist in namespace %s", c.Approval.Spec.PipelineRunRef.Name, c.Approval.Namespace)}
}

// recordedForRun: who decided, and for which run, come from admission (the
// API server's authentication, the run as it was). A stored Approval without
// those records got in while the webhook was not registered and counts for
// nothing (fail closed); one given to an earlier run of the same name counts
// for nothing either: a run created again under a name starts from nothing.
func recordedForRun(c *ApprovalCase) *Refusal {
	if c.User != nil {
		return nil
	}
	switch countsFor(approverOf(c.Approval), runOf(c.Approval), c.Run.UID, c.TrustUnrecorded) {
	case conveyorv1.ReasonApproverNotRecorded:
		return &Refusal{Reason: conveyorv1.ReasonApproverNotRecorded, Final: true,
			Message: fmt.Sprintf("Approval %s has no approver and run recorded by Conveyor's admission webhook (it was created while the webhook was not registered, or by an older version): it counts for nothing; create it again with the webhook in place", c.Approval.Name)}
	case conveyorv1.ReasonRunReplaced:
		return &Refusal{Reason: conveyorv1.ReasonRunReplaced, Final: true,
			Message: fmt.Sprintf("Approval %s was given for an earlier PipelineRun %s (uid %s), deleted since; the run of that name now (uid %s) starts from nothing",
				c.Approval.Name, c.Run.Name, runOf(c.Approval), c.Run.UID)}
	}
	return nil
}

// countsFor says why a stored Approval, with its recorded approver and run
// UID, does not count for run: "" when it does. Unrecorded ones count only
// when trusted (a manager run without webhooks); the gate and trigger
// decisions (approvalsByStage) and the rule chain both read it.
func countsFor(approver string, given, run types.UID, trustUnrecorded bool) string {
	switch {
	case approver == "" || given == "":
		if trustUnrecorded {
			return ""
		}
		return conveyorv1.ReasonApproverNotRecorded
	case given != run:
		return conveyorv1.ReasonRunReplaced
	}
	return ""
}

func runOpen(c *ApprovalCase) *Refusal {
	if !c.Run.Status.Phase.Finished() {
		return nil
	}
	return &Refusal{Reason: conveyorv1.ReasonRunFinished, Final: true,
		Message: fmt.Sprintf("PipelineRun %s already finished as %s: nothing is left to trigger or decide", c.Run.Name, c.Run.Status.Phase)}
}

func runStarted(c *ApprovalCase) *Refusal {
	if c.Run.Status.PipelineSpec != nil {
		return nil
	}
	return &Refusal{Reason: conveyorv1.ReasonStageNotWaiting,
		Message: fmt.Sprintf("PipelineRun %s has not started yet (see its conditions); its stages can be triggered once it runs", c.Run.Name)}
}

func stageExists(c *ApprovalCase) *Refusal {
	name := c.Approval.Spec.Stage
	var names []string
	for i := range c.Run.Status.PipelineSpec.Stages {
		s := &c.Run.Status.PipelineSpec.Stages[i]
		names = append(names, s.Name)
		if s.Name == name {
			c.stage = s
		}
	}
	for i := range c.Run.Status.Stages {
		if c.Run.Status.Stages[i].Name == name {
			c.status = &c.Run.Status.Stages[i]
		}
	}
	if c.stage != nil {
		return nil
	}
	return &Refusal{Reason: conveyorv1.ReasonStageNotFound, Final: true,
		Message: fmt.Sprintf("PipelineRun %s has no stage %q; its stages are %s", c.Run.Name, name, strings.Join(names, ", "))}
}

func stageInRun(c *ApprovalCase) *Refusal {
	kind, ref := Ref(c.Run.Spec.Git)
	if StageApplies(c.stage, kind) {
		return nil
	}
	return &Refusal{Reason: conveyorv1.ReasonStageNotInRun, Final: true,
		Message: fmt.Sprintf("stage %s runs for %s only, and PipelineRun %s is for %s %s", c.stage.Name, c.stage.Refs, c.Run.Name, kind, ref)}
}

func stageTakesApprovals(c *ApprovalCase) *Refusal {
	if IsGate(c.stage) || IsManual(c.stage) || c.Approval.Spec.OverrideFreeze && c.stage.Environment != "" {
		return nil
	}
	return &Refusal{Reason: conveyorv1.ReasonStageNotManual, Final: true,
		Message: fmt.Sprintf("stage %s starts by itself and takes no Approval", c.stage.Name)}
}

func rejectOnGatesOnly(c *ApprovalCase) *Refusal {
	if IsGate(c.stage) || c.Approval.Spec.Decision != conveyorv1.DecisionReject {
		return nil
	}
	return &Refusal{Reason: conveyorv1.ReasonRejectNotAllowed, Final: true,
		Message: fmt.Sprintf("stage %s is a manual stage: Reject is a decision for approval stages only; to hold the stage, do not trigger it", c.stage.Name)}
}

// memberOfGroups: only the stage's groups may act. Applied at admission,
// where the user's groups are known.
func memberOfGroups(c *ApprovalCase) *Refusal {
	if c.User == nil {
		return nil
	}
	groups, act := StageGroups(c.stage)
	member := func(groups []string) bool {
		return slices.ContainsFunc(c.User.Groups, func(g string) bool { return slices.Contains(groups, g) })
	}
	env := c.Environment
	switch {
	case c.Approval.Spec.OverrideFreeze:
		if env != nil && member(env.Spec.OverrideGroups) {
			return nil
		}
		who := "no one may (the stage's namespace has no Environment)"
		if env != nil {
			who = fmt.Sprintf("only members of Environment %s's overrideGroups (%s) may", env.Name, listOr(env.Spec.OverrideGroups, "none"))
		}
		return &Refusal{Reason: conveyorv1.ReasonNotInGroups, Final: true,
			Message: fmt.Sprintf("user %q may not override a freeze window for stage %s: %s", c.User.Username, c.stage.Name, who)}
	case !member(groups):
		return &Refusal{Reason: conveyorv1.ReasonNotInGroups, Final: true,
			Message: fmt.Sprintf("user %q may not %s stage %s: only members of the groups %s may", c.User.Username, act, c.stage.Name, strings.Join(groups, ", "))}
	case env != nil && IsManual(c.stage) && !member(env.Spec.TriggerGroups):
		return &Refusal{Reason: conveyorv1.ReasonNotInGroups, Final: true,
			Message: fmt.Sprintf("user %q may not trigger stage %s: Environment %s lets only members of %s deploy there", c.User.Username, c.stage.Name, env.Name, strings.Join(env.Spec.TriggerGroups, ", "))}
	}
	return nil
}

func separationOfDuties(c *ApprovalCase) *Refusal {
	actor := approverOf(c.Approval)
	if c.User != nil {
		actor = c.User.Username
	}
	if !SelfApproval(c.Run, c.stage, actor) {
		return nil
	}
	groups, _ := StageGroups(c.stage)
	return &Refusal{Reason: conveyorv1.ReasonSelfApproval, Final: true,
		Message: fmt.Sprintf("separation of duties: %q requested PipelineRun %s (created it, or pushed its ref) and may not approve or reject its stage %s; another member of %s must",
			actor, c.Run.Name, c.stage.Name, strings.Join(groups, ", "))}
}

func stageOpen(c *ApprovalCase) *Refusal {
	if c.status == nil || !c.status.Phase.Started() {
		return nil
	}
	msg := fmt.Sprintf("stage %s of PipelineRun %s is already %s", c.stage.Name, c.Run.Name, strings.ToLower(string(c.status.Phase)))
	if len(c.status.Decisions) > 0 {
		msg += " by " + decisionsBy(c.status.Decisions)
	}
	return &Refusal{Reason: conveyorv1.ReasonStageAlreadyDecided, Final: true, Message: msg}
}

// stageWaits: a trigger or a decision is given when the stage asks for it,
// as GitLab plays a manual job only once it is playable: an earlier one would
// fire the moment the stage is reached, with no person deciding after the
// stages before it. Applied at admission; a stored Approval for a stage not
// reached yet waits (see EvaluateApproval).
func stageWaits(c *ApprovalCase) *Refusal {
	if c.User == nil || (c.status != nil && c.status.Phase == conveyorv1.StageWaiting && !c.Approval.Spec.OverrideFreeze) {
		return nil
	}
	if c.Approval.Spec.OverrideFreeze {
		if c.status != nil && c.status.Phase == conveyorv1.StageFrozen {
			return nil
		}
		return &Refusal{Reason: conveyorv1.ReasonStageNotWaiting,
			Message: fmt.Sprintf("stage %s of PipelineRun %s is not frozen: an override is for a deploy that waits for a freeze window", c.stage.Name, c.Run.Name)}
	}
	where := c.Run.Status.CurrentStage
	for _, ss := range c.Run.Status.Stages {
		if ss.Name == where && ss.Message != "" {
			where += " (" + strings.ToLower(string(ss.Phase)) + ": " + ss.Message + ")"
		}
	}
	return &Refusal{Reason: conveyorv1.ReasonStageNotWaiting,
		Message: fmt.Sprintf("stage %s of PipelineRun %s is not waiting for a decision yet: the run is at stage %s; %s stage %s once the stages before it have passed and it waits",
			c.stage.Name, c.Run.Name, where, verbOf(c.stage), c.stage.Name)}
}

// verbOf is what a person does to a manual or approval stage.
func verbOf(stage *conveyorv1.Stage) string {
	_, act := StageGroups(stage)
	return act
}

// distinctApprover: approvals of a gate come from distinct people. Applied to
// stored Approvals: admission lets a second one in, and the gate does not
// count it while the first stands.
func distinctApprover(c *ApprovalCase) *Refusal {
	if c.User != nil || c.status == nil || c.status.Phase != conveyorv1.StageWaiting {
		return nil
	}
	for _, d := range c.status.Decisions {
		if d.Approver != "" && d.Approver == approverOf(c.Approval) {
			return &Refusal{Reason: conveyorv1.ReasonDuplicateApprover, Final: true,
				Message: fmt.Sprintf("%s already approved stage %s (Approval %s); approvals must come from distinct people", d.Approver, c.stage.Name, d.Approval)}
		}
	}
	return nil
}

// StageGroups are the groups that may act on a manual or approval stage, and
// what they do there.
func StageGroups(stage *conveyorv1.Stage) (groups []string, act string) {
	if IsGate(stage) {
		return stage.Approval.Groups, "approve or reject"
	}
	return stage.TriggerGroups, "trigger"
}

// SelfApproval reports whether approver is the run's own requester deciding
// its approval stage, which separation of duties forbids unless the stage
// allows it.
func SelfApproval(run *conveyorv1.PipelineRun, stage *conveyorv1.Stage, approver string) bool {
	if !IsGate(stage) || stage.Approval.AllowRunRequester || approver == "" {
		return false
	}
	return run.Spec.Requester != nil && run.Spec.Requester.Username == approver ||
		run.Spec.Trigger != nil && run.Spec.Trigger.Pusher == approver
}

// Pusher is the Kubernetes user a Pipeline maps a git provider's pusher to;
// "" when it maps none.
func Pusher(spec *conveyorv1.PipelineSpec, pusher string) string {
	if spec.Source == nil || pusher == "" {
		return ""
	}
	for _, m := range spec.Source.Pushers {
		if m.Name == pusher {
			return m.User
		}
	}
	return ""
}
