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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/notify"
	"github.com/conveyor-dev/conveyor/controllers/outbound"
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
	return CheckApprovalIn(run, nil, a, user)
}

// CheckApprovalIn is CheckApproval for a stage that deploys to env (nil
// when it deploys nowhere): the Environment bounds who triggers it and who
// overrides its freeze.
func CheckApprovalIn(run *conveyorv1.PipelineRun, env *conveyorv1.Environment, a *conveyorv1.Approval, user authenticationv1.UserInfo) error {
	if r := engine.CheckApprovalRules(engine.ApprovalCase{Run: run, Approval: a, User: Identity(user), Environment: env}); r != nil {
		return r
	}
	return nil
}

// RecordRun is what an Approval records of its run: its UID and commit, and
// the values it approves (the run's parameters and the results written so
// far) with their digest; nil when the run does not exist.
func RecordRun(run *conveyorv1.PipelineRun) *conveyorv1.RecordedRun {
	if run == nil {
		return nil
	}
	vars := engine.Vars(run.Status.Params, run.Status.Stages)
	return &conveyorv1.RecordedRun{UID: string(run.UID), Commit: run.Spec.Git.Commit,
		Values: engine.ApprovedValues(vars), ValuesDigest: engine.ValuesDigest(vars)}
}

// CheckApprovalUpdate refuses any change to an Approval's spec, the recorded
// approver included.
func CheckApprovalUpdate(old, updated *conveyorv1.Approval) error {
	if !equality.Semantic.DeepEqual(old.Spec, updated.Spec) {
		return errors.New("an Approval cannot be changed once created, its approver included: create a new one")
	}
	return checkShardKept(old, updated)
}

// checkShardKept refuses a change of the manager shard label: a run, and its
// Approvals, stay with the manager that handles them.
func checkShardKept(old, updated metav1.Object) error {
	was, wok := old.GetLabels()[conveyorv1.LabelShard]
	is, iok := updated.GetLabels()[conveyorv1.LabelShard]
	if was != is || wok != iok {
		return fmt.Errorf("label %s cannot change once set (%q): the run stays with the manager shard that handles it", conveyorv1.LabelShard, was)
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
	if err := checkShardKept(old, updated); err != nil {
		return err
	}
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

// CheckPipelineEnvironments refuses a Pipeline whose deploy stages break
// their Environments' policies, each stage's first breach named with its
// Environment and rule (what a GitOps sync shows).
func CheckPipelineEnvironments(pol engine.Policy, p *conveyorv1.Pipeline) error {
	var errs field.ErrorList
	for _, b := range engine.CheckPipelinePolicy(pol, p.Namespace, p.Name, &p.Spec) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "stages").Index(b.Stage).Child("environment"), b.Message))
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(conveyorv1.GroupVersion.WithKind("Pipeline").GroupKind(), p.Name, errs)
}

// CheckEnvironment refuses an Environment whose freeze windows do not read
// (the CRD cannot parse a schedule or a time zone), or whose namespace
// another Environment names; it warns of required Environments that do not
// exist (yet).
func CheckEnvironment(env *conveyorv1.Environment, all []conveyorv1.Environment) (admission.Warnings, *field.Error) {
	for i, w := range env.Spec.FreezeWindows {
		if _, err := engine.ParseWindow(w); err != nil {
			return nil, field.Invalid(field.NewPath("spec", "freezeWindows").Index(i), w.Name, err.Error())
		}
	}
	var warnings admission.Warnings
	for _, other := range all {
		if other.Name != env.Name && other.Spec.Namespace == env.Spec.Namespace {
			return nil, field.Duplicate(field.NewPath("spec", "namespace"), fmt.Sprintf("%s (Environment %s names it already)", env.Spec.Namespace, other.Name))
		}
	}
	for _, req := range env.Spec.Requires {
		if !slices.ContainsFunc(all, func(e conveyorv1.Environment) bool { return e.Name == req }) {
			warnings = append(warnings, fmt.Sprintf("Environment %s, which spec.requires names, does not exist: deploys here are blocked until it does", req))
		}
	}
	return warnings, nil
}

// CheckOutbound refuses a Pipeline whose event sinks or commit status API
// are URLs the cluster's outbound allowlist refuses, or whose sink template
// does not make JSON.
func CheckOutbound(guard *outbound.Guard, p *conveyorv1.Pipeline) error {
	var errs field.ErrorList
	if src := p.Spec.Source; src != nil && src.CommitStatus != nil {
		if err := guard.CheckURL(src.CommitStatus.APIURL); err != nil {
			errs = append(errs, field.Forbidden(field.NewPath("spec", "source", "commitStatus", "apiURL"), err.Error()))
		}
	}
	if n := p.Spec.Notifications; n != nil {
		for i, s := range n.Sinks {
			path := field.NewPath("spec", "notifications", "sinks").Index(i)
			if s.URL != "" {
				if err := guard.CheckURL(s.URL); err != nil {
					errs = append(errs, field.Forbidden(path.Child("url"), err.Error()))
				}
			}
			if s.Mode == conveyorv1.SinkTemplate {
				if err := notify.CheckTemplate(s.Template); err != nil {
					errs = append(errs, field.Invalid(path.Child("template"), "(template)", err.Error()))
				}
			}
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return apierrors.NewInvalid(conveyorv1.GroupVersion.WithKind("Pipeline").GroupKind(), p.Name, errs)
}

// AuthorRead is something the manager reads for a Pipeline that its author
// must be allowed to get: what a job in the run's namespace mounts (the
// manager creates the Jobs), and a Secret whose content the manager sends
// out (the commit status token, a sink's URL).
type AuthorRead struct {
	// Resource and Name are what RBAC is asked about, in the Pipeline's namespace.
	Resource, Name string
	// Where names the field and what it does with it; Why says the rule.
	Where, Why string
}

// AuthorReads are what the Pipeline has the manager read for its author.
// (Deploy jobs mount only what their Environment lists.)
func AuthorReads(p *conveyorv1.Pipeline) []AuthorRead {
	var out []AuthorRead
	for i, st := range p.Spec.Stages {
		if st.Environment != "" {
			continue
		}
		for j := range st.Jobs {
			for _, m := range engine.JobMounts(&st.Jobs[j]) {
				out = append(out, AuthorRead{Resource: m.Resource, Name: m.Name,
					Where: fmt.Sprintf("spec.stages[%d].jobs[%d]: job %s uses %s %s (%s)", i, j, st.Jobs[j].Name, m.Kind, m.Name, m.Use),
					Why:   "a Pipeline's jobs read only what its author may"})
			}
		}
	}
	const sent = "the manager would send what it holds for its author"
	if src := p.Spec.Source; src != nil && src.CommitStatus != nil {
		name := src.CommitStatus.TokenRef.Name
		out = append(out, AuthorRead{Resource: "secrets", Name: name, Where: "spec.source.commitStatus.tokenRef: names Secret " + name, Why: sent})
	}
	if n := p.Spec.Notifications; n != nil {
		for i, s := range n.Sinks {
			if s.URLFrom != nil {
				out = append(out, AuthorRead{Resource: "secrets", Name: s.URLFrom.Name,
					Where: fmt.Sprintf("spec.notifications.sinks[%d].urlFrom: names Secret %s", i, s.URLFrom.Name), Why: sent})
			}
		}
	}
	return out
}

// CheckPipeline refuses what makes a Pipeline unusable beyond the CRD schema.
func CheckPipeline(p *conveyorv1.Pipeline) error {
	return engine.ValidatePipeline(&p.Spec)
}
