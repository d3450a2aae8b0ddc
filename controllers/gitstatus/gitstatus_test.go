package gitstatus

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/notify"
	"github.com/conveyor-dev/conveyor/controllers/outbound"
)

// provider is a fake git provider: a real HTTP server that keeps the
// requests it got and answers as told.
type provider struct {
	mu     sync.Mutex
	reqs   []*http.Request
	bodies []map[string]string
	answer func(n int) int
	srv    *httptest.Server
}

func newProvider(t *testing.T, answer func(int) int) *provider {
	p := &provider{answer: answer}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		var b map[string]string
		_ = json.Unmarshal(data, &b)
		p.mu.Lock()
		p.reqs, p.bodies = append(p.reqs, r), append(p.bodies, b)
		n := len(p.reqs)
		p.mu.Unlock()
		w.WriteHeader(p.answer(n))
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *provider) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.reqs)
}

func created(int) int { return http.StatusCreated }

func run(provider, api, project string) (*conveyorv1.PipelineRun, *conveyorv1.PipelineRunStatus) {
	r := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "shop-ci", Name: "shop-tag-v1-4-0-x7k2p"},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: conveyorv1.GitRef{Tag: "v1.4.0", Commit: "3f2a9c1d"}}}
	st := &conveyorv1.PipelineRunStatus{PipelineSpec: &conveyorv1.PipelineSpec{Source: &conveyorv1.PipelineSource{Repository: project,
		CommitStatus: &conveyorv1.CommitStatusReport{Provider: provider, APIURL: api, Project: project,
			TokenRef: conveyorv1.SecretKeyReference{Name: "git-token"}, TargetURL: "https://conveyor.example.com/runs/"}}}}
	return r, st
}

func stage(name string, phase conveyorv1.StagePhase, msg string) engine.Transition {
	return engine.Transition{Key: name + "/" + string(phase), Kind: engine.StageChanged, Next: conveyorv1.StageStatus{Name: name, Phase: phase, Message: msg}}
}

func start(t *testing.T, opts Options) *Reporter {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = corev1.AddToScheme(scheme)
	if opts.Secrets == nil {
		opts.Secrets = fake.NewClientBuilder().WithScheme(scheme).WithObjects(&corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: "shop-ci", Name: "git-token"}, Data: map[string][]byte{"token": []byte("glpat-123\n")}}).Build()
	}
	if opts.Guard == nil {
		// The fake providers listen on loopback, which only an allowlist naming it lets through.
		opts.Guard, _ = outbound.Parse([]string{"127.0.0.0/8"})
	}
	opts.Delivery.Log = logr.Discard()
	r := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = r.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTokenGoesOnlyWhereAllowed: an apiURL outside the outbound allowlist,
// or at an address always refused (loopback here, as the cloud metadata
// address would be), never gets the token: the report fails, counted.
func TestTokenGoesOnlyWhereAllowed(t *testing.T) {
	gl := newProvider(t, created)
	for i, entries := range [][]string{{"gitlab.example.com"}, nil} {
		guard, err := outbound.Parse(entries)
		if err != nil {
			t.Fatal(err)
		}
		before := testutil.ToFloat64(reports.WithLabelValues("GitLab", "failed"))
		r := start(t, Options{Guard: guard})
		rn, st := run("GitLab", gl.srv.URL+"/api/v4/", "acme/shop")
		s, _ := FromTransition(rn, st, stage("build", conveyorv1.StageRunning, "running"))
		r.Enqueue(s)
		waitFor(t, "the refusal", func() bool { return testutil.ToFloat64(reports.WithLabelValues("GitLab", "failed")) == before+1 })
		if gl.count() != 0 {
			t.Fatalf("case %d: the provider at %s got %d requests through a guard that refuses it", i, gl.srv.URL, gl.count())
		}
	}
}

// TestGitLab: GitLab's commit status API, as documented: POST
// /projects/:id/statuses/:sha (the path URL-encoded), PRIVATE-TOKEN, state
// running/success/failed/canceled, name, target_url, description.
func TestGitLab(t *testing.T) {
	gl := newProvider(t, created)
	r := start(t, Options{})
	rn, st := run("GitLab", gl.srv.URL+"/api/v4/", "acme/shop")
	for _, tr := range []engine.Transition{stage("build", conveyorv1.StageRunning, "running jobs compile"),
		stage("build", conveyorv1.StageSucceeded, "1 job(s) succeeded"), stage("approve", conveyorv1.StageRejected, "refused by rob")} {
		s, ok := FromTransition(rn, st, tr)
		if !ok {
			t.Fatalf("%s not reported", tr.Key)
		}
		r.Enqueue(s)
	}
	waitFor(t, "three reports", func() bool { return gl.count() == 3 })
	req := gl.reqs[0]
	if req.Method != http.MethodPost || req.URL.EscapedPath() != "/api/v4/projects/acme%2Fshop/statuses/3f2a9c1d" {
		t.Errorf("request %s %s", req.Method, req.URL.EscapedPath())
	}
	if req.Header.Get("PRIVATE-TOKEN") != "glpat-123" || req.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", req.Header)
	}
	want := []map[string]string{
		{"state": "running", "name": "conveyor/shop/build", "description": "running jobs compile", "target_url": "https://conveyor.example.com/runs/shop-ci/shop-tag-v1-4-0-x7k2p"},
		{"state": "success", "name": "conveyor/shop/build", "description": "1 job(s) succeeded", "target_url": "https://conveyor.example.com/runs/shop-ci/shop-tag-v1-4-0-x7k2p"},
		{"state": "failed", "name": "conveyor/shop/approve", "description": "refused by rob", "target_url": "https://conveyor.example.com/runs/shop-ci/shop-tag-v1-4-0-x7k2p"},
	}
	for i, w := range want {
		for k, v := range w {
			if gl.bodies[i][k] != v {
				t.Errorf("report %d: %s = %q, want %q", i+1, k, gl.bodies[i][k], v)
			}
		}
	}
}

// TestGitHub: GitHub's statuses API, as documented: POST
// /repos/:owner/:repo/statuses/:sha, a bearer token, the API version and
// media type headers, state pending/success/failure/error, context,
// description (at most 140 characters).
func TestGitHub(t *testing.T) {
	gh := newProvider(t, created)
	r := start(t, Options{})
	rn, st := run("GitHub", gh.srv.URL, "acme/shop")
	long := "waits for 1 approval from release-engineers (not rita, who requested the run); " +
		"the release notes are in the merge request; the customer demo is on Thursday"
	for _, tr := range []engine.Transition{stage("approve", conveyorv1.StageWaiting, long), stage("production", conveyorv1.StageRunning, ""),
		stage("production", conveyorv1.StageFailed, "job deploy failed"), stage("production", conveyorv1.StageCancelled, "")} {
		s, _ := FromTransition(rn, st, tr)
		r.Enqueue(s)
	}
	waitFor(t, "four reports", func() bool { return gh.count() == 4 })
	req := gh.reqs[0]
	if req.URL.Path != "/repos/acme/shop/statuses/3f2a9c1d" || req.Header.Get("Authorization") != "Bearer glpat-123" ||
		req.Header.Get("Accept") != "application/vnd.github+json" || req.Header.Get("X-GitHub-Api-Version") != "2022-11-28" {
		t.Errorf("request %s %v", req.URL.Path, req.Header)
	}
	for i, w := range []string{"pending", "pending", "failure", "error"} {
		if gh.bodies[i]["state"] != w || gh.bodies[i]["context"] != "conveyor/shop/"+map[bool]string{true: "approve", false: "production"}[i == 0] {
			t.Errorf("report %d: %v, want state %s", i+1, gh.bodies[i], w)
		}
	}
	if d := []rune(gh.bodies[0]["description"]); len(d) != 140 {
		t.Errorf("a long description is %d characters, want 140", len(d))
	}
}

// TestProviderDownOrFailing: 500s are retried until they pass; a provider
// that is down fails after every attempt; a missing token fails at once; all
// counted, none blocking.
func TestProviderDownOrFailing(t *testing.T) {
	flaky := newProvider(t, func(n int) int {
		if n < 3 {
			return http.StatusInternalServerError
		}
		return http.StatusCreated
	})
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()
	r := start(t, Options{Delivery: notify.Delivery{Attempts: 3, Backoff: 10 * time.Millisecond}})
	rn, st := run("GitLab", flaky.srv.URL, "42")
	s, _ := FromTransition(rn, st, stage("build", conveyorv1.StageRunning, ""))
	before := testutil.ToFloat64(reports.WithLabelValues("GitLab", "reported"))
	failedBefore := testutil.ToFloat64(reports.WithLabelValues("GitLab", "failed"))
	r.Enqueue(s)
	waitFor(t, "the third attempt", func() bool { return testutil.ToFloat64(reports.WithLabelValues("GitLab", "reported")) == before+1 })
	if flaky.count() != 3 {
		t.Errorf("%d attempts at a provider failing twice", flaky.count())
	}
	s.Config.APIURL = downURL
	r.Enqueue(s)
	s.Config.TokenRef.Name = "missing"
	r.Enqueue(s)
	waitFor(t, "two failures", func() bool { return testutil.ToFloat64(reports.WithLabelValues("GitLab", "failed")) == failedBefore+2 })
}

func TestNotReported(t *testing.T) {
	rn, st := run("GitLab", "https://gitlab.example.com/api/v4", "acme/shop")
	if _, ok := FromTransition(rn, st, stage("build", conveyorv1.StagePending, "")); ok {
		t.Error("a Pending stage is reported")
	}
	if _, ok := FromTransition(rn, st, engine.Transition{Key: "run/started", Kind: engine.RunStarted}); ok {
		t.Error("a run's start is reported as a stage")
	}
	st.PipelineSpec.Source.CommitStatus = nil
	if _, ok := FromTransition(rn, st, stage("build", conveyorv1.StageRunning, "")); ok {
		t.Error("a Pipeline without commitStatus reports")
	}
}
