// Package gitstatus reports each stage of a run on its commit at the git
// provider: GitLab's commit status API and GitHub's commit statuses. Reports
// go through a bounded queue with retries; a provider that is down, slow or
// failing never fails or holds a run, and what was not reported is counted.
package gitstatus

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/notify"
	"github.com/conveyor-dev/conveyor/controllers/outbound"
)

// Options configure a Reporter.
type Options struct {
	// Secrets reads the token Secrets (the manager's API reader: Secrets
	// are not cached).
	Secrets client.Reader
	// Guard checks the Pipeline's apiURL before the token is read, and
	// every connection: the token goes only where the cluster allows.
	Guard *outbound.Guard
	notify.Delivery
}

// Reporter reports stages on commits. Nil reports nothing.
type Reporter struct {
	opts  Options
	queue chan Status
	http  *http.Client
}

// Status is one report: a stage's state on a commit.
type Status struct {
	Config    conveyorv1.CommitStatusReport
	Namespace string
	Commit    string
	// Context names the status on the commit: conveyor/<pipeline>/<stage>.
	Context string
	// State is the generic state: pending, running, success, failed, canceled.
	State       string
	Description string
	TargetURL   string
}

// New makes a Reporter; Start sends.
func New(opts Options) *Reporter {
	opts.Delivery = opts.Delivery.WithDefaults()
	return &Reporter{opts: opts, queue: make(chan Status, opts.QueueSize), http: opts.Guard.Client(opts.Timeout)}
}

// states maps a stage's phase to the generic state reported.
var states = map[conveyorv1.StagePhase]string{
	conveyorv1.StageRunning: "running", conveyorv1.StageWaiting: "pending", conveyorv1.StageQueued: "pending",
	conveyorv1.StageFrozen: "pending", conveyorv1.StageBlocked: "pending", conveyorv1.StageSucceeded: "success",
	conveyorv1.StageFailed: "failed", conveyorv1.StageExpired: "failed", conveyorv1.StageRejected: "failed",
	conveyorv1.StageCancelled: "canceled",
}

// FromTransition is the report of a stage's change, for a run whose
// Pipeline reports commit statuses and that names a commit; false otherwise.
func FromTransition(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus, t engine.Transition) (Status, bool) {
	if t.Kind != engine.StageChanged || st.PipelineSpec == nil || st.PipelineSpec.Source == nil ||
		st.PipelineSpec.Source.CommitStatus == nil || run.Spec.Git.Commit == "" {
		return Status{}, false
	}
	state, ok := states[t.Next.Phase]
	if !ok {
		return Status{}, false
	}
	cfg := *st.PipelineSpec.Source.CommitStatus
	s := Status{Config: cfg, Namespace: run.Namespace, Commit: run.Spec.Git.Commit,
		Context: "conveyor/" + run.Spec.PipelineRef.Name + "/" + t.Next.Name, State: state, Description: t.Next.Message}
	if cfg.TargetURL != "" {
		s.TargetURL = cfg.TargetURL + run.Namespace + "/" + run.Name
	}
	return s, true
}

// Enqueue queues a report without waiting; a full queue drops it, counted.
func (r *Reporter) Enqueue(s Status) {
	if r == nil {
		return
	}
	select {
	case r.queue <- s:
	default:
		reports.WithLabelValues(s.Config.Provider, "dropped").Inc()
		r.opts.Log.Info("Commit status queue full: report dropped", "commit", s.Commit, "context", s.Context)
	}
}

// Start sends queued reports until ctx ends (a manager.Runnable).
func (r *Reporter) Start(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-r.queue:
			r.send(ctx, s)
		}
	}
}

// NeedLeaderElection: reports come from the reconcilers, which run on the leader.
func (r *Reporter) NeedLeaderElection() bool { return true }

func (r *Reporter) send(ctx context.Context, s Status) {
	err := r.opts.Guard.CheckURL(s.Config.APIURL)
	var token string
	if err == nil {
		token, err = r.token(ctx, s)
	}
	if err == nil {
		err = r.opts.Retry(ctx, func() (bool, error) { return r.post(ctx, s, token) },
			func() { retries.WithLabelValues(s.Config.Provider).Inc() })
	}
	if err == nil {
		reports.WithLabelValues(s.Config.Provider, "reported").Inc()
		return
	}
	if ctx.Err() != nil {
		return
	}
	reports.WithLabelValues(s.Config.Provider, "failed").Inc()
	r.opts.Log.Info("Commit status not reported", "provider", s.Config.Provider, "project", s.Config.Project, "commit", s.Commit, "context", s.Context, "error", err.Error())
}

// token reads the API token from the Secret the Pipeline names.
func (r *Reporter) token(ctx context.Context, s Status) (string, error) {
	token, err := notify.SecretValue(ctx, r.opts.Secrets, s.Namespace, s.Config.TokenRef, "token")
	if err != nil {
		return "", fmt.Errorf("the token: %w", err)
	}
	return token, nil
}

// post sends one report as the provider documents it; retry on no answer,
// 5xx, 408 and 429.
func (r *Reporter) post(ctx context.Context, s Status, token string) (bool, error) {
	req, err := Request(ctx, s, token)
	if err != nil {
		return false, err
	}
	return notify.Do(r.http, req, s.Config.Provider)
}

// Request is the HTTP request that reports s: GitLab's
// POST /projects/:id/statuses/:sha with PRIVATE-TOKEN, or GitHub's
// POST /repos/:owner/:repo/statuses/:sha with a bearer token.
func Request(ctx context.Context, s Status, token string) (*http.Request, error) {
	api := strings.TrimRight(s.Config.APIURL, "/")
	var endpoint string
	var body map[string]string
	switch s.Config.Provider {
	case "GitLab":
		endpoint = api + "/projects/" + url.PathEscape(s.Config.Project) + "/statuses/" + url.PathEscape(s.Commit)
		body = map[string]string{"state": s.State, "name": s.Context, "description": cut(s.Description, 255)}
	case "GitHub":
		endpoint = api + "/repos/" + s.Config.Project + "/statuses/" + url.PathEscape(s.Commit)
		state := map[string]string{"running": "pending", "failed": "failure", "canceled": "error"}[s.State]
		if state == "" {
			state = s.State
		}
		body = map[string]string{"state": state, "context": s.Context, "description": cut(s.Description, 140)}
	default:
		return nil, fmt.Errorf("provider %q: want GitLab or GitHub", s.Config.Provider)
	}
	if s.TargetURL != "" {
		body["target_url"] = s.TargetURL
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.Config.Provider == "GitLab" {
		req.Header.Set("PRIVATE-TOKEN", token)
	} else {
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Accept", "application/vnd.github+json")
		req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	}
	return req, nil
}

// cut shortens s to n runes, as the providers limit descriptions.
func cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

var (
	reports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_commit_status_reports_total",
		Help: "Commit statuses reported to the git provider, by provider and result: reported, failed (after every attempt), dropped (queue full).",
	}, []string{"provider", "result"})
	retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_commit_status_retries_total",
		Help: "Commit status reports tried again (no answer, 5xx, 408, 429).",
	}, []string{"provider"})
)

func init() { metrics.Registry.MustRegister(reports, retries) }
