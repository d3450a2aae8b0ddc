package admission

import (
	"path"
	"slices"
	"strings"
	"testing"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// seedSpec is the seed's pipeline as the run's snapshot.
func seedSpec() *conveyorv1.PipelineSpec {
	job := []conveyorv1.JobSpec{{Name: "deploy", Image: "alpine"}}
	return &conveyorv1.PipelineSpec{
		Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*", "infra_*"}, Tags: []string{"v*"}},
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: job},
			{Name: "testing", Jobs: job},
			{Name: "staging", When: conveyorv1.WhenManual, Environment: "staging", TriggerGroups: []string{"developers", "devops", "testers"}, Jobs: job},
			{Name: "pre-production", When: conveyorv1.WhenManual, Environment: "pre-production", TriggerGroups: []string{"testers", "devops", "release-engineers"}, Jobs: job},
			{Name: "approve", Refs: conveyorv1.RefsTags, Approval: &conveyorv1.ApprovalGate{Groups: []string{"release-engineers"}, Required: 1}},
			{Name: "production", Refs: conveyorv1.RefsTags, When: conveyorv1.WhenManual, Environment: "production", TriggerGroups: []string{"release-engineers", "devops"}, Jobs: job},
		},
	}
}

// seedRun is a run of the seed's pipeline whose every manual and approval
// stage waits for a decision (the role matrix is about who, not when).
func seedRun(git conveyorv1.GitRef, requester string) *conveyorv1.PipelineRun {
	run := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: "ci"},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: git,
			Requester: &conveyorv1.UserInfo{Username: requester}},
		Status: conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunWaiting, PipelineSpec: seedSpec()},
	}
	for _, st := range seedSpec().Stages {
		phase := conveyorv1.StageWaiting
		if st.When != conveyorv1.WhenManual && st.Approval == nil {
			phase = conveyorv1.StageSucceeded
		}
		run.Status.Stages = append(run.Status.Stages, conveyorv1.StageStatus{Name: st.Name, Phase: phase})
	}
	return run
}

// runAt is a run of the seed's pipeline that has reached stage, waiting
// there: the stages before it passed, those after it are pending.
func runAt(git conveyorv1.GitRef, requester, stage string) *conveyorv1.PipelineRun {
	run := seedRun(git, requester)
	reached := false
	for i := range run.Status.Stages {
		ss := &run.Status.Stages[i]
		switch {
		case ss.Name == stage:
			ss.Phase, ss.Message, reached = conveyorv1.StageWaiting, "waiting for a decision", true
			run.Status.CurrentStage = stage
		case reached:
			ss.Phase = conveyorv1.StagePending
		default:
			ss.Phase = conveyorv1.StageSucceeded
		}
	}
	return run
}

func approval(stage string, d conveyorv1.ApprovalDecision) *conveyorv1.Approval {
	return &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: "a", Namespace: "ci"},
		Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: "shop-1"}, Stage: stage, Decision: d}}
}

func user(name string, groups ...string) authenticationv1.UserInfo {
	return authenticationv1.UserInfo{Username: name, Groups: append(groups, "system:authenticated")}
}

// TestCheckApproval is the seed's table of who may do what.
func TestCheckApproval(t *testing.T) {
	tag := conveyorv1.GitRef{Tag: "v1.4.0"}
	branch := conveyorv1.GitRef{Branch: "feature_login"}
	for _, tc := range []struct {
		name     string
		run      *conveyorv1.PipelineRun
		stage    string
		decision conveyorv1.ApprovalDecision
		user     authenticationv1.UserInfo
		want     string // "" when allowed
	}{
		{"developer triggers staging", seedRun(branch, "dev"), "staging", conveyorv1.DecisionApprove, user("dana", "developers"), ""},
		{"tester triggers staging", seedRun(branch, "dev"), "staging", conveyorv1.DecisionApprove, user("tess", "testers"), ""},
		{"developer triggers pre-production", seedRun(branch, "dev"), "pre-production", conveyorv1.DecisionApprove, user("dana", "developers"), "only members of the groups testers, devops, release-engineers may"},
		{"tester triggers pre-production", seedRun(branch, "dev"), "pre-production", conveyorv1.DecisionApprove, user("tess", "testers"), ""},
		{"release engineer triggers pre-production", seedRun(tag, "rita"), "pre-production", conveyorv1.DecisionApprove, user("rob", "release-engineers"), ""},
		{"developer approves the tag", seedRun(tag, "rita"), "approve", conveyorv1.DecisionApprove, user("dana", "developers"), "only members of the groups release-engineers may"},
		{"release engineer approves", seedRun(tag, "rita"), "approve", conveyorv1.DecisionApprove, user("rob", "release-engineers"), ""},
		{"release engineer rejects", seedRun(tag, "rita"), "approve", conveyorv1.DecisionReject, user("rob", "release-engineers"), ""},
		{"the run's creator approves", seedRun(tag, "rita"), "approve", conveyorv1.DecisionApprove, user("rita", "release-engineers"), "separation of duties"},
		{"devops triggers production", seedRun(tag, "rita"), "production", conveyorv1.DecisionApprove, user("omar", "devops"), ""},
		{"developer triggers production", seedRun(tag, "rita"), "production", conveyorv1.DecisionApprove, user("dana", "developers"), "only members of the groups release-engineers, devops may"},
		{"reject on a manual stage", seedRun(tag, "rita"), "production", conveyorv1.DecisionReject, user("omar", "devops"), "Reject is a decision for approval stages only"},
		{"production in a branch run", seedRun(branch, "dev"), "production", conveyorv1.DecisionApprove, user("omar", "devops"), "runs for tags only"},
		{"automatic stage", seedRun(branch, "dev"), "testing", conveyorv1.DecisionApprove, user("omar", "devops"), "starts by itself"},
		{"unknown stage", seedRun(branch, "dev"), "qa", conveyorv1.DecisionApprove, user("omar", "devops"), `has no stage "qa"`},
		{"unknown run", nil, "staging", conveyorv1.DecisionApprove, user("dana", "developers"), "does not exist"},
		{"production triggered before the approval", runAt(tag, "rita", "approve"), "production", conveyorv1.DecisionApprove, user("omar", "devops"), "not waiting for a decision yet: the run is at stage approve"},
		{"the tag approved before pre-production", runAt(tag, "rita", "pre-production"), "approve", conveyorv1.DecisionApprove, user("rob", "release-engineers"), "not waiting for a decision yet"},
		{"staging triggered before the tests passed", runAt(branch, "dev", "testing"), "staging", conveyorv1.DecisionApprove, user("dana", "developers"), "not waiting for a decision yet"},
		{"production triggered once it waits", runAt(tag, "rita", "production"), "production", conveyorv1.DecisionApprove, user("omar", "devops"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckApproval(tc.run, approval(tc.stage, tc.decision), tc.user)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("allowed, want refusal %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("refused with %q, want %q", err, tc.want)
			}
		})
	}
}

// FuzzCheckApproval: whatever the stage, decision, user, groups and where
// the run stands, the check never panics, and an allowed Approval always comes
// from a member of the stage's groups, for a manual or approval stage of the
// run that waits for it, and never rejects a manual stage or lets a run's
// requester, or the pusher of a pushed run, pass its own gate.
func FuzzCheckApproval(f *testing.F) {
	f.Add("staging", "Approve", "dana", "developers", "feature_login", false)
	f.Add("approve", "Reject", "rita", "release-engineers", "v1.4.0", true)
	f.Add("production", "Approve", "omar", "devops,release-engineers", "v2", true)
	f.Add("approve", "Approve", "", "", "", true)
	f.Add("approve", "Approve", "rob", "release-engineers", "v1.4.0", true)
	f.Fuzz(func(t *testing.T, stage, decision, username, groups, ref string, isTag bool) {
		git := conveyorv1.GitRef{Branch: ref}
		if isTag {
			git = conveyorv1.GitRef{Tag: ref}
		}
		run := seedRun(git, "rita")
		if len(ref)%2 == 1 {
			// A run that has reached one stage, the others passed or pending.
			stages := seedSpec().Stages
			run = runAt(git, "rita", stages[len(username)%len(stages)].Name)
		}
		// Half the runs were pushed by rob (the receiver's runs): he may not
		// decide their gates either.
		pushedByRob := len(groups)%2 == 1
		if pushedByRob {
			run.Spec.Trigger = &conveyorv1.Trigger{Provider: "gitlab", Pusher: "rob"}
		}
		u := authenticationv1.UserInfo{Username: username, Groups: strings.Split(groups, ",")}
		err := CheckApproval(run, approval(stage, conveyorv1.ApprovalDecision(decision)), u)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("refusal without a message")
			}
			return
		}
		var st *conveyorv1.Stage
		for i := range run.Status.PipelineSpec.Stages {
			if run.Status.PipelineSpec.Stages[i].Name == stage {
				st = &run.Status.PipelineSpec.Stages[i]
			}
		}
		kind, _ := engine.Ref(git)
		switch {
		case st == nil:
			t.Fatalf("allowed an Approval for unknown stage %q", stage)
		case !engine.StageApplies(st, kind):
			t.Fatalf("allowed stage %s in a %s run", stage, kind)
		case !waits(run, stage):
			t.Fatalf("allowed an Approval for stage %s, which does not wait for one", stage)
		case engine.IsGate(st):
			if !slices.ContainsFunc(u.Groups, func(g string) bool { return slices.Contains(st.Approval.Groups, g) }) {
				t.Fatalf("allowed %q (groups %v) on gate %s", username, u.Groups, stage)
			}
			if username == "rita" {
				t.Fatal("allowed the run's requester to decide its gate")
			}
			if pushedByRob && username == "rob" {
				t.Fatal("allowed the pusher to decide the gate of the run he pushed")
			}
		case engine.IsManual(st):
			if !slices.ContainsFunc(u.Groups, func(g string) bool { return slices.Contains(st.TriggerGroups, g) }) {
				t.Fatalf("allowed %q (groups %v) to trigger %s", username, u.Groups, stage)
			}
			if decision == string(conveyorv1.DecisionReject) {
				t.Fatal("allowed a Reject on a manual stage")
			}
		default:
			t.Fatalf("allowed an Approval for automatic stage %s", stage)
		}
	})
}

// FuzzCheckRun: a run is allowed exactly when one of the Pipeline's patterns
// for its ref kind matches, and a refusal names every pattern.
func FuzzCheckRun(f *testing.F) {
	f.Add("feature_*", "feature_login", false)
	f.Add("v*", "v1.4.0", true)
	f.Add("feature_[", "feature_x", false)
	f.Add("infra_*", "hotfix_x", false)
	f.Fuzz(func(t *testing.T, pattern, ref string, isTag bool) {
		p := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Name: "shop"}, Spec: *seedSpec()}
		p.Spec.Refs = conveyorv1.PipelineRefs{Branches: []string{pattern}, Tags: []string{pattern}}
		git := conveyorv1.GitRef{Branch: ref}
		if isTag {
			git = conveyorv1.GitRef{Tag: ref}
		}
		err := CheckRun(p, seedRun(git, "dev"))
		matched, perr := path.Match(pattern, ref)
		if (err == nil) != (matched && perr == nil) {
			t.Fatalf("pattern %q ref %q: allowed=%v, path.Match=%v,%v", pattern, ref, err == nil, matched, perr)
		}
		if err != nil && !strings.Contains(err.Error(), pattern) {
			t.Fatalf("refusal %q does not name the pattern %q", err, pattern)
		}
		if CheckPipeline(p) != nil && perr == nil {
			t.Fatalf("pattern %q parses but the Pipeline was refused", pattern)
		}
	})
}

// waits reports whether the run's stage waits for a decision.
func waits(run *conveyorv1.PipelineRun, stage string) bool {
	for _, ss := range run.Status.Stages {
		if ss.Name == stage {
			return ss.Phase == conveyorv1.StageWaiting
		}
	}
	return false
}

// TestCheckRunMetadata: a run's ownerReferences and finalizers are the
// manager's; the garbage collector may remove an ownerReference and the API
// server's own finalizers.
func TestCheckRunMetadata(t *testing.T) {
	base := seedRun(conveyorv1.GitRef{Tag: "v1.4.0"}, "rita")
	base.Finalizers = []string{conveyorv1.CleanupFinalizer}
	owner := metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: "gone", UID: "uid-gone"}
	for _, tc := range []struct {
		name      string
		change    func(r *conveyorv1.PipelineRun)
		byManager bool
		refused   bool
	}{
		{"nothing changed", func(*conveyorv1.PipelineRun) {}, false, false},
		{"a label", func(r *conveyorv1.PipelineRun) { r.Labels = map[string]string{"team": "shop"} }, false, false},
		{"an ownerReference added", func(r *conveyorv1.PipelineRun) { r.OwnerReferences = []metav1.OwnerReference{owner} }, false, true},
		{"the cleanup finalizer removed", func(r *conveyorv1.PipelineRun) { r.Finalizers = nil }, false, true},
		{"a finalizer added", func(r *conveyorv1.PipelineRun) { r.Finalizers = append(r.Finalizers, "example.com/keep") }, false, true},
		{"the orphan finalizer removed", func(r *conveyorv1.PipelineRun) { r.Finalizers = []string{conveyorv1.CleanupFinalizer} }, false, false},
		{"the manager removes its finalizer", func(r *conveyorv1.PipelineRun) { r.Finalizers = nil }, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old := base.DeepCopy()
			if tc.name == "the orphan finalizer removed" {
				old.Finalizers = append(old.Finalizers, metav1.FinalizerOrphanDependents)
			}
			updated := old.DeepCopy()
			tc.change(updated)
			if err := CheckRunMetadata(old, updated, tc.byManager); (err != nil) != tc.refused {
				t.Fatalf("refused %v (%v), want refused %v", err != nil, err, tc.refused)
			}
		})
	}
}

// TestMayCancel: the requester, and the groups of the stage the run stands
// at, may cancel without the verb cancel.
func TestMayCancel(t *testing.T) {
	atApprove := runAt(conveyorv1.GitRef{Tag: "v1.4.0"}, "rita", "approve")
	atBuild := runAt(conveyorv1.GitRef{Tag: "v1.4.0"}, "rita", "build")
	for _, tc := range []struct {
		name string
		run  *conveyorv1.PipelineRun
		user authenticationv1.UserInfo
		may  bool
	}{
		{"the requester", atBuild, user("rita", "release-engineers"), true},
		{"a developer at build", atBuild, user("dana", "developers"), false},
		{"a release engineer at the approve gate", atApprove, user("rob", "release-engineers"), true},
		{"a developer at the approve gate", atApprove, user("dana", "developers"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			may, who := MayCancel(tc.run, tc.user)
			if may != tc.may || (!may && !strings.Contains(who, `its requester "rita"`)) {
				t.Fatalf("may %v (%s), want %v", may, who, tc.may)
			}
		})
	}
}

// TestCheckTagRunner: where the Pipeline gives tags to release engineers, a
// developer may not start a tag run; the push receiver may.
func TestCheckTagRunner(t *testing.T) {
	p := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Name: "shop"}, Spec: *seedSpec()}
	p.Spec.Refs.TagGroups = []string{"release-engineers"}
	tagRun := seedRun(conveyorv1.GitRef{Tag: "v1.4.0", Commit: "3f2a9c1d"}, "")
	branchRun := seedRun(conveyorv1.GitRef{Branch: "feature_login"}, "")
	for _, tc := range []struct {
		name      string
		pipeline  *conveyorv1.Pipeline
		run       *conveyorv1.PipelineRun
		user      authenticationv1.UserInfo
		byManager bool
		refused   bool
	}{
		{"a release engineer tags", p, tagRun, user("rita", "release-engineers"), false, false},
		{"a developer tags", p, tagRun, user("dana", "developers"), false, true},
		{"a developer's branch", p, branchRun, user("dana", "developers"), false, false},
		{"the push receiver", p, tagRun, user("system:serviceaccount:conveyor-system:conveyor"), true, false},
		{"no tagGroups: anyone who may create runs", &conveyorv1.Pipeline{Spec: *seedSpec()}, tagRun, user("dana", "developers"), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckTagRunner(tc.pipeline, tc.run, tc.user, tc.byManager)
			if (err != nil) != tc.refused || (err != nil && !strings.Contains(err.Error(), "gives tags to the groups release-engineers")) {
				t.Fatalf("refused %v (%v), want %v", err != nil, err, tc.refused)
			}
		})
	}
}

// TestAuthorReads: what the author of a Pipeline must be allowed to get: a
// run-namespace job's Secret (a deploy job's is its Environment's to list),
// the commit status token, a sink's URL Secret.
func TestAuthorReads(t *testing.T) {
	secret := func(name string) []conveyorv1.JobVolume {
		return []conveyorv1.JobVolume{{Name: "v", Secret: &corev1.SecretVolumeSource{SecretName: name}}}
	}
	p := &conveyorv1.Pipeline{Spec: conveyorv1.PipelineSpec{
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "compile", Volumes: secret("go-cache-key")}}},
			{Name: "deploy", Environment: "production", Jobs: []conveyorv1.JobSpec{{Name: "helm", Volumes: secret("deploy-token")}}},
		},
		Source: &conveyorv1.PipelineSource{CommitStatus: &conveyorv1.CommitStatusReport{TokenRef: conveyorv1.SecretKeyReference{Name: "gitlab"}}},
		Notifications: &conveyorv1.Notifications{Sinks: []conveyorv1.EventSink{
			{Name: "bus", URL: "https://events.example.com"}, {Name: "chat", URLFrom: &conveyorv1.SecretKeyReference{Name: "team-chat"}}}},
	}}
	var got []string
	for _, r := range AuthorReads(p) {
		got = append(got, r.Resource+"/"+r.Name+" at "+r.Where)
	}
	want := []string{
		"secrets/go-cache-key at spec.stages[0].jobs[0]: job compile uses Secret go-cache-key (volume v)",
		"secrets/gitlab at spec.source.commitStatus.tokenRef: names Secret gitlab",
		"secrets/team-chat at spec.notifications.sinks[1].urlFrom: names Secret team-chat",
	}
	if !slices.Equal(got, want) {
		t.Errorf("AuthorReads:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
