package engine

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestDecideStart drives the start ladder of a run without a snapshot.
func TestDecideStart(t *testing.T) {
	unstarted := func(mut func(*conveyorv1.PipelineRun)) *conveyorv1.PipelineRun {
		run := newRun(branch)
		run.Status = conveyorv1.PipelineRunStatus{}
		if mut != nil {
			mut(run)
		}
		return run
	}
	pipeline := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Name: "shop", Generation: 3}, Spec: *seed()}
	badPatterns := pipeline.DeepCopy()
	badPatterns.Spec.Refs.Branches = []string{"feature_["}
	failed := newRun(branch)
	failed.Name = "shop-0"
	failed.Status = decide(Facts{Run: failed, Jobs: merge(done("build/compile", "testing/unit"),
		map[string]JobObservation{"testing/lint": {Phase: conveyorv1.JobFailed}}), Now: t0}).Status
	succeeded := failed.DeepCopy()
	succeeded.Status.Phase = conveyorv1.RunSucceeded
	rerun := func(r *conveyorv1.PipelineRun) { r.Spec.RerunOf = "shop-0" }

	for _, tc := range []struct {
		name       string
		run        *conveyorv1.PipelineRun
		pipeline   *conveyorv1.Pipeline
		source     *conveyorv1.PipelineRun
		wantPhase  conveyorv1.RunPhase
		wantReason string
		wantHealth Health
		snapshot   bool
		terminal   bool
		reused     int
	}{
		{"pipeline missing", unstarted(nil), nil, nil, conveyorv1.RunPending, conveyorv1.ReasonPipelineNotFound, Stalled, false, false, 0},
		{"pipeline unusable", unstarted(nil), badPatterns, nil, conveyorv1.RunPending, conveyorv1.ReasonInvalidSpec, Stalled, false, false, 0},
		{"cancelled before it started", unstarted(func(r *conveyorv1.PipelineRun) { r.Spec.Cancelled = true }), nil, nil,
			conveyorv1.RunCancelled, conveyorv1.ReasonCancelled, Stalled, false, false, 0},
		{"ref not allowed", unstarted(func(r *conveyorv1.PipelineRun) { r.Spec.Git = conveyorv1.GitRef{Branch: "hotfix_x"} }), pipeline, nil,
			conveyorv1.RunFailed, conveyorv1.ReasonRefNotAllowed, Stalled, false, true, 0},
		{"rerun of a missing run", unstarted(rerun), pipeline, nil, conveyorv1.RunFailed, conveyorv1.ReasonInvalidRerun, Stalled, false, true, 0},
		{"rerun of a succeeded run", unstarted(rerun), pipeline, succeeded, conveyorv1.RunFailed, conveyorv1.ReasonInvalidRerun, Stalled, false, true, 0},
		{"starts", unstarted(nil), pipeline, nil, conveyorv1.RunRunning, conveyorv1.ReasonProgressing, Progressing, true, false, 0},
		{"rerun reuses build", unstarted(rerun), pipeline, failed, conveyorv1.RunRunning, conveyorv1.ReasonProgressing, Progressing, true, false, 1},
		{"finished without a snapshot stays", unstarted(func(r *conveyorv1.PipelineRun) {
			r.Status.Phase = conveyorv1.RunCancelled
			r.Status.Conditions = []metav1.Condition{{Type: conveyorv1.ConditionReady, Reason: conveyorv1.ReasonCancelled, Message: "cancelled"}}
		}), pipeline, nil, conveyorv1.RunCancelled, "", Stalled, false, false, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := DecideRun(observed(Facts{Run: tc.run, Pipeline: tc.pipeline, RerunSource: tc.source, Now: t0}))
			if p.Status.Phase != tc.wantPhase || p.Reason != tc.wantReason || p.Health != tc.wantHealth {
				t.Fatalf("got %s %s health %d (%s); want %s %s health %d", p.Status.Phase, p.Reason, p.Health, p.Message, tc.wantPhase, tc.wantReason, tc.wantHealth)
			}
			if (p.Status.PipelineSpec != nil) != tc.snapshot || (p.Terminal != nil) != tc.terminal {
				t.Fatalf("snapshot %v terminal %v; want %v %v", p.Status.PipelineSpec != nil, p.Terminal, tc.snapshot, tc.terminal)
			}
			reused := 0
			for _, ss := range p.Status.Stages {
				if ss.ReusedFrom != "" {
					reused++
				}
			}
			if reused != tc.reused {
				t.Fatalf("reused %d stages, want %d", reused, tc.reused)
			}
			if p.Message == "" && !p.Unchanged {
				t.Fatal("a decision without a message")
			}
			if tc.snapshot && p.Status.PipelineGeneration != 3 {
				t.Fatalf("snapshot of generation %d, want 3", p.Status.PipelineGeneration)
			}
		})
	}
	// The snapshot is a copy: editing the Pipeline does not change it.
	p := DecideRun(observed(Facts{Run: unstarted(nil), Pipeline: pipeline, Now: t0}))
	pipeline.Spec.Stages[0].Jobs[0].Image = "changed"
	if p.Status.PipelineSpec.Stages[0].Jobs[0].Image == "changed" || len(p.Create) != 1 {
		t.Fatalf("snapshot shares the Pipeline's spec, or build not created: %d creates", len(p.Create))
	}
}
