package pipelinerun

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestLeadStart: lead time starts at the pushed commit's time when the
// receiver recorded it, else at the run's creation (also when a commit
// claims a time after the deploy: a clock that cannot be right).
func TestLeadStart(t *testing.T) {
	created := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	end := created.Add(time.Hour)
	commit := created.Add(-3 * time.Hour)
	run := func(tr *conveyorv1.Trigger) *conveyorv1.PipelineRun {
		return &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.Time{Time: created}}, Spec: conveyorv1.PipelineRunSpec{Trigger: tr}}
	}
	for _, c := range []struct {
		tr   *conveyorv1.Trigger
		want time.Time
	}{
		{nil, created},
		{&conveyorv1.Trigger{Provider: "gitlab"}, created},
		{&conveyorv1.Trigger{CommitTime: &metav1.Time{Time: commit}}, commit},
		{&conveyorv1.Trigger{CommitTime: &metav1.Time{Time: end.Add(time.Minute)}}, created},
	} {
		if got := leadStart(run(c.tr), end); !got.Equal(c.want) {
			t.Errorf("trigger %+v: lead time from %v, want %v", c.tr, got, c.want)
		}
	}
}
