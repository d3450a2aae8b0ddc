package integration_test

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
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/gitstatus"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/controllers/notify"
)

// TestCommitStatusOnGitLab: a Pipeline that asks for commit statuses has
// each stage of its runs reported on the commit at a (fake) GitLab, with the
// token from its Secret; a GitLab that answers 500 to everything does not
// hold the run back.
func TestCommitStatusOnGitLab(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{} // name -> states, in order
	var tokens []string
	gitlab := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]string
		data, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(data, &b)
		mu.Lock()
		got[b["name"]] = append(got[b["name"]], b["state"])
		tokens = append(tokens, r.Header.Get("PRIVATE-TOKEN")+" "+r.URL.EscapedPath())
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer gitlab.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	defer broken.Close()

	ns := newNamespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gitlab", Namespace: ns},
		Data: map[string][]byte{"token": []byte("glpat-s3cret"), "webhook": []byte("w")}}); err != nil {
		t.Fatal(err)
	}
	startManagerWith(t, func(mgr ctrl.Manager, o *manager.SetupOptions) {
		o.Reporter = gitstatus.New(gitstatus.Options{Secrets: mgr.GetAPIReader(), Guard: testGuard, Delivery: notify.Delivery{Attempts: 2, Backoff: 10 * time.Millisecond, Log: logr.Discard()}})
		if err := mgr.Add(o.Reporter); err != nil {
			t.Fatal(err)
		}
	})
	source := func(api string) *conveyorv1.PipelineSource {
		return &conveyorv1.PipelineSource{Repository: "acme/shop", SecretRef: conveyorv1.SecretKeyReference{Name: "gitlab", Key: "webhook"},
			CommitStatus: &conveyorv1.CommitStatusReport{Provider: "GitLab", APIURL: api + "/api/v4", Project: "acme/shop",
				TokenRef: conveyorv1.SecretKeyReference{Name: "gitlab"}}}
	}
	seedPipelineWith(t, ns, func(p *conveyorv1.Pipeline) { p.Spec.Source = source(gitlab.URL) })
	run := newRun(t, ns, conveyorv1.GitRef{Branch: "feature_login", Commit: "9b1e4f2a"})
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	NewWithT(t).Eventually(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		g.Expect(got["conveyor/shop/build"]).To(Equal([]string{"running", "success"}))
		g.Expect(got["conveyor/shop/testing"]).To(Equal([]string{"running", "success"}))
		g.Expect(got["conveyor/shop/staging"]).To(Equal([]string{"pending"}))
		g.Expect(tokens[0]).To(Equal("glpat-s3cret /api/v4/projects/acme%2Fshop/statuses/9b1e4f2a"))
	}).WithTimeout(10 * time.Second).Should(Succeed())

	// A GitLab that fails every report: the run goes on all the same.
	other := newNamespace(t)
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "gitlab", Namespace: other},
		Data: map[string][]byte{"token": []byte("glpat-s3cret"), "webhook": []byte("w")}}); err != nil {
		t.Fatal(err)
	}
	seedPipelineWith(t, other, func(p *conveyorv1.Pipeline) { p.Spec.Source = source(broken.URL) })
	failing := newRun(t, other, conveyorv1.GitRef{Branch: "feature_login", Commit: "9b1e4f2a"})
	passStage(t, failing, "build", "compile")
	passStage(t, failing, "testing", "unit", "lint")
	waitRun(t, failing, conveyorv1.RunWaiting, "staging")
}
