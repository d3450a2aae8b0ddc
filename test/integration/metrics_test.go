package integration_test

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// sample sums a metric's value (counters, gauges) or observation count (histograms)
// over the series whose labels include the given ones.
func sample(t *testing.T, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if !hasLabels(m, labels) {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				sum += m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	got := map[string]string{}
	for _, l := range m.GetLabel() {
		got[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got[k] != v {
			return false
		}
	}
	return true
}

// A tag run through to production moves every Conveyor metric by what it did.
func TestMetrics(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	type probe struct {
		name   string
		labels map[string]string
		delta  float64
	}
	probes := []probe{
		{"conveyor_pipelineruns_started_total", nil, 1},
		{"conveyor_pipelineruns_finished_total", map[string]string{"result": "Succeeded"}, 1},
		{"conveyor_jobs_created_total", nil, 6},
		{"conveyor_stage_duration_seconds", map[string]string{"stage": "testing", "result": "Succeeded"}, 1},
		{"conveyor_stage_duration_seconds", map[string]string{"stage": "production", "result": "Succeeded"}, 1},
		{"conveyor_approval_wait_seconds", map[string]string{"stage": "approve"}, 1},
		{"conveyor_approval_wait_seconds", map[string]string{"stage": "staging"}, 1},
	}
	before := make([]float64, len(probes))
	for i, p := range probes {
		before[i] = sample(t, p.name, p.labels)
	}
	run := newRun(t, ns, v140)
	toApproveGate(t, run)
	throughProduction(t, run)
	for i, p := range probes {
		if got := sample(t, p.name, p.labels) - before[i]; got != p.delta {
			t.Errorf("%s%v moved by %v, want %v", p.name, p.labels, got, p.delta)
		}
	}
}
