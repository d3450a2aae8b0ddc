package cli

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// seedRelease is the seed's release standing at the approval gate: built,
// tested, deployed to staging and (triggered by omar) pre-production.
func seedRelease() *conveyorv1.PipelineRun {
	stage := func(name string, when conveyorv1.StageWhen, env string, jobs ...string) conveyorv1.Stage {
		s := conveyorv1.Stage{Name: name, When: when, Environment: env}
		for _, j := range jobs {
			s.Jobs = append(s.Jobs, conveyorv1.JobSpec{Name: j, Image: "busybox"})
		}
		return s
	}
	approve := stage("approve", "", "")
	approve.Approval = &conveyorv1.ApprovalGate{Groups: []string{"release-engineers"}}
	spec := &conveyorv1.PipelineSpec{Stages: []conveyorv1.Stage{
		stage("build", "", "", "compile"), stage("testing", "", "", "unit", "lint"),
		stage("staging", "", "staging", "deploy"), stage("pre-production", conveyorv1.WhenManual, "pre-production", "deploy"),
		approve, stage("production", conveyorv1.WhenManual, "production", "deploy"),
	}}
	done := func(name, ns string, jobs ...string) conveyorv1.StageStatus {
		s := conveyorv1.StageStatus{Name: name, Phase: conveyorv1.StageSucceeded, Namespace: ns}
		for _, j := range jobs {
			s.Jobs = append(s.Jobs, conveyorv1.JobStatus{Name: j, Phase: conveyorv1.JobSucceeded, Namespace: ns, JobName: "x-" + j, Attempts: 1})
		}
		return s
	}
	pre := done("pre-production", "pre-production", "deploy")
	pre.Decisions = []conveyorv1.Decision{{Approval: "a1", Decision: conveyorv1.DecisionApprove, Approver: "omar", Comment: "QA window"}}
	unit := done("testing", "shop", "unit", "lint")
	unit.Jobs[0].Attempts = 2
	return &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "shop-tag-v1-4-0-x7k2p", CreationTimestamp: metav1.NewTime(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"},
			Git: conveyorv1.GitRef{Tag: "v1.4.0", Commit: "3f2a9c1e77"}, Requester: &conveyorv1.UserInfo{Username: "dana"}},
		Status: conveyorv1.PipelineRunStatus{
			Phase: conveyorv1.RunWaiting, Ref: "tag/v1.4.0", CurrentStage: "approve", PipelineSpec: spec,
			Stages: []conveyorv1.StageStatus{
				done("build", "shop", "compile"), unit, done("staging", "staging", "deploy"), pre,
				{Name: "approve", Phase: conveyorv1.StageWaiting, Message: "waits for 1 approval from release-engineers (not dana, who requested the run)"},
				{Name: "production", Phase: conveyorv1.StagePending, Namespace: "production"},
			},
		},
	}
}

// TestGraph draws runs as the seed's picture and compares them with golden
// files (go test -run TestGraph -update rewrites them).
func TestGraph(t *testing.T) {
	waiting := seedRelease()
	frozen := seedRelease()
	frozen.Status.CurrentStage = "production"
	st := frozen.Status.Stages
	st[4].Phase, st[4].Message = conveyorv1.StageSucceeded, ""
	st[4].Decisions = []conveyorv1.Decision{{Approval: "a2", Decision: conveyorv1.DecisionApprove, Approver: "rita", Comment: "ship it"}}
	st[5].Phase = conveyorv1.StageFrozen
	st[5].Message = "Environment production is frozen until 2026-12-02T06:00:00Z (release freeze); an Approval with overrideFreeze from release-engineers deploys it"
	st[5].Decisions = []conveyorv1.Decision{{Approval: "a3", Decision: conveyorv1.DecisionApprove, Approver: "omar"},
		{Approval: "a4", Decision: conveyorv1.DecisionApprove, Approver: "rob", Comment: "hotfix", OverrideFreeze: true}}
	st[0].Jobs[0].Results = []conveyorv1.Result{{Name: "digest", Value: "sha256:5eed0a1c9e2f4b7d8a3c6e1f0b9d2a4c7e8f1a3b5c7d9e0f2a4b6c8d0e1f3a5b"}}
	failed := seedRelease()
	failed.Status.Phase, failed.Status.CurrentStage = conveyorv1.RunFailed, "testing"
	failed.Status.Stages[1].Phase = conveyorv1.StageFailed
	failed.Status.Stages[1].Message = "job unit failed: BackoffLimitExceeded"
	failed.Status.Stages[1].Jobs[0].Phase = conveyorv1.JobFailed
	failed.Status.Stages = failed.Status.Stages[:2]
	failed.Status.Conditions = []metav1.Condition{{Type: "Ready", Status: metav1.ConditionFalse, Reason: "JobFailed", Message: "stage testing failed: job unit failed"}}
	notStarted := seedRelease()
	notStarted.Status = conveyorv1.PipelineRunStatus{}
	pipeline := &conveyorv1.Pipeline{Spec: *seedRelease().Status.PipelineSpec}

	for _, tc := range []struct {
		name     string
		run      *conveyorv1.PipelineRun
		pipeline *conveyorv1.Pipeline
	}{
		{"waiting", waiting, nil}, {"frozen", frozen, nil}, {"failed", failed, nil}, {"not-started", notStarted, pipeline},
	} {
		for _, colour := range []bool{false, true} {
			name := tc.name
			if colour {
				name += "-colour"
			}
			t.Run(name, func(t *testing.T) {
				var b bytes.Buffer
				if err := Graph(&b, View(tc.run, tc.pipeline), colour); err != nil {
					t.Fatal(err)
				}
				if !colour && strings.Contains(b.String(), "\x1b[") {
					t.Fatal("plain output has escape codes")
				}
				golden := filepath.Join("testdata", name+".golden")
				if *update {
					if err := os.WriteFile(golden, b.Bytes(), 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatal(err)
				}
				if b.String() != string(want) {
					t.Errorf("graph differs from %s:\n--- got\n%s\n--- want\n%s", golden, b.String(), want)
				}
			})
		}
	}
}

// TestViewActions: the buttons a stage offers follow its kind and phase.
func TestViewActions(t *testing.T) {
	v := View(seedRelease(), nil)
	got := map[string][]string{}
	for _, s := range v.Stages {
		if len(s.Actions) > 0 {
			got[s.Name] = s.Actions
		}
	}
	if len(got) != 1 || strings.Join(got["approve"], ",") != "approve,reject" {
		t.Errorf("stage actions %v, want approve: approve,reject only", got)
	}
	if strings.Join(v.Actions, ",") != "cancel" {
		t.Errorf("run actions %v, want cancel", v.Actions)
	}
	r := seedRelease()
	r.Status.Stages[5].Phase = conveyorv1.StageWaiting
	r.Status.Stages[4].Phase = conveyorv1.StageSucceeded
	if a := View(r, nil).Stages[5].Actions; strings.Join(a, ",") != "trigger" {
		t.Errorf("manual stage waiting offers %v, want trigger", a)
	}
	r.Status.Phase = conveyorv1.RunFailed
	if a := View(r, nil).Actions; strings.Join(a, ",") != "rerun" {
		t.Errorf("failed run offers %v, want rerun", a)
	}
}

func TestWrap(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"waits for 1 approval from release-engineers", "waits for 1|approval from|release-engineers"},
		{"abcdefghijklmnopqrstuvwxyz", "abcdefghijklmnopq|rstuvwxyz"},
		{"", ""},
	} {
		if got := strings.Join(wrap(tc.in, 17), "|"); got != tc.want {
			t.Errorf("wrap(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestPastTense(t *testing.T) {
	for verb, want := range map[string]string{"trigger": "triggered", "approve": "approved", "reject": "rejected", "override": "overrode"} {
		if got := pastTense(verb); got != want {
			t.Errorf("pastTense(%q) = %q, want %q", verb, got, want)
		}
	}
}
