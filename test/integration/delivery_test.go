package integration_test

import (
	"context"
	"math"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestDeliveryMetrics: a scripted series of deploys to one environment
// (success, failure, success) moves the delivery metrics as docs/metrics.md
// says: deployments by result, lead time per success, and one time to restore;
// and the PromQL of docs/metrics.md and docs/events.md, run by Prometheus's
// engine on the samples a Prometheus scraping the manager would hold, gives
// the DORA figures of that series.
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
	prom := newPrometheusStore(t)
	prom.scrape()
	for i, fails := range []bool{false, true, false} {
		run := newRun(t, ns, conveyorv1.GitRef{Branch: "feature_x", Commit: "abc1234"})
		passStage(t, run, "build", "compile")
		waitRun(t, run, conveyorv1.RunRunning, "deploy")
		prom.scrape() // while it deploys
		if fails {
			finishJob(t, waitJob(t, run, "deploy", "helm"), "BackoffLimitExceeded", "the rollout timed out")
			waitRun(t, run, conveyorv1.RunFailed, "deploy")
		} else {
			passStage(t, run, "deploy", "helm")
			waitRun(t, run, conveyorv1.RunSucceeded, "deploy")
		}
		t.Logf("deploy %d (fails: %v) told", i+1, fails)
		prom.scrape()
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

	checkDocQueries(t, prom, envNS)
}

// checkDocQueries runs every query of the docs and checks the DORA ones
// against the series played: 2 successful deploys and 1 failed in 30 days,
// each deploy and the restore took seconds (under the first bucket, 60 s).
func checkDocQueries(t *testing.T, prom *prometheusStore, env string) {
	want := map[string]func(float64) bool{
		"Deployment frequency: successful deploys per day":                   func(v float64) bool { return math.Abs(v-2.0/30) < 1e-9 },
		"Change failure rate: failed deploys / all deploys":                  func(v float64) bool { return math.Abs(v-1.0/3) < 1e-9 },
		"Lead time for changes: median, commit (or run created) -> deployed": func(v float64) bool { return v > 0 && v <= 60 },
		"Time to restore: median, failed deploy -> next successful deploy":   func(v float64) bool { return v > 0 && v <= 60 },
	}
	for _, q := range append(docQueries(t, "../../docs/metrics.md"), docQueries(t, "../../docs/events.md")...) {
		v := prom.query(q.expr)
		check, ok := want[q.comment]
		if !ok {
			t.Logf("%s: %s = %v", q.comment, q.expr, v)
			continue
		}
		delete(want, q.comment)
		if got := one(t, v, env); !check(got) {
			t.Errorf("%s: %s = %v", q.comment, q.expr, got)
		} else {
			t.Logf("%s: %v", q.comment, got)
		}
	}
	for comment := range want {
		t.Errorf("docs/metrics.md has no query %q", comment)
	}
}
