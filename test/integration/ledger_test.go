package integration_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// release waits until the Release of the Pipeline "shop" and tag reads as check wants.
func release(t *testing.T, ns, tag string, check func(g Gomega, rel *conveyorv1.Release)) *conveyorv1.Release {
	t.Helper()
	rel := &conveyorv1.Release{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: engine.ReleaseName("shop", tag)}, rel)).To(Succeed())
		check(g, rel)
	}).WithTimeout(10 * time.Second).Should(Succeed())
	return rel
}

// A refusal is final for the release: a new run of the refused tag, or of its
// commit under another tag, is refused at admission with who refused it and
// when, even once the refused run is deleted; a run of the release already in
// flight is stopped; the ledger is the manager's alone.
func TestReleaseLedgerRefusalIsFinal(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, v140)
	// A second run of the same release, in flight while the first is refused.
	inFlight := newRun(t, ns, v140)
	toApproveGate(t, run)
	waitRun(t, inFlight, conveyorv1.RunRunning, "build")

	a := &conveyorv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Name: "no-go", Namespace: ns},
		Spec:       conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "approve", Decision: conveyorv1.DecisionReject, Comment: "breaks checkout"},
	}
	if err := as("rita").Create(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	waitRun(t, run, conveyorv1.RunRejected, "approve")
	rel := release(t, ns, "v1.4.0", func(g Gomega, rel *conveyorv1.Release) {
		g.Expect(rel.Status.Verdict).To(Equal(conveyorv1.VerdictRefused))
	})
	if rel.Status.DecidedBy != "rita" || rel.Spec.Commit != v140.Commit || len(rel.Status.Decisions) != 1 || rel.Status.Decisions[0].Comment != "breaks checkout" {
		t.Fatalf("ledger: %+v %+v", rel.Spec, rel.Status)
	}
	// Staging and pre-production were reached before the refusal.
	if len(rel.Status.Environments) != 2 || rel.Status.LastEnvironment == "" {
		t.Fatalf("environments reached: %+v", rel.Status.Environments)
	}

	// The run in flight is stopped, its build Job deleted.
	stopped := waitRunReason(t, inFlight, conveyorv1.RunRejected, conveyorv1.ReasonReleaseRefused)
	t.Logf("In flight: %s", readyMessage(stopped))

	refusedBy := "was refused by rita at "
	_, err := createRunAs("rita", ns, v140)
	expectRefused(t, err, refusedBy)
	_, err = createRunAs("rita", ns, conveyorv1.GitRef{Tag: "v1.4.1", Commit: v140.Commit + "77"})
	expectRefused(t, err, "commit "+v140.Commit+" was refused as release v1.4.0 of Pipeline shop by rita")

	// Deleting (or pruning: history keeps one failed run) the refused run
	// leaves the ledger, and the refusal.
	if err := k8s.Delete(context.Background(), run); client.IgnoreNotFound(err) != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func() bool {
		return isNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), &conveyorv1.PipelineRun{}))
	}).WithTimeout(10 * time.Second).Should(BeTrue())
	_, err = createRun(k8s, ns, v140)
	expectRefused(t, err, refusedBy)

	// The ledger is the manager's: a cluster admin may not rewrite it, nor
	// create a look-alike; a persona may not even try (RBAC).
	forged := rel.DeepCopy()
	forged.Status.Decisions, forged.Status.Verdict = nil, conveyorv1.VerdictApproved
	expectRefused(t, as("ada").Update(context.Background(), forged), "the release ledger is written by Conveyor alone")
	lookAlike := &conveyorv1.Release{ObjectMeta: metav1.ObjectMeta{Name: "shop-v2", Namespace: ns}, Spec: conveyorv1.ReleaseSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Tag: "v2", Commit: "abcd"}}
	expectRefused(t, as("ada").Create(context.Background(), lookAlike), "the release ledger is written by Conveyor alone")
	expectRefused(t, as("rita").Update(context.Background(), forged), "forbidden")
	expectRefused(t, as("omar").Delete(context.Background(), rel), "forbidden")
	if err := as("dana").Get(context.Background(), client.ObjectKeyFromObject(rel), &conveyorv1.Release{}); err != nil {
		t.Fatalf("a developer reads the ledger: %v", err)
	}
}

// A tag names one commit: once a run of the tag started, a run naming
// another commit is refused ("the tag moved"); a run naming the same commit,
// abbreviated, is not.
func TestReleaseTagMoved(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	first := newRun(t, ns, v140)
	waitRun(t, first, conveyorv1.RunRunning, "build")
	release(t, ns, "v1.4.0", func(g Gomega, rel *conveyorv1.Release) {
		g.Expect(rel.Spec.Commit).To(Equal(v140.Commit))
		g.Expect(rel.Status.Verdict).To(Equal(conveyorv1.VerdictPending))
	})
	_, err := createRunAs("rita", ns, conveyorv1.GitRef{Tag: "v1.4.0", Commit: "deadbeef"})
	expectRefused(t, err, "the tag moved: release v1.4.0 of Pipeline shop names commit "+v140.Commit)
	if _, err := createRunAs("rita", ns, conveyorv1.GitRef{Tag: "v1.4.0", Commit: v140.Commit[:6]}); err != nil {
		t.Fatalf("a run of the same commit, abbreviated: %v", err)
	}
}
