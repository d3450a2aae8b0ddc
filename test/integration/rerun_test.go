package integration_test

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// rerun creates a run of pipeline "shop" for git with spec.rerunOf, as the admin.
func rerun(of string, ns string, git conveyorv1.GitRef) (*conveyorv1.PipelineRun, error) {
	run := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "shop-rerun-", Namespace: ns},
		Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: git, RerunOf: of},
	}
	return run, k8s.Create(context.Background(), run)
}

// TestRerunFailedPart: a tag run whose production deploy failed is rerun: the
// rerun reuses build, testing, staging and pre-production without running a
// Job, asks for the approval again (not carried over by default), and
// deploys; the old run stays. Reruns of runs in flight, of another commit or
// of a missing run are refused at admission.
func TestRerunFailedPart(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	old := newRun(t, ns, v140)

	_, err := rerun(old.Name, ns, v140)
	expectRefused(t, err, "has not finished")

	toApproveGate(t, old)
	decide(t, old, "approve", conveyorv1.DecisionApprove)
	decide(t, old, "production", conveyorv1.DecisionApprove)
	finishJob(t, waitJob(t, old, "production", "deploy"), "BackoffLimitExceeded", "Job has reached the specified backoff limit")
	waitRun(t, old, conveyorv1.RunFailed, "production")

	other := v140
	other.Commit = "0123abcd"
	_, err = rerun(old.Name, ns, other)
	expectRefused(t, err, "spec.rerunOf: Invalid value")
	_, err = rerun("no-such-run", ns, v140)
	expectRefused(t, err, "does not exist")

	again, err := rerun(old.Name, ns, v140)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Created PipelineRun %s with rerunOf %s", again.Name, old.Name)
	got := waitRun(t, again, conveyorv1.RunWaiting, "approve")
	for _, name := range []string{"build", "testing", "staging", "pre-production"} {
		if st := stageOf(got, name); st.Phase != conveyorv1.StageSucceeded || st.ReusedFrom != old.Name {
			t.Errorf("stage %s of the rerun: phase %s reusedFrom %q", name, st.Phase, st.ReusedFrom)
		}
	}
	if st := stageOf(got, "approve"); len(st.Decisions) != 0 {
		t.Errorf("the old run's approval carried over: %+v", st.Decisions)
	}
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(runJobs(g, again, "")).To(BeEmpty(), "the rerun ran a reused stage again")
	}).WithTimeout(time.Second).Should(Succeed())

	decide(t, again, "approve", conveyorv1.DecisionApprove)
	decide(t, again, "production", conveyorv1.DecisionApprove)
	finishJob(t, waitJob(t, again, "production", "deploy"), "", "")
	waitRun(t, again, conveyorv1.RunSucceeded, "production")
	if jobs := runJobs(NewWithT(t), again, ""); len(jobs) != 1 {
		t.Errorf("the rerun created %d Jobs, want 1 (production)", len(jobs))
	}
	kept := &conveyorv1.PipelineRun{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(old), kept); err != nil || kept.Status.Phase != conveyorv1.RunFailed {
		t.Errorf("the old run is not kept as history: %v %s", err, kept.Status.Phase)
	}
}
