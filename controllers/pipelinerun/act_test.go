package pipelinerun

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// TestStagesAhead: engine.DeploysOutside (the finalizer put on ahead of need) and
// deploysAgain (no handover while the run deploys there again) look only at
// the stages the run's ref runs that have not finished.
func TestStagesAhead(t *testing.T) {
	spec := &conveyorv1.PipelineSpec{Stages: []conveyorv1.Stage{
		{Name: "build"},
		{Name: "staging", Environment: "staging"},
		{Name: "production", Environment: "production", Refs: conveyorv1.RefsTags},
		{Name: "staging-again", Environment: "staging", Refs: conveyorv1.RefsTags},
	}}
	run := func(git conveyorv1.GitRef, cancelled bool) *conveyorv1.PipelineRun {
		return &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "shop"}, Spec: conveyorv1.PipelineRunSpec{Git: git, Cancelled: cancelled}}
	}
	branch, tag := conveyorv1.GitRef{Branch: "feature_a"}, conveyorv1.GitRef{Tag: "v1", Commit: "abc"}
	status := func(phase conveyorv1.RunPhase, ended ...string) *conveyorv1.PipelineRunStatus {
		st := &conveyorv1.PipelineRunStatus{Phase: phase, PipelineSpec: spec}
		for _, s := range ended {
			st.Stages = append(st.Stages, conveyorv1.StageStatus{Name: s, Phase: conveyorv1.StageSucceeded})
		}
		return st
	}
	for _, c := range []struct {
		name string
		run  *conveyorv1.PipelineRun
		st   *conveyorv1.PipelineRunStatus
		want bool
	}{
		{"at build, staging ahead", run(branch, false), status(conveyorv1.RunRunning), true},
		{"a branch run past staging: production is for tags", run(branch, false), status(conveyorv1.RunRunning, "build", "staging"), false},
		{"a tag run past staging: production ahead", run(tag, false), status(conveyorv1.RunRunning, "build", "staging"), true},
		{"cancelled", run(tag, true), status(conveyorv1.RunRunning), false},
		{"finished", run(tag, false), status(conveyorv1.RunFailed), false},
		{"no snapshot yet", run(tag, false), &conveyorv1.PipelineRunStatus{Phase: conveyorv1.RunRunning}, false},
	} {
		if got := engine.DeploysOutside(c.run, c.st); got != c.want {
			t.Errorf("deploysOutside, %s: %v, want %v", c.name, got, c.want)
		}
	}
	if deploysAgain(run(branch, false), status(conveyorv1.RunRunning, "build", "staging"), "staging", "staging") {
		t.Error("a branch run deploys to staging again through a stage for tags only")
	}
	if !deploysAgain(run(tag, false), status(conveyorv1.RunRunning, "build", "staging"), "staging", "staging") {
		t.Error("a tag run's staging-again stage is not seen as deploying to staging again")
	}
	if deploysAgain(run(tag, false), status(conveyorv1.RunRunning, "build", "staging", "production", "staging-again"), "staging", "staging-again") {
		t.Error("a run with every staging stage ended deploys there again")
	}
}
