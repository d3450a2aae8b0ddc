package receiver_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/controllers/receiver"
)

var (
	cfg    *rest.Config
	k8s    client.Client
	cached client.Client
	server *httptest.Server
)

func TestMain(m *testing.M) { os.Exit(runSuite(m)) }

// runSuite starts kube-apiserver with the CRDs and the receiver on a cached
// client, as the manager runs it.
func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with 'make test'")
		return 1
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr)))
	env := &envtest.Environment{CRDDirectoryPaths: []string{"../../config/crd/bases"}, ErrorIfCRDPathMissing: true}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if k8s, err = client.New(cfg, client.Options{Scheme: manager.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	mgr, err := ctrl.NewManager(cfg, manager.Options(manager.Config{MetricsAddr: "0", ProbeAddr: "0"}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := receiver.Setup(ctx, mgr, "0"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return 1
	}
	cached = mgr.GetClient()
	server = httptest.NewServer(&receiver.Receiver{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Log: ctrl.Log.WithName("receiver")})
	defer server.Close()
	return m.Run()
}

const secret = "s3cr3t-token"

// pipeline creates, in a new namespace, a Pipeline for acme/shop (as named
// by repo) with its webhook secret, and waits until the receiver's cache has it.
func pipeline(t *testing.T, repo, token string) *conveyorv1.Pipeline {
	t.Helper()
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "hooks-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "shop-webhook", Namespace: ns.Name},
		Data: map[string][]byte{"token": []byte(token)}}); err != nil {
		t.Fatal(err)
	}
	p := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns.Name}, Spec: conveyorv1.PipelineSpec{
		Refs:   conveyorv1.PipelineRefs{Branches: []string{"feature_*"}, Tags: []string{"v*"}},
		Source: &conveyorv1.PipelineSource{Repository: repo, SecretRef: conveyorv1.SecretKeyReference{Name: "shop-webhook"}},
		Stages: []conveyorv1.Stage{{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "compile", Image: "golang:1.26"}}}},
	}}
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(ctx, p) })
	// The receiver reads Pipelines from its cache: wait until the cache has this one.
	NewWithT(t).Eventually(func() error {
		return cached.Get(ctx, client.ObjectKeyFromObject(p), &conveyorv1.Pipeline{})
	}).WithTimeout(10 * time.Second).Should(Succeed())
	return p
}

// post sends a provider's event; sign adds the secret the provider's way.
func post(t *testing.T, provider, file, event string, sign func(*http.Request, []byte)) (int, receiver.Response) {
	t.Helper()
	body, err := os.ReadFile("testdata/" + file)
	if err != nil {
		t.Fatal(err)
	}
	return postBody(t, provider, body, event, sign)
}

func postBody(t *testing.T, provider string, body []byte, event string, sign func(*http.Request, []byte)) (int, receiver.Response) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, server.URL+"/hooks/"+provider, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if provider == "gitlab" {
		req.Header.Set("X-Gitlab-Event", event)
		req.Header.Set("X-Gitlab-Event-UUID", "7b6f3c4e-delivery")
	} else {
		req.Header.Set("X-GitHub-Event", event)
		req.Header.Set("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
	}
	if sign != nil {
		sign(req, body)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res receiver.Response
	_ = json.NewDecoder(resp.Body).Decode(&res)
	t.Logf("%s %s: %d %+v", provider, event, resp.StatusCode, res)
	return resp.StatusCode, res
}

func gitlabToken(token string) func(*http.Request, []byte) {
	return func(r *http.Request, _ []byte) { r.Header.Set("X-Gitlab-Token", token) }
}

func githubSignature(key string) func(*http.Request, []byte) {
	return func(r *http.Request, body []byte) {
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write(body)
		r.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	}
}

func runsIn(t *testing.T, ns string) []conveyorv1.PipelineRun {
	t.Helper()
	list := &conveyorv1.PipelineRunList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// A signed GitLab branch push creates exactly one run for the right Pipeline
// and ref, even when delivered twice.
func TestGitLabPushCreatesOneRun(t *testing.T) {
	p := pipeline(t, "acme/shop", secret)
	for i := 0; i < 2; i++ {
		code, res := post(t, "gitlab", "gitlab-push.json", "Push Hook", gitlabToken(secret))
		if code != http.StatusAccepted || len(res.Runs) != 1 {
			t.Fatalf("delivery %d: %d %+v", i+1, code, res)
		}
	}
	runs := runsIn(t, p.Namespace)
	if len(runs) != 1 {
		t.Fatalf("%d runs after two deliveries, want 1", len(runs))
	}
	run := runs[0]
	if run.Spec.Git.Branch != "feature_login" || run.Spec.Git.Commit != "da1560886d4f094c3e6c9ef40349f7d38b5d27d7" || run.Spec.PipelineRef.Name != "shop" {
		t.Fatalf("run spec %+v", run.Spec)
	}
	if run.Spec.Trigger == nil || run.Spec.Trigger.Pusher != "dana" || run.Spec.Trigger.Provider != "gitlab" {
		t.Fatalf("run trigger %+v", run.Spec.Trigger)
	}
	if ct := run.Spec.Trigger.CommitTime; ct == nil || !ct.Time.Equal(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("the run's commit time %v, want the pushed commit's timestamp", ct)
	}
}

func TestGitLabTagPush(t *testing.T) {
	p := pipeline(t, "https://gitlab.example.com/acme/shop", secret)
	code, _ := post(t, "gitlab", "gitlab-tag-push.json", "Tag Push Hook", gitlabToken(secret))
	runs := runsIn(t, p.Namespace)
	if code != http.StatusAccepted || len(runs) != 1 || runs[0].Spec.Git.Tag != "v1.4.0" {
		t.Fatalf("%d, runs %+v", code, runs)
	}
}

func TestGitHubPushAndTag(t *testing.T) {
	p := pipeline(t, "acme/shop", secret)
	for _, tc := range []struct{ file, branch, tag string }{
		{"github-push.json", "feature_login", ""},
		{"github-tag-push.json", "", "v1.4.0"},
	} {
		code, res := post(t, "github", tc.file, "push", githubSignature(secret))
		if code != http.StatusAccepted || len(res.Runs) != 1 {
			t.Fatalf("%s: %d %+v", tc.file, code, res)
		}
		run := &conveyorv1.PipelineRun{}
		name := strings.TrimPrefix(res.Runs[0], p.Namespace+"/")
		if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: p.Namespace, Name: name}, run); err != nil {
			t.Fatal(err)
		}
		if run.Spec.Git.Branch != tc.branch || run.Spec.Git.Tag != tc.tag || run.Spec.Trigger.Pusher == "" {
			t.Fatalf("%s: run spec %+v", tc.file, run.Spec)
		}
		// The branch push's head_commit gives its timestamp; the tag push's does not.
		ct := run.Spec.Trigger.CommitTime
		if tc.branch != "" && (ct == nil || !ct.Time.Equal(time.Date(2026, 11, 26, 20, 0, 0, 0, time.UTC))) || tc.tag != "" && ct != nil {
			t.Errorf("%s: commit time %v", tc.file, ct)
		}
	}
	if n := len(runsIn(t, p.Namespace)); n != 2 {
		t.Fatalf("%d runs, want 2", n)
	}
}

// Events without the right secret are refused with 401 and change nothing.
func TestWrongOrMissingSecret(t *testing.T) {
	p := pipeline(t, "acme/shop", secret)
	for _, tc := range []struct {
		provider, file, event string
		sign                  func(*http.Request, []byte)
	}{
		{"gitlab", "gitlab-push.json", "Push Hook", gitlabToken("wrong")},
		{"gitlab", "gitlab-push.json", "Push Hook", nil},
		{"github", "github-push.json", "push", githubSignature("wrong")},
		{"github", "github-push.json", "push", nil},
		{"github", "github-push.json", "push", func(r *http.Request, _ []byte) { r.Header.Set("X-Hub-Signature-256", "sha256=00") }},
	} {
		if code, _ := post(t, tc.provider, tc.file, tc.event, tc.sign); code != http.StatusUnauthorized {
			t.Fatalf("%s %s: %d, want 401", tc.provider, tc.file, code)
		}
	}
	if n := len(runsIn(t, p.Namespace)); n != 0 {
		t.Fatalf("%d runs after refused events", n)
	}
}

// Branch deletions and refs outside the Pipeline's patterns create nothing.
func TestDeletionsAndOtherRefsIgnored(t *testing.T) {
	p := pipeline(t, "acme/shop", secret)
	if code, res := post(t, "gitlab", "gitlab-branch-delete.json", "Push Hook", gitlabToken(secret)); code != http.StatusAccepted || len(res.Runs) != 0 {
		t.Fatalf("gitlab delete: %d %+v", code, res)
	}
	if code, res := post(t, "github", "github-branch-delete.json", "push", githubSignature(secret)); code != http.StatusAccepted || len(res.Runs) != 0 {
		t.Fatalf("github delete: %d %+v", code, res)
	}
	body, _ := os.ReadFile("testdata/gitlab-push.json")
	body = bytes.ReplaceAll(body, []byte("refs/heads/feature_login"), []byte("refs/heads/hotfix_x"))
	code, res := postBody(t, "gitlab", body, "Push Hook", gitlabToken(secret))
	if code != http.StatusAccepted || len(res.Runs) != 0 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "feature_*") {
		t.Fatalf("hotfix push: %d %+v", code, res)
	}
	if n := len(runsIn(t, p.Namespace)); n != 0 {
		t.Fatalf("%d runs", n)
	}
}

// Only the Pipeline whose secret the event carries gets a run.
func TestSecretSelectsPipeline(t *testing.T) {
	mine := pipeline(t, "acme/shop", secret)
	theirs := pipeline(t, "acme/shop", "another-secret")
	if code, _ := post(t, "gitlab", "gitlab-push.json", "Push Hook", gitlabToken(secret)); code != http.StatusAccepted {
		t.Fatalf("status %d", code)
	}
	if len(runsIn(t, mine.Namespace)) != 1 || len(runsIn(t, theirs.Namespace)) != 0 {
		t.Fatal("the run went to the wrong Pipeline")
	}
}

// Bad input gets a clear 4xx.
func TestBadInput(t *testing.T) {
	pipeline(t, "acme/shop", secret)
	g := NewWithT(t)
	code, res := postBody(t, "gitlab", []byte(`{"object_kind": "push", "ref": `), "Push Hook", gitlabToken(secret))
	g.Expect(code).To(Equal(http.StatusBadRequest))
	g.Expect(res.Message).To(ContainSubstring("malformed"))
	code, _ = postBody(t, "github", bytes.Repeat([]byte("x"), receiver.MaxBody+1), "push", nil)
	g.Expect(code).To(Equal(http.StatusRequestEntityTooLarge))
	code, res = post(t, "github", "github-push.json", "issues", githubSignature(secret))
	g.Expect(code).To(Equal(http.StatusBadRequest))
	g.Expect(res.Message).To(ContainSubstring("unsupported event"))
	code, _ = post(t, "bitbucket", "github-push.json", "push", nil)
	g.Expect(code).To(Equal(http.StatusNotFound))
	resp, err := http.Get(server.URL + "/hooks/github")
	g.Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	g.Expect(resp.StatusCode).To(Equal(http.StatusMethodNotAllowed))
}

func TestRunName(t *testing.T) {
	a := receiver.RunName("shop", conveyorv1.GitRef{Branch: "feature/Login_Page", Commit: "abc"})
	b := receiver.RunName("shop", conveyorv1.GitRef{Branch: "feature/Login_Page", Commit: "abd"})
	long := receiver.RunName(strings.Repeat("p", 60), conveyorv1.GitRef{Tag: "v1.4.0", Commit: "abc"})
	if a == b || !strings.HasPrefix(a, "shop-feature-login-page-") || len(long) > 52 {
		t.Fatalf("names %q %q %q", a, b, long)
	}
}

// The receiver fills the parameters it knows (pusher, repository) of a
// Pipeline that declares them; a required parameter it does not know skips
// the push with the API server's message.
func TestPushFillsKnownParams(t *testing.T) {
	p := pipeline(t, "acme/shop", secret)
	p.Spec.Params = []conveyorv1.ParamSpec{{Name: receiver.ParamPusher}, {Name: receiver.ParamRepository}, {Name: "region", Default: ptr.To("eu-west-1")}}
	updatePipeline(t, p)
	code, res := post(t, "gitlab", "gitlab-push.json", "Push Hook", gitlabToken(secret))
	if code != http.StatusAccepted || len(res.Runs) != 1 {
		t.Fatalf("push: %d %+v", code, res)
	}
	run := runsIn(t, p.Namespace)[0]
	want := []conveyorv1.Param{{Name: "pusher", Value: "dana"}, {Name: "repository", Value: "https://gitlab.example.com/acme/shop.git"}}
	if len(run.Spec.Params) != 2 || run.Spec.Params[0] != want[0] || run.Spec.Params[1] != want[1] {
		t.Fatalf("the pushed run's params %+v, want %+v", run.Spec.Params, want)
	}

	p.Spec.Params = append(p.Spec.Params, conveyorv1.ParamSpec{Name: "ticket"})
	updatePipeline(t, p)
	code, res = post(t, "github", "github-push.json", "push", githubSignature(secret))
	if len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0], "parameter ticket has no default") {
		t.Fatalf("a push to a Pipeline with a parameter the receiver cannot fill: %d %+v", code, res)
	}
}

// updatePipeline writes the Pipeline's spec and waits until the receiver's
// cache holds it.
func updatePipeline(t *testing.T, p *conveyorv1.Pipeline) {
	t.Helper()
	if err := k8s.Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		got := &conveyorv1.Pipeline{}
		g.Expect(cached.Get(context.Background(), client.ObjectKeyFromObject(p), got)).To(Succeed())
		g.Expect(got.Generation).To(Equal(p.Generation))
	}).WithTimeout(10 * time.Second).Should(Succeed())
}
