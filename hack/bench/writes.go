package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// writes are API server write counts by what they wrote.
type writes struct {
	jobCreates, runStatus, runMeta, events, approvalStatus, locks, releases, other float64
}

// manager is every write the manager makes: a restart that writes again
// for finished runs (a status, an Event told twice, a lock or record, the
// ledger) shows in it.
func (w writes) manager() float64 {
	return w.runStatus + w.runMeta + w.approvalStatus + w.jobCreates + w.events + w.locks + w.releases
}

// String names the kinds written, with their counts ("none" for none).
func (w writes) String() string {
	var out []string
	for _, k := range []struct {
		name string
		n    float64
	}{{"Job creates", w.jobCreates}, {"run status", w.runStatus}, {"run metadata", w.runMeta}, {"Events", w.events},
		{"Approval status", w.approvalStatus}, {"Environments", w.locks}, {"Releases", w.releases}} {
		if k.n != 0 {
			out = append(out, fmt.Sprintf("%s %.0f", k.name, k.n))
		}
	}
	if len(out) == 0 {
		return "none"
	}
	return strings.Join(out, ", ")
}

func (w writes) sub(o writes) writes {
	return writes{w.jobCreates - o.jobCreates, w.runStatus - o.runStatus, w.runMeta - o.runMeta, w.events - o.events, w.approvalStatus - o.approvalStatus, w.locks - o.locks, w.releases - o.releases, w.other - o.other}
}

// apiWrites reads apiserver_request_total from the API server: the writes the
// manager makes are the only ones to these resources (the driver writes Job
// status, Approvals and runs, counted apart).
func (b *bench) apiWrites(ctx context.Context) (writes, error) {
	var w writes
	return w, b.eachRequestSample(ctx, func(labels map[string]string, value float64) {
		verb, res, sub := labels["verb"], labels["resource"], labels["subresource"]
		if !isWrite(verb + " " + res) {
			return
		}
		switch {
		case res == "jobs" && sub == "" && verb == "POST":
			w.jobCreates += value
		case res == "pipelineruns" && sub == "status" && verb == "PATCH":
			w.runStatus += value
		case res == "pipelineruns" && sub == "" && verb == "PATCH":
			w.runMeta += value
		case res == "events":
			w.events += value
		case res == "approvals" && sub == "status":
			w.approvalStatus += value
		case res == "environments" && sub == "status":
			// Environment locks and deploy records (one status since
			// 2026-12-03 night), and the Environment reconciler's writes
			// (none while the policy and freeze windows stay as they are).
			w.locks += value
		case res == "releases":
			// The release ledger: a tag's Release created, and updated at
			// each of its runs' decisions and deploys.
			w.releases += value
		default:
			// Not the manager's, Leases among them: Environment locks were
			// Leases until 2026-12-03 night and leader election is off here;
			// what comes, at one every 10 s, is the API server renewing its
			// own identity Lease.
			w.other += value
		}
	})
}

// metricsText reads a Prometheus text endpoint.
func metricsText(url string) (string, error) {
	resp, err := http.Get(url) //nolint:gosec // the manager's local metrics endpoint
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(out), nil
}

// managerCounts are the manager's reconciles so far, by controller
// (controller_runtime_reconcile_total, every result), and the admission
// requests its webhook server handled and the seconds they took, by path
// (handlerKey, handlerSecondsKey); none when its metrics do not answer.
func (b *bench) managerCounts() map[string]float64 {
	out := map[string]float64{}
	text, err := metricsText(b.metrics)
	if err != nil {
		return out
	}
	for _, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "controller_runtime_reconcile_total{"):
			labels, v := parseSample(line)
			out[labels["controller"]] += v
		case strings.HasPrefix(line, "controller_runtime_webhook_latency_seconds_count{"):
			labels, v := parseSample(line)
			out[handlerKey+labels["webhook"]] += v
		case strings.HasPrefix(line, "controller_runtime_webhook_latency_seconds_sum{"):
			labels, v := parseSample(line)
			out[handlerSecondsKey+labels["webhook"]] += v
		}
	}
	return out
}

// scrape reads a Prometheus text endpoint into name -> value (unlabelled samples).
func scrape(url string) (map[string]float64, error) {
	out, err := metricsText(url)
	if err != nil {
		return nil, err
	}
	m := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		if line == "" || line[0] == '#' || strings.Contains(line, "{") {
			continue
		}
		name, v, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err == nil {
			m[name] = f
		}
	}
	return m, nil
}

// parseSample splits `name{a="b",...} value`.
func parseSample(line string) (map[string]string, float64) {
	open, end := strings.Index(line, "{"), strings.LastIndex(line, "}")
	labels := map[string]string{}
	for _, kv := range strings.Split(line[open+1:end], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if ok {
			labels[k] = strings.Trim(v, `"`)
		}
	}
	f, _ := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
	return labels, f
}
