package engine

import (
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Environments guard themselves: a stage deploys only to a namespace an
// Environment names, and only as that Environment's policy allows. The same
// rules refuse a Pipeline at admission (CheckPipelinePolicy) and block a
// deploy stage when it is ready to start (the policy may have changed since,
// or the webhook may have been down): one chain, read in both places.

// Policy is what the environment rules read: every Environment (few, and
// cluster-scoped) and the labels of the Pipeline's namespace.
type Policy struct {
	Environments    []conveyorv1.Environment
	NamespaceLabels map[string]string
}

// Breach is a rule of an Environment that a stage breaks.
type Breach struct {
	// Environment is the Environment's name ("" when the namespace has none).
	Environment string
	// Rule is the policy field broken (pipelines, triggerGroups, ...).
	Rule    string
	Message string
	// Stage is the index of the stage in the Pipeline's spec.
	Stage int
}

func (b *Breach) Error() string { return b.Message }

func breach(env *conveyorv1.Environment, rule, format string, args ...any) *Breach {
	return &Breach{Environment: env.Name, Rule: rule,
		Message: fmt.Sprintf("Environment %s (namespace %s), rule %s: ", env.Name, env.Spec.Namespace, rule) + fmt.Sprintf(format, args...)}
}

// For is the Environment of a namespace: exactly one must name it.
func (p Policy) For(namespace string) (*conveyorv1.Environment, *Breach) {
	var found []*conveyorv1.Environment
	for i := range p.Environments {
		if p.Environments[i].Spec.Namespace == namespace {
			found = append(found, &p.Environments[i])
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return nil, &Breach{Rule: "environment", Message: fmt.Sprintf(
			"no Environment names namespace %s: a stage may deploy only to a namespace an Environment names (ask a platform admin to create one)", namespace)}
	}
	names := make([]string, len(found))
	for i, e := range found {
		names[i] = e.Name
	}
	return nil, &Breach{Environment: names[0], Rule: "namespace", Message: fmt.Sprintf(
		"namespace %s is named by more than one Environment (%s): deploys there wait until one remains", namespace, strings.Join(names, ", "))}
}

// Named is the Environment of that name, nil when none.
func (p Policy) Named(name string) *conveyorv1.Environment {
	for i := range p.Environments {
		if p.Environments[i].Name == name {
			return &p.Environments[i]
		}
	}
	return nil
}

// CheckPipelinePolicy applies the environment rules to every deploy stage of
// a Pipeline (admission): the first breach per stage, all stages told.
func CheckPipelinePolicy(pol Policy, namespace, name string, spec *conveyorv1.PipelineSpec) []*Breach {
	var out []*Breach
	for i := range spec.Stages {
		if b := StagePolicy(pol, namespace, name, spec, i); b != nil {
			b.Message = fmt.Sprintf("stage %s: %s", spec.Stages[i].Name, b.Message)
			b.Stage = i
			out = append(out, b)
		}
	}
	return out
}

// StagePolicy is the first rule of its Environment that stage i of a
// Pipeline (namespace/name) breaks; nil when it keeps them all or deploys
// nowhere.
func StagePolicy(pol Policy, namespace, name string, spec *conveyorv1.PipelineSpec, i int) *Breach {
	stage := &spec.Stages[i]
	if stage.Environment == "" {
		return nil
	}
	env, b := pol.For(stage.Environment)
	if b != nil {
		return b
	}
	for _, rule := range stageRules {
		if b := rule(env, pol, namespace, name, spec, i); b != nil {
			return b
		}
	}
	return nil
}

type stageRule func(env *conveyorv1.Environment, pol Policy, namespace, name string, spec *conveyorv1.PipelineSpec, i int) *Breach

// stageRules are applied in this order; the first breach counts.
var stageRules = []stageRule{
	pipelineAllowed,
	autoAllowed,
	triggerGroupsNarrow,
	approvalGateFirst,
	serviceAccountAllowed,
	restrictedPods,
	mountsAllowed,
}

// mountsAllowed: a deploy job's pod runs in the environment's namespace, so
// the Secrets and ConfigMaps it mounts or pulls with are that namespace's;
// it may use only those the Environment lists in mounts.
func mountsAllowed(env *conveyorv1.Environment, _ Policy, namespace, _ string, spec *conveyorv1.PipelineSpec, i int) *Breach {
	var secrets, configMaps []string
	if env.Spec.Mounts != nil {
		secrets, configMaps = env.Spec.Mounts.Secrets, env.Spec.Mounts.ConfigMaps
	}
	for _, j := range spec.Stages[i].Jobs {
		for _, u := range JobMounts(&j) {
			allowed := map[string][]string{"Secret": secrets, "ConfigMap": configMaps}[u.Kind]
			if !slices.Contains(allowed, u.Name) {
				return breach(env, "mounts", "job %s uses %s %s (%s); a pod mounts only objects of its own namespace, %s, and jobs here may use the %ss %s (not the Pipeline's own, in %s)",
					j.Name, u.Kind, u.Name, u.Use, env.Spec.Namespace, u.Kind, listOr(allowed, "none"), namespace)
			}
		}
	}
	return nil
}

// Mount is a Secret, ConfigMap or PersistentVolumeClaim a job's pod uses.
type Mount struct {
	// Kind is Secret, ConfigMap or PersistentVolumeClaim; Resource its API resource.
	Kind, Resource, Name, Use string
}

// JobMounts are the Secrets, ConfigMaps and claims a job's pod uses: its
// volumes, their projected sources and its image pull Secrets.
func JobMounts(j *conveyorv1.JobSpec) []Mount {
	var out []Mount
	for _, v := range j.Volumes {
		use := "volume " + v.Name
		switch {
		case v.Secret != nil:
			out = append(out, Mount{"Secret", "secrets", v.Secret.SecretName, use})
		case v.ConfigMap != nil:
			out = append(out, Mount{"ConfigMap", "configmaps", v.ConfigMap.Name, use})
		case v.PersistentVolumeClaim != nil:
			out = append(out, Mount{"PersistentVolumeClaim", "persistentvolumeclaims", v.PersistentVolumeClaim.ClaimName, use})
		case v.Projected != nil:
			for _, src := range v.Projected.Sources {
				if src.Secret != nil {
					out = append(out, Mount{"Secret", "secrets", src.Secret.Name, use})
				}
				if src.ConfigMap != nil {
					out = append(out, Mount{"ConfigMap", "configmaps", src.ConfigMap.Name, use})
				}
			}
		}
	}
	for _, s := range j.ImagePullSecrets {
		out = append(out, Mount{"Secret", "secrets", s.Name, "imagePullSecrets"})
	}
	return out
}

func pipelineAllowed(env *conveyorv1.Environment, pol Policy, namespace, name string, _ *conveyorv1.PipelineSpec, _ int) *Breach {
	sel := env.Spec.Pipelines
	if sel.NamespaceSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(sel.NamespaceSelector)
		if err != nil {
			return breach(env, "pipelines", "namespaceSelector does not parse: %v", err)
		}
		if s.Matches(labels.Set(pol.NamespaceLabels)) {
			return nil
		}
	}
	for _, pattern := range sel.Names {
		if ok, err := path.Match(pattern, namespace+"/"+name); err == nil && ok {
			return nil
		}
	}
	return breach(env, "pipelines", "Pipeline %s/%s may not deploy here: its namespace's labels do not match the Environment's namespaceSelector and its name matches none of %s",
		namespace, name, listOr(sel.Names, "its names (none given)"))
}

func autoAllowed(env *conveyorv1.Environment, _ Policy, _, _ string, spec *conveyorv1.PipelineSpec, i int) *Breach {
	if IsManual(&spec.Stages[i]) || env.Spec.AllowAuto {
		return nil
	}
	return breach(env, "allowAuto", "a deploy here is triggered by a person: make the stage `when: manual` with triggerGroups among %s", strings.Join(env.Spec.TriggerGroups, ", "))
}

func triggerGroupsNarrow(env *conveyorv1.Environment, _ Policy, _, _ string, spec *conveyorv1.PipelineSpec, i int) *Breach {
	var wider []string
	for _, g := range spec.Stages[i].TriggerGroups {
		if !slices.Contains(env.Spec.TriggerGroups, g) {
			wider = append(wider, g)
		}
	}
	if len(wider) == 0 {
		return nil
	}
	return breach(env, "triggerGroups", "the stage's triggerGroups may narrow the Environment's (%s), never widen them: %s may not deploy here",
		strings.Join(env.Spec.TriggerGroups, ", "), strings.Join(wider, ", "))
}

// approvalGateFirst: an Environment that requires an approval needs, before
// the deploy stage, an approval stage in every run the deploy stage is in,
// whose groups are among the Environment's and that asks for as many
// approvers, with separation of duties unless the Environment waives it.
func approvalGateFirst(env *conveyorv1.Environment, _ Policy, _, _ string, spec *conveyorv1.PipelineSpec, i int) *Breach {
	want := env.Spec.Approval
	if want == nil {
		return nil
	}
	deploy := &spec.Stages[i]
	for _, kind := range []RefKind{RefBranch, RefTag} {
		if !StageApplies(deploy, kind) {
			continue
		}
		if !slices.ContainsFunc(spec.Stages[:i], func(s conveyorv1.Stage) bool { return StageApplies(&s, kind) && gateCovers(&s, want) }) {
			return breach(env, "approval", "a deploy here needs an approval stage before it (in %s runs too) with groups among %s, required at least %d%s",
				kind, strings.Join(want.Groups, ", "), required(want), map[bool]string{true: "", false: " and allowRunRequester off"}[want.AllowRunRequester])
		}
	}
	return nil
}

// gateCovers reports whether an approval stage asks for what an
// Environment's approval wants.
func gateCovers(s *conveyorv1.Stage, want *conveyorv1.EnvironmentApproval) bool {
	if !IsGate(s) || max(s.Approval.Required, 1) < required(want) || (s.Approval.AllowRunRequester && !want.AllowRunRequester) {
		return false
	}
	for _, g := range s.Approval.Groups {
		if !slices.Contains(want.Groups, g) {
			return false
		}
	}
	return true
}

func required(a *conveyorv1.EnvironmentApproval) int32 { return max(a.Required, 1) }

func serviceAccountAllowed(env *conveyorv1.Environment, _ Policy, _, _ string, spec *conveyorv1.PipelineSpec, i int) *Breach {
	allowed := env.Spec.ServiceAccounts
	if len(allowed) == 0 {
		allowed = []string{"default"}
	}
	for _, j := range spec.Stages[i].Jobs {
		sa := j.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		if !slices.Contains(allowed, sa) {
			return breach(env, "serviceAccounts", "job %s runs as ServiceAccount %s; jobs here may run as %s", j.Name, sa, strings.Join(allowed, ", "))
		}
	}
	return nil
}

// restrictedPods: jobs in an environment run with the Pod Security
// restricted profile's settings (RestrictedPod sets them); a job whose
// securityContext says otherwise is refused rather than silently changed.
func restrictedPods(env *conveyorv1.Environment, _ Policy, _, _ string, spec *conveyorv1.PipelineSpec, i int) *Breach {
	for _, j := range spec.Stages[i].Jobs {
		if why := unrestricted(j.SecurityContext); why != "" {
			return breach(env, "securityContext", "job %s: %s; jobs here run with the Pod Security restricted profile's settings", j.Name, why)
		}
	}
	return nil
}

// unrestricted says what in a pod's security context the restricted
// profile forbids, "" when nothing.
func unrestricted(sc *corev1.PodSecurityContext) string {
	switch {
	case sc == nil:
		return ""
	case sc.RunAsUser != nil && *sc.RunAsUser == 0:
		return "runAsUser 0 (root)"
	case sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot:
		return "runAsNonRoot false"
	case sc.SeccompProfile != nil && sc.SeccompProfile.Type == corev1.SeccompProfileTypeUnconfined:
		return "seccompProfile Unconfined"
	case len(sc.Sysctls) > 0:
		return "sysctls"
	case sc.WindowsOptions != nil && sc.WindowsOptions.HostProcess != nil && *sc.WindowsOptions.HostProcess:
		return "a Windows host process"
	}
	return ""
}

func listOr(items []string, none string) string {
	if len(items) == 0 {
		return none
	}
	return strings.Join(items, ", ")
}

// Promoted reports whether commit was deployed successfully to the
// Environment named req: by this run (a stage of it that deployed there
// succeeded), or as its record says. It says why not.
func Promoted(pol Policy, req, commit string, run []conveyorv1.StageStatus) (bool, string) {
	env := pol.Named(req)
	if env == nil {
		return false, fmt.Sprintf("Environment %s, which it requires first, does not exist", req)
	}
	for _, ss := range run {
		if ss.Namespace == env.Spec.Namespace && ss.Phase == conveyorv1.StageSucceeded {
			return true, ""
		}
	}
	if commit != "" && slices.Contains(deployedCommits(&env.Status), commit) {
		return true, ""
	}
	return false, fmt.Sprintf("commit %s has not been deployed to Environment %s (namespace %s) yet; deploy it there first (the record keeps the latest %d commits deployed there)",
		orNone(commit), env.Name, env.Spec.Namespace, MaxDeployedCommits)
}

func orNone(s string) string {
	if s == "" {
		return "(none given)"
	}
	return s
}

// An Environment's record keeps its latest MaxDeploys deploys in full, and
// the latest MaxDeployedCommits commits deployed, each once. Until
// 2026-12-04 it kept 100 deploys in full and no commits: every write of
// the environment's lock carries the whole status through the API server,
// and 100 deploys (26 KB of JSON) nearly doubled the API server's CPU per run
// (docs/performance.md).
const (
	MaxDeploys         = 10
	MaxDeployedCommits = 100
)

// RestrictedPod gives a job's pod in an environment the settings the Pod
// Security restricted profile asks for: not root, no privilege escalation,
// no capabilities, the runtime's seccomp profile.
func RestrictedPod(spec *corev1.PodSpec) {
	sc := spec.SecurityContext
	if sc == nil {
		sc = &corev1.PodSecurityContext{}
	} else {
		sc = sc.DeepCopy()
	}
	sc.RunAsNonRoot = ptrTo(true)
	if sc.SeccompProfile == nil {
		sc.SeccompProfile = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	}
	spec.SecurityContext = sc
	for i := range spec.Containers {
		c := &spec.Containers[i]
		if c.SecurityContext == nil {
			c.SecurityContext = &corev1.SecurityContext{}
		}
		c.SecurityContext.AllowPrivilegeEscalation = ptrTo(false)
		c.SecurityContext.Privileged = nil
		c.SecurityContext.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
	}
}

func ptrTo[T any](v T) *T { return &v }

// guardDeploy holds a deploy stage that may start (triggered when manual,
// not yet queued for its environment's lock) while its Environment does not
// let it in: Blocked when the policy as it reads now is broken (the rule is
// named) or the commit skipped an environment it requires first; Frozen in
// a freeze window, until the window closes or a member of the
// Environment's overrideGroups overrides it. It returns false when the
// stage may go on.
func (d *decider) guardDeploy(stage *conveyorv1.Stage, old *conveyorv1.StageStatus, ss conveyorv1.StageStatus) (conveyorv1.StageStatus, bool) {
	run, f := d.f.Run, d.f
	hold := func(phase conveyorv1.StagePhase, msg string) (conveyorv1.StageStatus, bool) {
		ss.Phase, ss.Message = phase, msg
		ss.StartTime = orNow(old.StartTime, f.Now)
		if old.Phase != phase {
			ss.StartTime = &f.Now
		}
		for _, j := range stage.Jobs {
			ss.Jobs = append(ss.Jobs, conveyorv1.JobStatus{Name: j.Name, Namespace: ss.Namespace, Phase: conveyorv1.JobPending})
		}
		return ss, true
	}
	spec := run.Status.PipelineSpec
	i := slices.IndexFunc(spec.Stages, func(s conveyorv1.Stage) bool { return s.Name == stage.Name })
	if b := StagePolicy(f.Policy, run.Namespace, run.Spec.PipelineRef.Name, spec, i); b != nil {
		return hold(conveyorv1.StageBlocked, "blocked: "+b.Message)
	}
	env, _ := f.Policy.For(stage.Environment)
	for _, req := range env.Spec.Requires {
		if ok, why := Promoted(f.Policy, req, run.Spec.Git.Commit, d.p.Status.Stages); !ok {
			return hold(conveyorv1.StageBlocked, "blocked: "+breach(env, "requires", "%s", why).Message)
		}
	}
	windows, err := ParseWindows(env)
	if err != nil {
		return hold(conveyorv1.StageBlocked, "blocked: "+breach(env, "freezeWindows", "%v: deploys wait until it is fixed", err).Message)
	}
	fr := Frozen(windows, f.Now.Time)
	if fr == nil {
		return ss, false
	}
	if a := overriddenBy(env, d.byStage[stage.Name]); a != nil {
		// Told in the stage's decisions: who deployed in the freeze, and why.
		if !slices.ContainsFunc(ss.Decisions, func(x conveyorv1.Decision) bool { return x.Approval == a.Name }) {
			ss.Decisions = append(slices.Clone(ss.Decisions), a.decision())
		}
		return ss, false
	}
	d.p.Requeue(fr.Until.Sub(f.Now.Time))
	return hold(conveyorv1.StageFrozen, FreezeMessage(env, fr))
}

// overriddenBy is the first Approval of the stage that overrides a freeze
// from a member of the Environment's overrideGroups (as recorded at
// admission), nil when none.
func overriddenBy(env *conveyorv1.Environment, approvals []ApprovalFact) *ApprovalFact {
	for i, a := range approvals {
		if a.OverrideFreeze && a.Decision == conveyorv1.DecisionApprove &&
			slices.ContainsFunc(a.Groups, func(g string) bool { return slices.Contains(env.Spec.OverrideGroups, g) }) {
			return &approvals[i]
		}
	}
	return nil
}

// DeploysDone are the deploys a decision completes: stages with an
// environment that succeed in st and had not in the run's last status
// (reused stages were recorded by the run that deployed).
func DeploysDone(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus) []conveyorv1.Deploy {
	if st.PipelineSpec == nil {
		return nil
	}
	was := map[string]conveyorv1.StagePhase{}
	for _, ss := range run.Status.Stages {
		was[ss.Name] = ss.Phase
	}
	var out []conveyorv1.Deploy
	for _, stage := range RunStages(st.PipelineSpec, run.Spec.Git) {
		if stage.Environment == "" {
			continue
		}
		for _, ss := range st.Stages {
			if ss.Name != stage.Name || ss.Phase != conveyorv1.StageSucceeded || was[ss.Name] == conveyorv1.StageSucceeded || ss.ReusedFrom != "" {
				continue
			}
			d := conveyorv1.Deploy{Pipeline: run.Namespace + "/" + run.Spec.PipelineRef.Name, Run: RunKey(run), RunUID: string(run.UID),
				Stage: ss.Name, Ref: RefString(run.Spec.Git), Release: run.Spec.Git.Tag, Commit: run.Spec.Git.Commit, At: *orNow(ss.CompletionTime, metav1.Now())}
			if len(ss.Decisions) > 0 {
				d.By = ss.Decisions[0].Approver
			} else if run.Spec.Requester != nil {
				d.By = run.Spec.Requester.Username
			}
			out = append(out, d)
		}
	}
	return out
}

// RecordDeploy writes a deploy into an Environment's record, newest first:
// the deploy (at most MaxDeploys) and its commit (at most
// MaxDeployedCommits, each once). False when it is there already (a retried
// write). A record written before 2026-12-04 (deploys only, up to 100)
// gives its commits to deployedCommits first, so no commit is forgotten.
func RecordDeploy(st *conveyorv1.EnvironmentStatus, d conveyorv1.Deploy) bool {
	if slices.ContainsFunc(st.Deploys, func(x conveyorv1.Deploy) bool { return x.RunUID == d.RunUID && x.Stage == d.Stage }) {
		return false
	}
	st.DeployedCommits = deployedCommits(st)
	if d.Commit != "" {
		st.DeployedCommits = slices.Insert(slices.DeleteFunc(st.DeployedCommits, func(c string) bool { return c == d.Commit }), 0, d.Commit)
	}
	st.DeployedCommits = st.DeployedCommits[:min(len(st.DeployedCommits), MaxDeployedCommits)]
	st.Deploys = append([]conveyorv1.Deploy{d}, st.Deploys...)
	st.Deploys = st.Deploys[:min(len(st.Deploys), MaxDeploys)]
	st.LastDeploy = d.DeepCopy()
	return true
}

// deployedCommits are the commits an Environment's record says were
// deployed there, newest first, each once: deployedCommits, followed by the
// commits of the deploys recorded in full (all of them there in a record
// written since 2026-12-04; the only ones in an older record).
func deployedCommits(st *conveyorv1.EnvironmentStatus) []string {
	out := slices.Clone(st.DeployedCommits)
	for _, d := range st.Deploys {
		if d.Commit != "" && !slices.Contains(out, d.Commit) {
			out = append(out, d.Commit)
		}
	}
	return out
}
