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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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

// RecordRun is what an Approval records of its run: its UID and commit; nil
// when the run does not exist.
func RecordRun(run *conveyorv1.PipelineRun) *conveyorv1.RecordedRun {
	if run == nil {
		return nil
	}
	return &conveyorv1.RecordedRun{UID: string(run.UID), Commit: run.Spec.Git.Commit}
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

// CheckTagRunner refuses a tag run started by someone outside the Pipeline's
// tagGroups (when it names any). The push receiver (byManager) starts runs
// for pushed tags, which the git server's protected-tag rules guard.
func CheckTagRunner(pipeline *conveyorv1.Pipeline, run *conveyorv1.PipelineRun, user authenticationv1.UserInfo, byManager bool) error {
	groups := pipeline.Spec.Refs.TagGroups
	if run.Spec.Git.Tag == "" || len(groups) == 0 || byManager ||
		slices.ContainsFunc(user.Groups, func(g string) bool { return slices.Contains(groups, g) }) {
		return nil
	}
	return fmt.Errorf("user %q may not start a run for tag %s: Pipeline %s gives tags to the groups %s", user.Username, run.Spec.Git.Tag, pipeline.Name, strings.Join(groups, ", "))
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

// apiServerFinalizers are the finalizers the API server sets on a delete
// (kubectl delete --cascade=orphan|foreground) and the garbage collector
// removes: anyone may see them go.
var apiServerFinalizers = []string{metav1.FinalizerOrphanDependents, metav1.FinalizerDeleteDependents}

// CheckRunMetadata refuses a change of a run's ownerReferences or finalizers
// by anyone but the manager (byManager): an ownerReference to an object that
// does not exist has the garbage collector delete the run, which needs no
// delete right; a finalizer removed lets the run go without its Jobs in
// environment namespaces. An ownerReference may be removed (the garbage
// collector does), and so may the API server's own finalizers.
func CheckRunMetadata(old, updated *conveyorv1.PipelineRun, byManager bool) error {
	if byManager {
		return nil
	}
	was := map[types.UID]metav1.OwnerReference{}
	for _, ref := range old.OwnerReferences {
		was[ref.UID] = ref
	}
	for _, ref := range updated.OwnerReferences {
		if prev, ok := was[ref.UID]; !ok || !equality.Semantic.DeepEqual(prev, ref) {
			return errors.New("a PipelineRun's ownerReferences are the manager's alone: only removing one is allowed")
		}
	}
	kept := func(fs []string) []string {
		return slices.DeleteFunc(slices.Clone(fs), func(f string) bool { return slices.Contains(apiServerFinalizers, f) })
	}
	if !slices.Equal(kept(old.Finalizers), kept(updated.Finalizers)) {
		return fmt.Errorf("a PipelineRun's finalizers are the manager's alone (%s keeps a run until its Jobs in environment namespaces are deleted)", conveyorv1.CleanupFinalizer)
	}
	return nil
}

// MayCancel reports whether user may cancel run without a further check: the
// run's requester, or a member of the groups that act on the stage it stands
// at (its trigger or approval groups). Anyone else needs the verb cancel on
// pipelineruns (a SubjectAccessReview, see the webhook). It says who may,
// for the refusal.
func MayCancel(run *conveyorv1.PipelineRun, user authenticationv1.UserInfo) (bool, string) {
	if run.Spec.Requester != nil && run.Spec.Requester.Username == user.Username && user.Username != "" {
		return true, ""
	}
	who := "its requester"
	if run.Spec.Requester != nil {
		who = fmt.Sprintf("its requester %q", run.Spec.Requester.Username)
	}
	if spec := run.Status.PipelineSpec; spec != nil {
		for i := range spec.Stages {
			stage := &spec.Stages[i]
			if stage.Name != run.Status.CurrentStage || (!engine.IsGate(stage) && !engine.IsManual(stage)) {
				continue
			}
			groups, _ := engine.StageGroups(stage)
			if slices.ContainsFunc(user.Groups, func(g string) bool { return slices.Contains(groups, g) }) {
				return true, ""
			}
			who += fmt.Sprintf(", members of %s (the groups of stage %s, where it stands)", strings.Join(groups, ", "), stage.Name)
		}
	}
	return false, who + ", or a subject granted the verb cancel on pipelineruns"
}

// CheckPipeline refuses what makes a Pipeline unusable beyond the CRD schema.
func CheckPipeline(p *conveyorv1.Pipeline) error {
	return engine.ValidatePipeline(&p.Spec)
}
