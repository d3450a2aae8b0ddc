package integration_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/receiver"
)

// pushedCommit is the commit of GitLab's tag push of v1.4.0 by the user rita
// (controllers/receiver/testdata/gitlab-tag-push.json).
const pushedCommit = "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"

// receiverFor serves the push receiver on the manager's client (as the
// manager runs it) for the seed's Pipeline in ns, which builds acme/shop and
// maps pushers as given; it returns a function that delivers the tag push.
func receiverFor(t *testing.T, ns string, pushers []conveyorv1.PusherMapping) func() receiver.Response {
	mgr, _ := startManagerWith(t)
	if err := k8s.Create(context.Background(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "shop-webhook", Namespace: ns},
		Data: map[string][]byte{"token": []byte("s3cr3t")}}); err != nil {
		t.Fatal(err)
	}
	seedPipelineWith(t, ns, func(p *conveyorv1.Pipeline) {
		p.Spec.Source = &conveyorv1.PipelineSource{Repository: "acme/shop", SecretRef: conveyorv1.SecretKeyReference{Name: "shop-webhook"}, Pushers: pushers}
	})
	server := httptest.NewServer(&receiver.Receiver{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Log: ctrl.Log.WithName("receiver")})
	t.Cleanup(server.Close)
	body, err := os.ReadFile("../../controllers/receiver/testdata/gitlab-tag-push.json")
	if err != nil {
		t.Fatal(err)
	}
	return func() receiver.Response {
		t.Helper()
		var res receiver.Response
		NewWithT(t).Eventually(func(g Gomega) {
			req, _ := http.NewRequest(http.MethodPost, server.URL+"/hooks/gitlab", bytes.NewReader(body))
			req.Header.Set("X-Gitlab-Event", "Tag Push Hook")
			req.Header.Set("X-Gitlab-Token", "s3cr3t")
			resp, err := http.DefaultClient.Do(req)
			g.Expect(err).NotTo(HaveOccurred())
			defer resp.Body.Close()
			res = receiver.Response{}
			g.Expect(json.NewDecoder(resp.Body).Decode(&res)).To(Succeed())
			// Until the manager's cache has the Pipeline, nothing accepts the secret.
			g.Expect(resp.StatusCode).To(Equal(http.StatusAccepted), res.Message)
		}).WithTimeout(10 * time.Second).Should(Succeed())
		t.Logf("Push delivered: %+v", res)
		return res
	}
}

// pushedRun is the run the receiver created in ns.
func pushedRun(t *testing.T, ns string) *conveyorv1.PipelineRun {
	t.Helper()
	runs := &conveyorv1.PipelineRunList{}
	if err := k8s.List(context.Background(), runs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for i := range runs.Items {
		if runs.Items[i].Spec.Trigger != nil {
			return &runs.Items[i]
		}
	}
	t.Fatalf("no pushed run among %d", len(runs.Items))
	return nil
}

// The pusher of a tag is its run's requester (mapped by the Pipeline), so
// she may not approve the release she pushed; once another release engineer
// refuses it and the run is pruned, the push delivered again is refused by
// the ledger, and the receiver says why.
func TestPushedTagKeepsItsPusher(t *testing.T) {
	ns := newNamespace(t)
	deliver := receiverFor(t, ns, []conveyorv1.PusherMapping{{Name: "rita", User: "rita"}})
	if res := deliver(); len(inNamespace(ns, res.Runs)) != 1 {
		t.Fatalf("the push created %v", res.Runs)
	}
	run := pushedRun(t, ns)
	if run.Spec.Requester == nil || run.Spec.Requester.Username != "rita" || run.Spec.Git.Commit != pushedCommit {
		t.Fatalf("pushed run: requester %+v, git %+v", run.Spec.Requester, run.Spec.Git)
	}
	toApproveGate(t, run)
	_, err := decideAs("rita", run, "approve", conveyorv1.DecisionApprove)
	expectRefused(t, err, `separation of duties: "rita" requested PipelineRun `+run.Name)

	if _, err := decideAs("rob", run, "approve", conveyorv1.DecisionReject); err != nil {
		t.Fatal(err)
	}
	waitRun(t, run, conveyorv1.RunRejected, "approve")
	if err := k8s.Delete(context.Background(), run); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func() bool {
		return isNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), &conveyorv1.PipelineRun{}))
	}).WithTimeout(10 * time.Second).Should(BeTrue())
	res := deliver()
	skipped := inNamespace(ns, res.Skipped)
	if len(inNamespace(ns, res.Runs)) != 0 || len(skipped) != 1 {
		t.Fatalf("the push of a refused release: %+v", res)
	}
	expectRefused(t, errString(skipped[0]), "release v1.4.0 of Pipeline shop (commit "+pushedCommit+") was refused by rob")
}

// A run created first under the name the receiver gives a push (with another
// commit) does not swallow the push: the receiver creates its run under
// another name, and a redelivery finds it.
func TestSquattedRunNameDoesNotSwallowThePush(t *testing.T) {
	ns := newNamespace(t)
	deliver := receiverFor(t, ns, nil)
	git := conveyorv1.GitRef{Tag: "v1.4.0", Commit: pushedCommit}
	squat := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Name: receiver.RunName("shop", git), Namespace: ns},
		Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: conveyorv1.GitRef{Tag: "v1.4.0-rc", Commit: "0badc0de"}},
	}
	if err := as("rita").Create(context.Background(), squat); err != nil {
		t.Fatal(err)
	}
	res := deliver()
	if res.Message != "created 1 run(s)" || len(inNamespace(ns, res.Runs)) != 1 || inNamespace(ns, res.Runs)[0] == ns+"/"+squat.Name {
		t.Fatalf("the push beside a squatter: %+v", res)
	}
	run := pushedRun(t, ns)
	if run.Spec.Git != git || run.Spec.Requester == nil || run.Spec.Requester.Username == "rita" {
		t.Fatalf("pushed run %s: git %+v requester %+v", run.Name, run.Spec.Git, run.Spec.Requester)
	}
	// An unmapped pusher still may not approve what she pushed.
	toApproveGate(t, run)
	_, err := decideAs("rita", run, "approve", conveyorv1.DecisionApprove)
	expectRefused(t, err, `separation of duties: "rita" requested PipelineRun `+run.Name)
	NewWithT(t).Eventually(func() string {
		return deliver().Message
	}).WithTimeout(10 * time.Second).Should(Equal("already received: the run(s) exist"))
}

// inNamespace keeps the receiver's answers about ns ("ns/..."): Pipelines
// of other tests build the same repository.
func inNamespace(ns string, answers []string) []string {
	var out []string
	for _, a := range answers {
		if strings.HasPrefix(a, ns+"/") {
			out = append(out, a)
		}
	}
	return out
}

type errString string

func (e errString) Error() string { return string(e) }
