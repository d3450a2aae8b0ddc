package integration_test

import (
	"context"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql"
	"github.com/prometheus/prometheus/util/teststorage"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
)

// prometheusStore is what a Prometheus server scraping the manager would
// hold: each scrape appends every conveyor_ sample of the manager's registry
// (histograms as their _bucket, _sum and _count series) at the scrape's
// time, one minute after the one before. Queries run on Prometheus's own
// PromQL engine.
type prometheusStore struct {
	t      *testing.T
	st     *teststorage.TestStorage
	engine *promql.Engine
	now    time.Time
}

func newPrometheusStore(t *testing.T) *prometheusStore {
	return &prometheusStore{t: t, st: teststorage.New(t), now: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC),
		engine: promql.NewEngine(promql.EngineOpts{MaxSamples: 1_000_000, Timeout: time.Minute})}
}

// scrape appends the registry's samples, a minute after the last scrape.
func (p *prometheusStore) scrape() {
	p.t.Helper()
	p.now = p.now.Add(time.Minute)
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		p.t.Fatal(err)
	}
	app := p.st.Appender(context.Background())
	ts := p.now.UnixMilli()
	add := func(name string, m *dto.Metric, extra map[string]string, v float64) {
		b := labels.NewBuilder(labels.EmptyLabels()).Set(labels.MetricName, name)
		for _, l := range m.GetLabel() {
			b.Set(l.GetName(), l.GetValue())
		}
		for k, v := range extra {
			b.Set(k, v)
		}
		if _, err := app.Append(0, b.Labels(), ts, v); err != nil {
			p.t.Fatalf("appending %s: %v", name, err)
		}
	}
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "conveyor_") {
			continue
		}
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_COUNTER:
				add(name, m, nil, m.GetCounter().GetValue())
			case dto.MetricType_GAUGE:
				add(name, m, nil, m.GetGauge().GetValue())
			case dto.MetricType_HISTOGRAM:
				h := m.GetHistogram()
				for _, bucket := range h.GetBucket() {
					add(name+"_bucket", m, map[string]string{"le": strconv.FormatFloat(bucket.GetUpperBound(), 'f', -1, 64)}, float64(bucket.GetCumulativeCount()))
				}
				add(name+"_bucket", m, map[string]string{"le": "+Inf"}, float64(h.GetSampleCount()))
				add(name+"_sum", m, nil, h.GetSampleSum())
				add(name+"_count", m, nil, float64(h.GetSampleCount()))
			}
		}
	}
	if err := app.Commit(); err != nil {
		p.t.Fatal(err)
	}
}

// query runs expr at the last scrape's time.
func (p *prometheusStore) query(expr string) promql.Vector {
	p.t.Helper()
	q, err := p.engine.NewInstantQuery(context.Background(), p.st, nil, expr, p.now)
	if err != nil {
		p.t.Fatalf("PromQL %q: %v", expr, err)
	}
	res := q.Exec(context.Background())
	if res.Err != nil {
		p.t.Fatalf("PromQL %q: %v", expr, res.Err)
	}
	v, err := res.Vector()
	if err != nil {
		p.t.Fatalf("PromQL %q: %v", expr, err)
	}
	return v
}

// docQuery is a PromQL query of the docs, with the comment above it.
type docQuery struct{ comment, expr string }

// docQueries are the queries in the file's ```promql blocks: each starts
// after a "# comment" line and runs on its indented continuation lines.
func docQueries(t *testing.T, file string) []docQuery {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []docQuery
	for _, block := range regexp.MustCompile("(?s)```promql\n(.*?)```").FindAllStringSubmatch(string(data), -1) {
		comment := ""
		for _, line := range strings.Split(block[1], "\n") {
			switch {
			case strings.TrimSpace(line) == "":
			case strings.HasPrefix(line, "#"):
				comment = strings.TrimSpace(strings.TrimPrefix(line, "#"))
			case strings.HasPrefix(line, " ") && len(out) > 0:
				out[len(out)-1].expr += " " + strings.TrimSpace(line)
			default:
				out = append(out, docQuery{comment: comment, expr: line})
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no PromQL in %s", file)
	}
	return out
}

// one is the value of the vector's single sample labelled environment=env.
func one(t *testing.T, v promql.Vector, env string) float64 {
	t.Helper()
	for _, s := range v {
		if s.Metric.Get("environment") == env {
			return s.F
		}
	}
	t.Fatalf("no sample for environment %s in %v", env, v)
	return math.NaN()
}
