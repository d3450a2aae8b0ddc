package engine

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// environment is an Environment for a namespace of the same name.
func environment(ns string, change func(*conveyorv1.EnvironmentSpec)) conveyorv1.Environment {
	env := conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: ns}, Spec: conveyorv1.EnvironmentSpec{
		Namespace: ns,
		Pipelines: conveyorv1.PipelineSelector{NamespaceSelector: &metav1.LabelSelector{}},
	}}
	if change != nil {
		change(&env.Spec)
	}
	return env
}

// openPolicy lets every Pipeline deploy to the seed's three environments,
// by itself or triggered by any persona: for tests about something else.
func openPolicy() Policy {
	open := func(s *conveyorv1.EnvironmentSpec) {
		s.TriggerGroups = []string{"developers", "devops", "testers", "release-engineers"}
		s.AllowAuto = true
	}
	return Policy{Environments: []conveyorv1.Environment{environment("staging", open), environment("pre-production", open), environment("production", open)}}
}

// seedPolicy is the seed's three environments as Conveyor ships them:
// production only for namespaces labelled for it, after pre-production and a
// release engineer's approval.
func seedPolicy() Policy {
	return Policy{NamespaceLabels: map[string]string{"conveyor.dev/production": "allowed"}, Environments: []conveyorv1.Environment{
		environment("staging", func(s *conveyorv1.EnvironmentSpec) {
			s.TriggerGroups = []string{"developers", "devops", "testers"}
		}),
		environment("pre-production", func(s *conveyorv1.EnvironmentSpec) {
			s.TriggerGroups = []string{"testers", "devops", "release-engineers"}
			s.Requires = []string{"staging"}
		}),
		environment("production", func(s *conveyorv1.EnvironmentSpec) {
			s.Pipelines.NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"conveyor.dev/production": "allowed"}}
			s.TriggerGroups = []string{"release-engineers", "devops"}
			s.Requires = []string{"pre-production"}
			s.Approval = &conveyorv1.EnvironmentApproval{Groups: []string{"release-engineers"}, Required: 1}
			s.OverrideGroups = []string{"release-engineers"}
		}),
	}}
}

// TestStagePolicy: each rule of an Environment, broken by a Pipeline a
// pipeline admin could write, is named; the seed's Pipeline keeps them all.
func TestStagePolicy(t *testing.T) {
	stage := func(spec *conveyorv1.PipelineSpec, name string) *conveyorv1.Stage {
		for i := range spec.Stages {
			if spec.Stages[i].Name == name {
				return &spec.Stages[i]
			}
		}
		t.Fatalf("no stage %s", name)
		return nil
	}
	cases := []struct {
		name   string
		change func(*conveyorv1.PipelineSpec, *Policy)
		rule   string // "" when the Pipeline keeps every rule
		in     string // part of the message
	}{
		{"the seed keeps every rule", func(*conveyorv1.PipelineSpec, *Policy) {}, "", ""},
		{"a namespace not labelled for production", func(_ *conveyorv1.PipelineSpec, p *Policy) { p.NamespaceLabels = nil }, "pipelines", "Pipeline shop-ci/shop may not deploy here"},
		{"named by pattern instead", func(_ *conveyorv1.PipelineSpec, p *Policy) {
			p.NamespaceLabels = nil
			p.Environments[2].Spec.Pipelines.Names = []string{"shop-ci/*"}
		}, "", ""},
		{"auto deploy to production", func(s *conveyorv1.PipelineSpec, _ *Policy) { stage(s, "production").When = conveyorv1.WhenAuto }, "allowAuto", "when: manual"},
		{"trigger groups widened", func(s *conveyorv1.PipelineSpec, _ *Policy) {
			stage(s, "production").TriggerGroups = []string{"release-engineers", "developers"}
		}, "triggerGroups", "developers may not deploy here"},
		{"trigger groups narrowed", func(s *conveyorv1.PipelineSpec, _ *Policy) {
			stage(s, "production").TriggerGroups = []string{"release-engineers"}
		}, "", ""},
		{"the approval gate forgotten", func(s *conveyorv1.PipelineSpec, _ *Policy) { s.Stages = append(s.Stages[:4], s.Stages[5]) }, "approval", "needs an approval stage before it"},
		{"the gate after production", func(s *conveyorv1.PipelineSpec, _ *Policy) { s.Stages[4], s.Stages[5] = s.Stages[5], s.Stages[4] }, "approval", ""},
		{"the gate lets the requester approve", func(s *conveyorv1.PipelineSpec, _ *Policy) {
			stage(s, "approve").Approval.AllowRunRequester = true
		}, "approval", "allowRunRequester off"},
		{"the gate asks developers", func(s *conveyorv1.PipelineSpec, _ *Policy) {
			stage(s, "approve").Approval.Groups = []string{"release-engineers", "developers"}
		}, "approval", ""},
		{"fewer approvers than the environment wants", func(_ *conveyorv1.PipelineSpec, p *Policy) { p.Environments[2].Spec.Approval.Required = 2 }, "approval", "at least 2"},
		{"production in branch runs without a gate there", func(s *conveyorv1.PipelineSpec, _ *Policy) { stage(s, "production").Refs = conveyorv1.RefsAll }, "approval", "branch runs"},
		{"another ServiceAccount", func(s *conveyorv1.PipelineSpec, _ *Policy) {
			stage(s, "production").Jobs[0].ServiceAccountName = "admin"
		}, "serviceAccounts", "runs as ServiceAccount admin"},
		{"an allowed ServiceAccount", func(s *conveyorv1.PipelineSpec, p *Policy) {
			stage(s, "production").Jobs[0].ServiceAccountName = "deployer"
			p.Environments[2].Spec.ServiceAccounts = []string{"deployer"}
		}, "", ""},
		{"root", func(s *conveyorv1.PipelineSpec, _ *Policy) {
			stage(s, "production").Jobs[0].SecurityContext = &corev1.PodSecurityContext{RunAsUser: new(int64)}
		}, "securityContext", "runAsUser 0"},
		{"a Secret of production the Environment does not list", func(s *conveyorv1.PipelineSpec, _ *Policy) {
			stage(s, "production").Jobs[0].Volumes = []conveyorv1.JobVolume{{Name: "creds", Secret: &corev1.SecretVolumeSource{SecretName: "db-password"}}}
		}, "mounts", "job deploy uses Secret db-password (volume creds); a pod mounts only objects of its own namespace, production, and jobs here may use the Secrets none (not the Pipeline's own, in shop-ci)"},
		{"a listed Secret, ConfigMap and pull Secret", func(s *conveyorv1.PipelineSpec, p *Policy) {
			j := &stage(s, "production").Jobs[0]
			j.Volumes = []conveyorv1.JobVolume{{Name: "creds", Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{Secret: &corev1.SecretProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "deploy-token"}}},
				{ConfigMap: &corev1.ConfigMapProjection{LocalObjectReference: corev1.LocalObjectReference{Name: "chart-values"}}},
			}}}, {Name: "scratch", EmptyDir: &corev1.EmptyDirVolumeSource{}}}
			j.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "registry"}}
			p.Environments[2].Spec.Mounts = &conveyorv1.EnvironmentMounts{Secrets: []string{"deploy-token", "registry"}, ConfigMaps: []string{"chart-values"}}
		}, "", ""},
		{"a pull Secret not listed", func(s *conveyorv1.PipelineSpec, p *Policy) {
			stage(s, "production").Jobs[0].ImagePullSecrets = []corev1.LocalObjectReference{{Name: "registry"}}
			p.Environments[2].Spec.Mounts = &conveyorv1.EnvironmentMounts{ConfigMaps: []string{"registry"}}
		}, "mounts", "uses Secret registry (imagePullSecrets)"},
		{"no Environment for the namespace", func(_ *conveyorv1.PipelineSpec, p *Policy) { p.Environments = p.Environments[:2] }, "environment", "no Environment names namespace production"},
		{"two Environments for the namespace", func(_ *conveyorv1.PipelineSpec, p *Policy) {
			other := environment("prod-copy", func(s *conveyorv1.EnvironmentSpec) { s.Namespace = "production" })
			p.Environments = append(p.Environments, other)
		}, "namespace", "more than one Environment"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec, pol := seed(), seedPolicy()
			for i := range spec.Stages {
				if spec.Stages[i].Name == "production" {
					spec.Stages[i].TriggerGroups = []string{"release-engineers", "devops"}
				}
			}
			tc.change(spec, &pol)
			breaches := CheckPipelinePolicy(pol, "shop-ci", "shop", spec)
			if tc.rule == "" {
				if len(breaches) != 0 {
					t.Fatalf("want no breach, got %v", breaches[0])
				}
				return
			}
			if len(breaches) != 1 || breaches[0].Rule != tc.rule || !strings.Contains(breaches[0].Message, tc.in) || !strings.Contains(breaches[0].Message, "stage production") {
				t.Fatalf("want one breach of rule %s containing %q, got %+v", tc.rule, tc.in, breaches)
			}
		})
	}
}

// TestDeployGuard: at deploy time the Environment as it reads now decides:
// a policy tightened after the run started blocks the stage, naming the
// rule; a commit that skipped pre-production is blocked in production even
// in a new run; a deploy recorded for the commit lets it through.
func TestDeployGuard(t *testing.T) {
	tested := done("build/compile", "testing/unit", "testing/lint")
	staging := approve("t1", "staging", "dev")
	run := newRun(branch)
	pol := seedPolicy()
	pol.Environments[0].Spec.TriggerGroups = []string{"devops"} // tightened after the run started
	p := decide(Facts{Run: run, Jobs: tested, Approvals: []ApprovalFact{staging}, Policy: pol, Now: t0})
	if ss := stageStatus(p, "staging"); ss.Phase != conveyorv1.StageBlocked || p.Reason != conveyorv1.ReasonEnvironmentPolicy ||
		!strings.Contains(ss.Message, "Environment staging (namespace staging), rule triggerGroups") || len(p.Create) != 0 {
		t.Fatalf("policy tightened: got %s %s (%s), %d creates", ss.Phase, p.Reason, ss.Message, len(p.Create))
	}
	if p.Status.Phase != conveyorv1.RunWaiting {
		t.Fatalf("a blocked run waits, got %s", p.Status.Phase)
	}

	// A freeze window that does not read (it got past the webhook, whose
	// failure policy is Ignore) blocks every deploy there: fail closed.
	broken := openPolicy()
	broken.Environments[0].Spec.FreezeWindows = []conveyorv1.FreezeWindow{{Name: "typo", Schedule: "0 18 * * fri-", Duration: &metav1.Duration{Duration: time.Hour}}}
	p = decide(Facts{Run: newRun(branch), Jobs: tested, Approvals: []ApprovalFact{staging}, Policy: broken, Now: t0})
	if ss := stageStatus(p, "staging"); ss.Phase != conveyorv1.StageBlocked || !strings.Contains(ss.Message, "rule freezeWindows: freeze window typo") || len(p.Create) != 0 {
		t.Fatalf("unreadable window: got %s (%s)", ss.Phase, ss.Message)
	}

	// A commit never deployed to staging may not go to pre-production, in a
	// run that reuses (or lacks) the stage that would have deployed it.
	ppRun := newRun(branch)
	ppRun.Status.PipelineSpec.Stages = append(ppRun.Status.PipelineSpec.Stages[:2], ppRun.Status.PipelineSpec.Stages[3:]...)
	pp := approve("t2", "pre-production", "tess")
	p = decide(Facts{Run: ppRun, Jobs: tested, Approvals: []ApprovalFact{pp}, Policy: seedPolicy(), Now: t0})
	if ss := stageStatus(p, "pre-production"); ss.Phase != conveyorv1.StageBlocked || !strings.Contains(ss.Message, "rule requires: commit abc123 has not been deployed to Environment staging") {
		t.Fatalf("skipped staging: got %s (%s)", ss.Phase, ss.Message)
	}
	// Recorded in staging: among the deploys in full (a record written
	// before 2026-12-04), or only among the commits deployed.
	for _, st := range []conveyorv1.EnvironmentStatus{
		{Deploys: []conveyorv1.Deploy{{Commit: "other"}, {Commit: "abc123"}}},
		{Deploys: []conveyorv1.Deploy{{Commit: "other"}}, DeployedCommits: []string{"other", "abc123"}},
	} {
		recorded := seedPolicy()
		recorded.Environments[0].Status = st
		p = decide(Facts{Run: ppRun, Jobs: tested, Approvals: []ApprovalFact{pp}, Policy: recorded, Now: t0})
		if ss := stageStatus(p, "pre-production"); ss.Phase != conveyorv1.StageRunning || len(p.Create) != 1 {
			t.Fatalf("recorded in staging (%+v): got %s (%s)", st, ss.Phase, ss.Message)
		}
	}

	// In the seed's own run, staging deployed by this run counts.
	full := withStatus(newRun(branch), decide(Facts{Run: newRun(branch), Jobs: tested, Approvals: []ApprovalFact{staging}, Policy: seedPolicy(), Now: t0}))
	staged := merge(tested, done("staging/deploy"))
	full = withStatus(full, decide(Facts{Run: full, Jobs: staged, Approvals: []ApprovalFact{staging}, Policy: seedPolicy(), Now: t0}))
	p = decide(Facts{Run: full, Jobs: staged, Approvals: []ApprovalFact{staging, pp}, Policy: seedPolicy(), Now: t0})
	if ss := stageStatus(p, "pre-production"); ss.Phase != conveyorv1.StageRunning {
		t.Fatalf("staging in this run: got %s (%s)", ss.Phase, ss.Message)
	}
}

// TestRecordDeploy: an Environment's record keeps its latest MaxDeploys
// deploys in full and its latest MaxDeployedCommits commits, each once, newest
// first; a retried write changes nothing; a record written before 2026-12-04
// (100 deploys in full) keeps every commit it names.
func TestRecordDeploy(t *testing.T) {
	deploy := func(i int, commit string) conveyorv1.Deploy {
		return conveyorv1.Deploy{RunUID: fmt.Sprintf("uid-%d", i), Stage: "deploy", Commit: commit}
	}
	st := &conveyorv1.EnvironmentStatus{}
	for i := range 150 {
		if !RecordDeploy(st, deploy(i, fmt.Sprintf("c%d", i))) {
			t.Fatalf("deploy %d not recorded", i)
		}
	}
	if RecordDeploy(st, deploy(149, "c149")) {
		t.Fatal("a retried write recorded the deploy again")
	}
	if len(st.Deploys) != MaxDeploys || st.Deploys[0].Commit != "c149" || st.LastDeploy.Commit != "c149" {
		t.Fatalf("deploys: %d, newest %s", len(st.Deploys), st.Deploys[0].Commit)
	}
	if len(st.DeployedCommits) != MaxDeployedCommits || st.DeployedCommits[0] != "c149" || st.DeployedCommits[99] != "c50" {
		t.Fatalf("commits: %d, %s..%s", len(st.DeployedCommits), st.DeployedCommits[0], st.DeployedCommits[len(st.DeployedCommits)-1])
	}
	// A commit deployed again moves to the front, once; an empty one is not
	// a commit.
	RecordDeploy(st, deploy(150, "c60"))
	RecordDeploy(st, deploy(151, ""))
	if st.DeployedCommits[0] != "c60" || len(st.DeployedCommits) != MaxDeployedCommits || slices.Index(st.DeployedCommits[1:], "c60") >= 0 || st.DeployedCommits[99] != "c50" {
		t.Fatalf("commits after c60 again: %v", st.DeployedCommits)
	}

	old := &conveyorv1.EnvironmentStatus{}
	for i := range 100 {
		old.Deploys = append([]conveyorv1.Deploy{deploy(i, fmt.Sprintf("o%d", i))}, old.Deploys...)
	}
	RecordDeploy(old, deploy(100, "n"))
	if len(old.Deploys) != MaxDeploys || len(old.DeployedCommits) != MaxDeployedCommits || old.DeployedCommits[0] != "n" || old.DeployedCommits[1] != "o99" || old.DeployedCommits[99] != "o1" {
		t.Fatalf("an older record: %d deploys, commits %v", len(old.Deploys), old.DeployedCommits)
	}
}

// TestFrozenStage: a deploy ready in a freeze window waits as Frozen with the
// window and its end, and is looked at again when it closes; it starts then,
// or at once when a member of overrideGroups overrides it (recorded in its
// decisions); an override by anyone else counts for nothing.
func TestFrozenStage(t *testing.T) {
	tested := done("build/compile", "testing/unit", "testing/lint")
	trigger := approve("t1", "staging", "dev")
	pol := openPolicy()
	end := t0.Add(2 * time.Hour)
	pol.Environments[0].Spec.FreezeWindows = []conveyorv1.FreezeWindow{{Name: "release-week", Reason: "quarter end",
		Start: &metav1.Time{Time: t0.Add(-time.Hour)}, End: &metav1.Time{Time: end}}}
	pol.Environments[0].Spec.OverrideGroups = []string{"devops"}
	run := newRun(branch)
	p := decide(Facts{Run: run, Jobs: tested, Approvals: []ApprovalFact{trigger}, Policy: pol, Now: t0})
	ss := stageStatus(p, "staging")
	if ss.Phase != conveyorv1.StageFrozen || p.Reason != conveyorv1.ReasonFrozen || len(p.Create) != 0 ||
		!strings.Contains(ss.Message, "freeze window release-week until 2026-11-26T14:00:00Z (quarter end)") || !strings.Contains(ss.Message, "devops") {
		t.Fatalf("in the window: got %s %s (%s), %d creates", ss.Phase, p.Reason, ss.Message, len(p.Create))
	}
	if p.RequeueAfter != 2*time.Hour {
		t.Fatalf("want a look when the window closes (2h), got %s", p.RequeueAfter)
	}

	after := decide(Facts{Run: withStatus(run, p), Jobs: tested, Approvals: []ApprovalFact{trigger}, Policy: pol, Now: metav1.NewTime(end)})
	if ss := stageStatus(after, "staging"); ss.Phase != conveyorv1.StageRunning {
		t.Fatalf("window closed: got %s (%s)", ss.Phase, ss.Message)
	}

	override := approve("o1", "staging", "olga")
	override.OverrideFreeze, override.Comment = true, "hotfix for the checkout outage"
	for _, tc := range []struct {
		groups []string
		want   conveyorv1.StagePhase
	}{{[]string{"devops"}, conveyorv1.StageRunning}, {[]string{"developers"}, conveyorv1.StageFrozen}} {
		o := override
		o.Groups = tc.groups
		p := decide(Facts{Run: withStatus(newRun(branch), p), Jobs: tested, Approvals: []ApprovalFact{trigger, o}, Policy: pol, Now: t0})
		ss := stageStatus(p, "staging")
		if ss.Phase != tc.want {
			t.Fatalf("override by %v: got %s (%s), want %s", tc.groups, ss.Phase, ss.Message, tc.want)
		}
		if tc.want == conveyorv1.StageRunning && (len(ss.Decisions) != 2 || ss.Decisions[1].Comment != "hotfix for the checkout outage") {
			t.Fatalf("the override is recorded with its comment: %+v", ss.Decisions)
		}
	}
}

func stageStatus(p Plan, name string) conveyorv1.StageStatus {
	for _, ss := range p.Status.Stages {
		if ss.Name == name {
			return ss
		}
	}
	return conveyorv1.StageStatus{}
}

// TestFrozen reads freeze windows with a fixed clock: recurring windows in
// their time zone across daylight saving changes (a duration is elapsed
// time), one-off windows, windows in a row, and schedules that do not parse.
func TestFrozen(t *testing.T) {
	at := func(s string) time.Time {
		tm, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return tm
	}
	weekend := conveyorv1.FreezeWindow{Name: "weekend", Schedule: "0 18 * * 5", Duration: &metav1.Duration{Duration: 62 * time.Hour}, TimeZone: "Europe/Berlin"}
	nightly := conveyorv1.FreezeWindow{Name: "nightly", Schedule: "30 1 * * *", Duration: &metav1.Duration{Duration: 2 * time.Hour}, TimeZone: "America/New_York"}
	oneOff := conveyorv1.FreezeWindow{Name: "launch", Start: &metav1.Time{Time: at("2026-12-24T00:00:00Z")}, End: &metav1.Time{Time: at("2026-12-27T00:00:00Z")}}
	// Two one-off windows in a row: the freeze lasts to the end of the second.
	chained := conveyorv1.FreezeWindow{Name: "after-launch", Start: &metav1.Time{Time: at("2026-12-26T12:00:00Z")}, End: &metav1.Time{Time: at("2026-12-28T00:00:00Z")}}
	cases := []struct {
		name    string
		windows []conveyorv1.FreezeWindow
		now     string
		window  string // "" when not frozen
		until   string
	}{
		// Friday 18:00 CEST (16:00 UTC) on the weekend Europe leaves summer
		// time; 62 h later is Monday 06:00 UTC, 07:00 CET.
		{"weekend opens on Friday evening Berlin time", []conveyorv1.FreezeWindow{weekend}, "2026-10-23T16:00:00Z", "weekend", "2026-10-26T06:00:00Z"},
		{"a minute before it opens", []conveyorv1.FreezeWindow{weekend}, "2026-10-23T15:59:00Z", "", ""},
		{"over the DST change", []conveyorv1.FreezeWindow{weekend}, "2026-10-25T03:00:00Z", "weekend", "2026-10-26T06:00:00Z"},
		{"closed on Monday", []conveyorv1.FreezeWindow{weekend}, "2026-10-26T06:00:00Z", "", ""},
		// In winter Friday 18:00 CET is 17:00 UTC.
		{"winter: opens an hour later in UTC", []conveyorv1.FreezeWindow{weekend}, "2026-11-27T16:30:00Z", "", ""},
		{"winter: open", []conveyorv1.FreezeWindow{weekend}, "2026-11-27T17:00:00Z", "weekend", "2026-11-30T07:00:00Z"},
		// New York springs forward on 2026-03-08 at 02:00: 01:30 EST is 06:30 UTC
		// and the 2 h window ends at 08:30 UTC (04:30 EDT).
		{"New York, the night clocks spring forward", []conveyorv1.FreezeWindow{nightly}, "2026-03-08T08:00:00Z", "nightly", "2026-03-08T08:30:00Z"},
		{"New York, the next night in summer time", []conveyorv1.FreezeWindow{nightly}, "2026-03-09T05:30:00Z", "nightly", "2026-03-09T07:30:00Z"},
		{"New York, before it opens in summer time", []conveyorv1.FreezeWindow{nightly}, "2026-03-09T05:29:00Z", "", ""},
		{"one-off", []conveyorv1.FreezeWindow{oneOff}, "2026-12-25T00:00:00Z", "launch", "2026-12-27T00:00:00Z"},
		{"one-off, at its end", []conveyorv1.FreezeWindow{oneOff}, "2026-12-27T00:00:00Z", "", ""},
		{"windows in a row", []conveyorv1.FreezeWindow{oneOff, chained}, "2026-12-25T00:00:00Z", "launch", "2026-12-28T00:00:00Z"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			windows, err := ParseWindows(&conveyorv1.Environment{Spec: conveyorv1.EnvironmentSpec{FreezeWindows: tc.windows}})
			if err != nil {
				t.Fatal(err)
			}
			f := Frozen(windows, at(tc.now))
			switch {
			case tc.window == "" && f != nil:
				t.Fatalf("want not frozen, got %s until %s", f.Window, f.Until.UTC())
			case tc.window != "" && (f == nil || f.Window != tc.window || !f.Until.Equal(at(tc.until))):
				t.Fatalf("want %s until %s, got %+v", tc.window, tc.until, f)
			}
		})
	}
	for _, bad := range []conveyorv1.FreezeWindow{
		{Name: "tz", Schedule: "0 18 * * 5", Duration: &metav1.Duration{Duration: time.Hour}, TimeZone: "Mars/Olympus"},
		{Name: "cron", Schedule: "every friday", Duration: &metav1.Duration{Duration: time.Hour}},
		{Name: "inline-tz", Schedule: "CRON_TZ=UTC 0 18 * * 5", Duration: &metav1.Duration{Duration: time.Hour}},
	} {
		if _, err := ParseWindow(bad); err == nil || !strings.Contains(err.Error(), "freeze window "+bad.Name) {
			t.Errorf("%s: want an error naming the window, got %v", bad.Name, err)
		}
	}
	next := NextFreeze(mustWindows(t, weekend), at("2026-11-25T00:00:00Z"))
	if !next.Equal(at("2026-11-27T17:00:00Z")) {
		t.Errorf("next freeze: got %s", next.UTC())
	}
}

func mustWindows(t *testing.T, ws ...conveyorv1.FreezeWindow) []window {
	t.Helper()
	out, err := ParseWindows(&conveyorv1.Environment{Spec: conveyorv1.EnvironmentSpec{FreezeWindows: ws}})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
