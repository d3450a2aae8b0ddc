package engine

import (
	"strings"
	"testing"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// failedAtProduction is a tag run of the seed that passed everything up to
// its production deploy, which failed.
func failedAtProduction() *conveyorv1.PipelineRun {
	run := newRun(tag)
	run.Name = "shop-1"
	jobs := done("build/compile", "testing/unit", "testing/lint", "staging/deploy", "pre-production/deploy")
	jobs["production/deploy"] = JobObservation{Phase: conveyorv1.JobFailed, Reason: "BackoffLimitExceeded"}
	approvals := []ApprovalFact{approve("s", "staging", "dev"), approve("p", "pre-production", "tess"), approve("g", "approve", "rel"), approve("x", "production", "ops")}
	withStatus(run, decide(Facts{Run: run, Jobs: jobs, Approvals: approvals, Now: t0}))
	if run.Status.Phase != conveyorv1.RunFailed || run.Status.CurrentStage != "production" {
		panic("fixture: " + string(run.Status.Phase) + " at " + run.Status.CurrentStage)
	}
	return run
}

func rerunOf(source *conveyorv1.PipelineRun) *conveyorv1.PipelineRun {
	run := newRun(source.Spec.Git)
	run.Name, run.UID, run.Spec.RerunOf = "shop-2", "uid-2", source.Name
	return run
}

func TestCheckRerun(t *testing.T) {
	source := failedAtProduction()
	if err := CheckRerun(rerunOf(source), source); err != nil {
		t.Fatalf("a failed run of the same pipeline, ref and commit: %v", err)
	}
	for _, tc := range []struct {
		name   string
		change func(run, source *conveyorv1.PipelineRun) *conveyorv1.PipelineRun
		want   string
	}{
		{"missing", func(_, _ *conveyorv1.PipelineRun) *conveyorv1.PipelineRun { return nil }, "does not exist"},
		{"running", func(_, s *conveyorv1.PipelineRun) *conveyorv1.PipelineRun {
			s.Status.Phase = conveyorv1.RunRunning
			return s
		}, "has not finished"},
		{"succeeded", func(_, s *conveyorv1.PipelineRun) *conveyorv1.PipelineRun {
			s.Status.Phase = conveyorv1.RunSucceeded
			return s
		}, "nothing to rerun"},
		{"rejected", func(_, s *conveyorv1.PipelineRun) *conveyorv1.PipelineRun {
			s.Status.Phase, s.Status.CurrentStage = conveyorv1.RunRejected, "approve"
			return s
		}, "rejected at stage approve"},
		{"other pipeline", func(r, s *conveyorv1.PipelineRun) *conveyorv1.PipelineRun {
			r.Spec.PipelineRef.Name = "other"
			return s
		}, "ran Pipeline shop"},
		{"other commit", func(r, s *conveyorv1.PipelineRun) *conveyorv1.PipelineRun {
			r.Spec.Git.Commit = "def456"
			return s
		}, "same ref and commit"},
		{"other tag", func(r, s *conveyorv1.PipelineRun) *conveyorv1.PipelineRun {
			r.Spec.Git.Tag = "v1.4.1"
			return s
		}, "same ref and commit"},
	} {
		source := failedAtProduction()
		run := rerunOf(source)
		err := CheckRerun(run, tc.change(run, source))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "spec.rerunOf") {
			t.Errorf("%s: got %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
}

func TestReusedStages(t *testing.T) {
	source := failedAtProduction()
	names := func(ss []conveyorv1.StageStatus) string {
		var out []string
		for _, s := range ss {
			out = append(out, s.Name)
			if s.ReusedFrom != "shop-1" || s.Phase != conveyorv1.StageSucceeded {
				t.Errorf("stage %s: reusedFrom %q phase %s", s.Name, s.ReusedFrom, s.Phase)
			}
		}
		return strings.Join(out, ",")
	}
	// The approval gate is not carried over by default: the rerun starts there.
	if got := names(ReusedStages(source, rerunOf(source), seed())); got != "build,testing,staging,pre-production" {
		t.Fatalf("reused %s", got)
	}
	spec := seed()
	spec.Stages[4].Approval.CarryOverToReruns = true
	source.Status.PipelineSpec.Stages[4].Approval.CarryOverToReruns = true
	if got := names(ReusedStages(source, rerunOf(source), spec)); got != "build,testing,staging,pre-production,approve" {
		t.Fatalf("with carryOverToReruns: reused %s", got)
	}
	// A rerun started by the one who approved the gate asks again:
	// carrying the decision over would let her pass her own rerun's gate.
	byApprover := rerunOf(source)
	byApprover.Spec.Requester = &conveyorv1.UserInfo{Username: "rel"}
	if got := names(ReusedStages(source, byApprover, spec)); got != "build,testing,staging,pre-production" {
		t.Fatalf("carryOverToReruns, rerun by the approver: reused %s", got)
	}
	// A stage whose definition changed runs again, and so does every stage after it.
	changed := seed()
	changed.Stages[1].Jobs[0].Image = "golang:1.26"
	if got := names(ReusedStages(source, rerunOf(source), changed)); got != "build" {
		t.Fatalf("testing changed: reused %s", got)
	}

	// Decide keeps reused stages as they were and starts after them: the
	// rerun waits for the approval again.
	run := rerunOf(source)
	run.Status.Stages = ReusedStages(source, rerunOf(source), seed())
	p := decide(Facts{Run: run, Now: t0})
	if p.Status.Phase != conveyorv1.RunWaiting || p.Status.CurrentStage != "approve" || len(p.Create) != 0 {
		t.Fatalf("rerun: phase %s at %s, creates %d", p.Status.Phase, p.Status.CurrentStage, len(p.Create))
	}
	if p.Status.Stages[0].ReusedFrom != "shop-1" || p.Status.Stages[3].Jobs[0].Phase != conveyorv1.JobSucceeded {
		t.Fatalf("reused stages changed: %+v", p.Status.Stages[:4])
	}
}
