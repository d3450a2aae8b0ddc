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
// the run does not exist) by the approval rules (engine.CheckApprovalRules).
// It returns nil when allowed, or an error whose message tells the user what
// is wrong and who may act.
func CheckApproval(run *conveyorv1.PipelineRun, a *conveyorv1.Approval, user authenticationv1.UserInfo) error {
	if r := engine.CheckApprovalRules(engine.ApprovalCase{Run: run, Approval: a, User: Identity(user)}); r != nil {
		return r
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
