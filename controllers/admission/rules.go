// Package admission holds Conveyor's admission webhooks: who may create which
// Approval and PipelineRun, recorded from the API server's authentication of
// the request, and the checks on Pipelines that the CRD schema cannot express.
// The rules are plain functions of the objects and the user, so that table
// tests and fuzzing drive them without an API server.
package admission

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/api/equality"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// Identity is the user as the API server authenticated the request.
func Identity(u authenticationv1.UserInfo) *conveyorv1.UserInfo {
	return &conveyorv1.UserInfo{Username: u.Username, UID: u.UID, Groups: slices.Clone(u.Groups)}
}

// CheckApproval decides whether user may create Approval a for run (nil when
// the run does not exist). It returns nil when allowed, or an error whose
// message tells the user what is wrong and who may act.
func CheckApproval(run *conveyorv1.PipelineRun, a *conveyorv1.Approval, user authenticationv1.UserInfo) error {
	stageName := a.Spec.Stage
	if run == nil {
		return fmt.Errorf("PipelineRun %q does not exist in namespace %s", a.Spec.PipelineRunRef.Name, a.Namespace)
	}
	if run.Status.Phase.Finished() {
		return fmt.Errorf("PipelineRun %s already finished as %s: nothing is left to trigger or decide", run.Name, run.Status.Phase)
	}
	if run.Status.PipelineSpec == nil {
		return fmt.Errorf("PipelineRun %s has not started yet (see its conditions); its stages can be triggered once it runs", run.Name)
	}
	var stage *conveyorv1.Stage
	var names []string
	for i := range run.Status.PipelineSpec.Stages {
		s := &run.Status.PipelineSpec.Stages[i]
		names = append(names, s.Name)
		if s.Name == stageName {
			stage = s
		}
	}
	if stage == nil {
		return fmt.Errorf("PipelineRun %s has no stage %q; its stages are %s", run.Name, stageName, strings.Join(names, ", "))
	}
	kind, ref := engine.Ref(run.Spec.Git)
	if !engine.StageApplies(stage, kind) {
		return fmt.Errorf("stage %s runs for %s only, and PipelineRun %s is for %s %s", stageName, stage.Refs, run.Name, kind, ref)
	}
	var groups []string
	var act string
	switch {
	case engine.IsGate(stage):
		groups, act = stage.Approval.Groups, "approve or reject"
	case engine.IsManual(stage):
		groups, act = stage.TriggerGroups, "trigger"
		if a.Spec.Decision == conveyorv1.DecisionReject {
			return fmt.Errorf("stage %s is a manual stage: Reject is a decision for approval stages only; to hold the stage, do not trigger it", stageName)
		}
	default:
		return fmt.Errorf("stage %s starts by itself and takes no Approval", stageName)
	}
	if !slices.ContainsFunc(user.Groups, func(g string) bool { return slices.Contains(groups, g) }) {
		return fmt.Errorf("user %q may not %s stage %s: only members of the groups %s may", user.Username, act, stageName, strings.Join(groups, ", "))
	}
	if engine.IsGate(stage) && !stage.Approval.AllowRunRequester && run.Spec.Requester != nil && run.Spec.Requester.Username == user.Username {
		return fmt.Errorf("separation of duties: %q created PipelineRun %s and may not approve or reject its stage %s; another member of %s must",
			user.Username, run.Name, stageName, strings.Join(groups, ", "))
	}
	for _, ss := range run.Status.Stages {
		if ss.Name == stageName && ss.Phase.Started() {
			return fmt.Errorf("stage %s of PipelineRun %s is already %s", stageName, run.Name, strings.ToLower(string(ss.Phase)))
		}
	}
	return nil
}

// CheckApprovalUpdate refuses any change to an Approval's spec, the recorded
// approver included.
func CheckApprovalUpdate(old, updated *conveyorv1.Approval) error {
	if !equality.Semantic.DeepEqual(old.Spec, updated.Spec) {
		return errors.New("an Approval cannot be changed once created, its approver included: create a new one")
	}
	return nil
}

// CheckRun refuses a PipelineRun whose ref its Pipeline does not allow. A
// missing Pipeline is no error: the run waits for it.
func CheckRun(pipeline *conveyorv1.Pipeline, run *conveyorv1.PipelineRun) error {
	if pipeline == nil {
		return nil
	}
	if err := engine.RefAllowed(&pipeline.Spec, run.Spec.Git); err != nil {
		return fmt.Errorf("Pipeline %s does not run this ref: %w", pipeline.Name, err)
	}
	return nil
}

// CheckRerun refuses a rerun (spec.rerunOf) of a run that is missing (nil),
// not finished, succeeded, or of another Pipeline, ref or commit.
func CheckRerun(run, source *conveyorv1.PipelineRun) error {
	return engine.CheckRerun(run, source)
}

// CheckRunUpdate refuses any change to a PipelineRun's spec, the recorded
// requester included, but cancelling it (spec.cancelled false to true).
func CheckRunUpdate(old, updated *conveyorv1.PipelineRun) error {
	if old.Spec.Cancelled && !updated.Spec.Cancelled {
		return errors.New("a cancelled PipelineRun stays cancelled: create a new run")
	}
	was, is := old.Spec.DeepCopy(), updated.Spec.DeepCopy()
	was.Cancelled, is.Cancelled = false, false
	if !equality.Semantic.DeepEqual(was, is) {
		return errors.New("a PipelineRun's spec cannot be changed once created, its requester included, but for spec.cancelled: create a new run")
	}
	return nil
}

// CheckPipeline refuses what makes a Pipeline unusable beyond the CRD schema.
func CheckPipeline(p *conveyorv1.Pipeline) error {
	return engine.ValidatePipeline(&p.Spec)
}
