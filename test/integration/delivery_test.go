package integration_test

import (
	"context"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestDeliveryMetrics: a scripted series of deploys to one environment
// (success, failure, success) moves the delivery metrics as docs/metrics.md
// says: deployments by result, lead time per success, and one time to restore.
func TestDeliveryMetrics(t *testing.T) {
	ns, envNS := newNamespace(t), newNamespace(t)
	openEnvironment(t, envNS)
	startManager(t)
	p := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns}, Spec: conveyorv1.PipelineSpec{
		Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "compile", Image: "golang"}}},
			{Name: "deploy", Environment: envNS, Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "helm"}}},
		},
	}}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"environment": envNS}
	probe := func(name string, labels map[string]string) float64 { return sample(t, name, labels) }
	for i, fails := range []bool{false, true, false} {
		run := newRun(t, ns, conveyorv1.GitRef{Branch: "feature_x", Commit: "abc1234"})
		passStage(t, run, "build", "compile")
		if fails {
			finishJob(t, waitJob(t, run, "deploy", "helm"), "BackoffLimitExceeded", "the rollout timed out")
			waitRun(t, run, conveyorv1.RunFailed, "deploy")
		} else {
			passStage(t, run, "deploy", "helm")
			waitRun(t, run, conveyorv1.RunSucceeded, "deploy")
		}
		t.Logf("deploy %d (fails: %v) told", i+1, fails)
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"conveyor_deployments_total", map[string]string{"environment": envNS, "result": "Succeeded"}, 2},
		{"conveyor_deployments_total", map[string]string{"environment": envNS, "result": "Failed"}, 1},
		{"conveyor_deploy_lead_time_seconds", env, 2},
		{"conveyor_deploy_time_to_restore_seconds", env, 1},
	} {
		if got := probe(c.name, c.labels); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}
