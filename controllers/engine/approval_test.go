package engine

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

func TestEvaluateApproval(t *testing.T) {
	waitingStaging := func() *conveyorv1.PipelineRun {
		run := newRun(branch)
		return withStatus(run, decide(Facts{Run: run, Jobs: done("build/compile", "testing/unit", "testing/lint"), Now: t0}))
	}
	triggered := func() *conveyorv1.PipelineRun {
		run := newRun(branch)
		return withStatus(run, decide(Facts{Run: run, Jobs: done("build/compile", "testing/unit", "testing/lint"),
			Approvals: []ApprovalFact{approve("a1", "staging", "dana")}, Now: t0}))
	}
	building := func() *conveyorv1.PipelineRun {
		run := newRun(branch)
		return withStatus(run, decide(Facts{Run: run, Now: t0}))
	}
	failed := func() *conveyorv1.PipelineRun {
		run := newRun(branch)
		return withStatus(run, decide(Facts{Run: run, Jobs: map[string]JobObservation{"build/compile": {Phase: conveyorv1.JobFailed}}, Now: t0}))
	}
	for _, tc := range []struct {
		name     string
		run      *conveyorv1.PipelineRun
		approval string
		stage    string
		decision conveyorv1.ApprovalDecision
		reason   string
		accepted bool
		final    bool
	}{
		{"no such run", nil, "a1", "staging", conveyorv1.DecisionApprove, conveyorv1.ReasonRunNotFound, false, true},
		{"no such stage", waitingStaging(), "a1", "deploy", conveyorv1.DecisionApprove, conveyorv1.ReasonStageNotFound, false, true},
		{"tags-only stage in a branch run", waitingStaging(), "a1", "production", conveyorv1.DecisionApprove, conveyorv1.ReasonStageNotInRun, false, true},
		{"automatic stage", waitingStaging(), "a1", "testing", conveyorv1.DecisionApprove, conveyorv1.ReasonStageNotManual, false, true},
		{"reject on a manual stage", waitingStaging(), "a1", "staging", conveyorv1.DecisionReject, conveyorv1.ReasonRejectNotAllowed, false, true},
		{"stage not reached yet", building(), "a1", "staging", conveyorv1.DecisionApprove, conveyorv1.ReasonStageNotWaiting, false, false},
		{"stage waiting, not yet recorded", waitingStaging(), "a1", "staging", conveyorv1.DecisionApprove, conveyorv1.ReasonStageNotWaiting, false, false},
		{"recorded", triggered(), "a1", "staging", conveyorv1.DecisionApprove, conveyorv1.ReasonAccepted, true, true},
		{"stage already triggered by another", triggered(), "a2", "staging", conveyorv1.DecisionApprove, conveyorv1.ReasonStageAlreadyDecided, false, true},
		{"run finished before the stage", failed(), "a1", "staging", conveyorv1.DecisionApprove, conveyorv1.ReasonRunFinished, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: tc.approval, Namespace: "shop-ci"},
				Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: "shop-1"}, Stage: tc.stage, Decision: tc.decision,
					Approver: &conveyorv1.UserInfo{Username: "dana"}, Run: &conveyorv1.RecordedRun{UID: "uid-1"}}}
			v := EvaluateApproval(tc.run, a, false)
			if v.Reason != tc.reason || v.Accepted != tc.accepted || v.Final != tc.final {
				t.Fatalf("got %+v, want reason %s accepted %v final %v", v, tc.reason, tc.accepted, tc.final)
			}
			if v.Message == "" {
				t.Fatal("verdict without a message")
			}
		})
	}
}

func withStatus(run *conveyorv1.PipelineRun, p Plan) *conveyorv1.PipelineRun {
	run.Status = p.Status
	return run
}

// TestApprovalVerdictHealth: what the Approval's status reads, and when it
// may leave the manager's cache (settled).
func TestApprovalVerdictHealth(t *testing.T) {
	run := newRun(tag)
	run.Spec.Requester = &conveyorv1.UserInfo{Username: "rita"}
	gate := withStatus(run, decide(Facts{Run: run, Jobs: done("build/compile", "testing/unit", "testing/lint", "staging/deploy", "pre-production/deploy"),
		Approvals: []ApprovalFact{approve("s", "staging", "dev"), approve("p", "pre-production", "tess")}, Now: t0}))
	replaced := gate.DeepCopy()
	replaced.UID = "uid-2"
	by := func(name, approver string) *conveyorv1.Approval {
		a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop-ci"},
			Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: "shop-1"}, Stage: "approve", Decision: conveyorv1.DecisionApprove}}
		if approver != "" {
			a.Spec.Approver = &conveyorv1.UserInfo{Username: approver}
			a.Spec.Run = &conveyorv1.RecordedRun{UID: "uid-1"}
		}
		return a
	}
	for _, tc := range []struct {
		name     string
		run      *conveyorv1.PipelineRun
		approval *conveyorv1.Approval
		reason   string
		health   Health
		settled  bool
		postpone bool
	}{
		{"a missing run may still appear", nil, by("a", "rob"), conveyorv1.ReasonRunNotFound, Stalled, false, false},
		{"no approver recorded: it got in without the webhook", gate, by("a", ""), conveyorv1.ReasonApproverNotRecorded, Stalled, false, false},
		{"given for an earlier run of the same name", replaced, by("a", "rob"), conveyorv1.ReasonRunReplaced, Stalled, true, false},
		{"waiting, about to be recorded", gate, by("a", "rob"), conveyorv1.ReasonStageNotWaiting, Progressing, false, true},
		{"the run's requester on its own gate", gate, by("a", "rita"), conveyorv1.ReasonSelfApproval, Stalled, true, false},
		{"accepted", withStatus(gate.DeepCopy(), decide(Facts{Run: gate, Approvals: []ApprovalFact{approve("a", "approve", "rob")},
			Jobs: done("build/compile", "testing/unit", "testing/lint", "staging/deploy", "pre-production/deploy"), Now: t0})), by("a", "rob"), conveyorv1.ReasonAccepted, Healthy, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := EvaluateApproval(tc.run, tc.approval, false)
			postpone, _ := v.Postpone(tc.approval, t0.Time)
			if v.Reason != tc.reason || v.Health != tc.health || v.Settled != tc.settled || postpone != tc.postpone {
				t.Fatalf("got %+v (postpone %v), want %s health %d settled %v postpone %v", v, postpone, tc.reason, tc.health, tc.settled, tc.postpone)
			}
		})
	}
}

// TestApprovalFirstStatusGrace: an Approval given before its stage is
// reached gets its first status after FirstStatusGrace, not at once (the
// cache may not show the stage waiting yet); a status once written is kept
// up to date at once.
func TestApprovalFirstStatusGrace(t *testing.T) {
	run := newRun(branch)
	building := withStatus(run, decide(Facts{Run: run, Now: t0}))
	a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: "a1", Namespace: "shop-ci", CreationTimestamp: t0},
		Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: "shop-1"}, Stage: "staging", Decision: conveyorv1.DecisionApprove,
			Approver: &conveyorv1.UserInfo{Username: "dana"}, Run: &conveyorv1.RecordedRun{UID: "uid-1"}}}
	v := EvaluateApproval(building, a, false)
	if wait, after := v.Postpone(a, t0.Time.Add(time.Second)); !wait || after != FirstStatusGrace-time.Second {
		t.Fatalf("1 s old, stage not reached: postpone %v for %v, want true for %v", wait, after, FirstStatusGrace-time.Second)
	}
	if wait, _ := v.Postpone(a, t0.Time.Add(FirstStatusGrace)); wait {
		t.Fatal("past the grace the status is written")
	}
	a.Status.Conditions = []metav1.Condition{{Type: "Ready"}}
	if wait, _ := v.Postpone(a, t0.Time.Add(time.Second)); wait {
		t.Fatal("an Approval with a status is kept up to date at once")
	}
	if wait, _ := EvaluateApproval(nil, a, false).Postpone(a, t0.Time); wait {
		t.Fatal("a final verdict (no such run) is never postponed")
	}
}

// TestUnrecordedApproverFailsClosed: an Approval without an approver recorded
// at admission (the webhooks not registered) neither triggers nor passes a
// gate, unless the manager is told to trust it (local use).
func TestUnrecordedApproverFailsClosed(t *testing.T) {
	tested := done("build/compile", "testing/unit", "testing/lint")
	unrecorded := []ApprovalFact{approve("a1", "staging", "")}
	run := newRun(branch)
	if p := decide(Facts{Run: run, Jobs: tested, Approvals: unrecorded, Now: t0}); p.Status.Phase != conveyorv1.RunWaiting || len(p.Create) != 0 {
		t.Fatalf("an unrecorded trigger started staging: %s, %d creates", p.Status.Phase, len(p.Create))
	}
	if p := decide(Facts{Run: run, Jobs: tested, Approvals: unrecorded, Now: t0, TrustUnrecordedApprovers: true}); p.Status.Phase != conveyorv1.RunRunning || len(p.Create) != 1 {
		t.Fatalf("a trusted unrecorded trigger did not start staging: %s, %d creates", p.Status.Phase, len(p.Create))
	}
	waiting := withStatus(newRun(branch), decide(Facts{Run: newRun(branch), Jobs: tested, Now: t0}))
	a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: "a1", Namespace: "shop-ci"},
		Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: "shop-1"}, Stage: "staging", Decision: conveyorv1.DecisionApprove}}
	if v := EvaluateApproval(waiting, a, true); v.Reason != conveyorv1.ReasonStageNotWaiting || !v.Waiting {
		t.Fatalf("trusted: %+v", v)
	}
}

// TestApprovalBindsToItsRun: a run deleted and created again under its name
// starts from nothing: the Approvals given to the earlier run do not count.
func TestApprovalBindsToItsRun(t *testing.T) {
	tested := done("build/compile", "testing/unit", "testing/lint")
	again := newRun(branch)
	again.UID = "uid-2"
	old := []ApprovalFact{approve("a1", "staging", "dana")} // recorded for uid-1
	if p := decide(Facts{Run: again, Jobs: tested, Approvals: old, Now: t0}); p.Status.Phase != conveyorv1.RunWaiting || len(p.Create) != 0 {
		t.Fatalf("an Approval of the earlier run triggered the new one: %s, %d creates", p.Status.Phase, len(p.Create))
	}
	mine := []ApprovalFact{approve("a2", "staging", "dana")}
	mine[0].RunUID = "uid-2"
	if p := decide(Facts{Run: again, Jobs: tested, Approvals: mine, Now: t0}); p.Status.Phase != conveyorv1.RunRunning {
		t.Fatalf("its own Approval did not trigger it: %s", p.Status.Phase)
	}
}

// TestSelfApprovalCoversThePusher: the requester, and the pusher of a pushed
// run (mapped or not), may not decide its gate; others may.
func TestSelfApprovalCoversThePusher(t *testing.T) {
	spec := seed()
	spec.Source = &conveyorv1.PipelineSource{Pushers: []conveyorv1.PusherMapping{{Name: "rita.git", User: "rita"}}}
	gate := &spec.Stages[4]
	run := newRun(tag)
	run.Spec.Trigger = &conveyorv1.Trigger{Pusher: "rita.git"}
	run.Spec.Requester = &conveyorv1.UserInfo{Username: Pusher(spec, "rita.git")}
	if Pusher(spec, "rob") != "" || run.Spec.Requester.Username != "rita" {
		t.Fatalf("mapping: %q", run.Spec.Requester.Username)
	}
	for approver, want := range map[string]bool{"rita": true, "rita.git": true, "rob": false, "": false} {
		if got := SelfApproval(run, gate, approver); got != want {
			t.Errorf("SelfApproval(%q) = %v, want %v", approver, got, want)
		}
	}
	gate.Approval.AllowRunRequester = true
	if SelfApproval(run, gate, "rita") {
		t.Error("allowRunRequester: the requester is refused")
	}
}
