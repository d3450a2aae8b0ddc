package integration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// The seed's roles, enforced by the API server: each step acts as a persona
// through the API and checks the API's answer; every allowed step must move
// the run.
func TestTrustRules(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run, err := createRunAs("rita", ns, v140)
	if err != nil {
		t.Fatal(err)
	}
	cur := getRun(t, run)
	if cur.Spec.Requester == nil || cur.Spec.Requester.Username != "rita" || !contains(cur.Spec.Requester.Groups, "release-engineers") {
		t.Fatalf("run requester = %+v, want rita in release-engineers", cur.Spec.Requester)
	}
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")

	refused := func(who, stage string, d conveyorv1.ApprovalDecision, want string) {
		t.Helper()
		_, err := decideAs(who, run, stage, d)
		expectRefused(t, err, want)
	}
	allowed := func(who, stage string, d conveyorv1.ApprovalDecision) *conveyorv1.Approval {
		t.Helper()
		a, err := decideAs(who, run, stage, d)
		if err != nil {
			t.Fatalf("%s %s %s: refused: %v", who, d, stage, err)
		}
		t.Logf("Allowed: %s %s stage %s", who, d, stage)
		return a
	}

	refused("dana", "pre-production", conveyorv1.DecisionApprove, `user "dana" may not trigger stage pre-production: only members of the groups testers, devops, release-engineers may`)
	allowed("dana", "staging", conveyorv1.DecisionApprove)
	passStage(t, run, "staging", "deploy")
	allowed("tess", "pre-production", conveyorv1.DecisionApprove)
	passStage(t, run, "pre-production", "deploy")
	waitRun(t, run, conveyorv1.RunWaiting, "approve")

	refused("dana", "approve", conveyorv1.DecisionApprove, "only members of the groups release-engineers may")
	refused("rita", "approve", conveyorv1.DecisionApprove, `separation of duties: "rita" created PipelineRun`)
	refused("dana", "production", conveyorv1.DecisionApprove, `user "dana" may not trigger stage production: only members of the groups release-engineers, devops may`)

	// rob approves, and claims in the request to be rita: the recorded approver is rob.
	forged := &conveyorv1.Approval{}
	forged.GenerateName, forged.Namespace = run.Name+"-approve-", ns
	forged.Spec = conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "approve",
		Decision: conveyorv1.DecisionApprove, Approver: &conveyorv1.UserInfo{Username: "rita", Groups: []string{"release-engineers"}}}
	if err := as("rob").Create(context.Background(), forged); err != nil {
		t.Fatalf("rob approving: %v", err)
	}
	if forged.Spec.Approver == nil || forged.Spec.Approver.Username != "rob" {
		t.Fatalf("recorded approver = %+v, want rob", forged.Spec.Approver)
	}
	t.Logf("Allowed: rob approved; recorded approver %q although the request said rita", forged.Spec.Approver.Username)
	got := waitRun(t, run, conveyorv1.RunWaiting, "production")
	if d := stageOf(got, "approve").Decisions; len(d) != 1 || d[0].Approver != "rob" {
		t.Fatalf("approve decisions = %+v, want rob's", d)
	}

	// A decided Approval cannot be changed, not even by its author or an admin.
	for _, who := range []string{"rob", "admin"} {
		c := k8s
		if who != "admin" {
			c = as(who)
		}
		// The persona roles do not grant update at all; the admin meets the immutability rule.
		err := c.Patch(context.Background(), forged, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"decision":"Reject"}}`)))
		if err == nil {
			t.Fatalf("%s changed a decided Approval", who)
		}
		t.Logf("Refused as expected: %s changing the Approval: %v", who, err)
	}
	err = k8s.Patch(context.Background(), forged, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"approver":{"username":"rita"}}}`)))
	expectRefused(t, err, "cannot be changed")

	allowed("omar", "production", conveyorv1.DecisionApprove)
	prod := waitJob(t, run, "production", "deploy")
	if prod.Namespace != "production" {
		t.Fatalf("production Job in %s", prod.Namespace)
	}

	// Status belongs to the controller: a person may not write it.
	err = as("dana").Status().Patch(context.Background(), getRun(t, run), client.RawPatch(types.MergePatchType, []byte(`{"status":{"phase":"Succeeded"}}`)))
	if !apierrors.IsForbidden(err) {
		t.Fatalf("dana patching run status: %v, want Forbidden", err)
	}
	t.Logf("Refused as expected: dana patching the run's status: %v", err)
}

// Two Approvals by the same person count once toward required: 2.
func TestGateNeedsDistinctApprovers(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	p := seedPipeline(t, ns)
	NewWithT(t).Eventually(func(g Gomega) {
		cur := &conveyorv1.Pipeline{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(p), cur)).To(Succeed())
		cur.Spec.Stages[4].Approval.Required = 2
		g.Expect(k8s.Update(context.Background(), cur)).To(Succeed())
	}).Should(Succeed())
	run := newRun(t, ns, v140)
	toApproveGate(t, run)

	var robs []*conveyorv1.Approval
	for i := 0; i < 2; i++ {
		a, err := decideAs("rob", run, "approve", conveyorv1.DecisionApprove)
		if err != nil {
			t.Fatal(err)
		}
		robs = append(robs, a)
	}
	t.Log("rob approved twice")
	NewWithT(t).Consistently(func(g Gomega) {
		r := &conveyorv1.PipelineRun{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), r)).To(Succeed())
		g.Expect(r.Status.CurrentStage).To(Equal("approve"))
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunWaiting))
	}).WithTimeout(2 * time.Second).Should(Succeed())
	got := getRun(t, run)
	c := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionReady)
	if !strings.Contains(c.Message, "waiting for 1 more approval") {
		t.Fatalf("gate message %q", c.Message)
	}
	t.Logf("Gate stays closed: %s", c.Message)
	counted := stageOf(got, "approve").Decisions
	if len(counted) != 1 {
		t.Fatalf("gate counted %+v", counted)
	}
	var first *conveyorv1.Approval
	for _, a := range robs {
		if a.Name != counted[0].Approval {
			waitApproval(t, a, conveyorv1.ReasonDuplicateApprover)
		} else {
			first = a
			waitApproval(t, a, conveyorv1.ReasonAccepted)
		}
	}
	// Neither is settled: deleting the counted one would withdraw rob's
	// approval while the gate waits, and let the duplicate count instead; so
	// both stay in the manager's view.
	for _, a := range robs {
		if settled(t, a) {
			t.Fatalf("Approval %s is settled while the gate waits", a.Name)
		}
	}

	rita := decide(t, run, "approve", conveyorv1.DecisionApprove)
	waitRun(t, run, conveyorv1.RunWaiting, "production")
	// The gate passed: the Approvals it counted can no longer change.
	for _, a := range []*conveyorv1.Approval{first, rita} {
		NewWithT(t).Eventually(func() bool { return settled(t, a) }).WithTimeout(10*time.Second).Should(BeTrue(), "Approval %s settled", a.Name)
	}
}

// settled reads an Approval's status.settled from the API server.
func settled(t *testing.T, a *conveyorv1.Approval) bool {
	t.Helper()
	got := &conveyorv1.Approval{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(a), got); err != nil {
		t.Fatal(err)
	}
	return got.Status.Settled
}

func getRun(t *testing.T, run *conveyorv1.PipelineRun) *conveyorv1.PipelineRun {
	t.Helper()
	got := &conveyorv1.PipelineRun{}
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(run), got); err != nil {
		t.Fatal(err)
	}
	return got
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Who may cancel a run: its requester, the groups of the stage it stands at,
// and subjects granted the verb cancel (DevOps and release engineers in the
// shipped roles); a developer may not cancel a release engineer's run at
// build. Nobody but the manager changes a run's ownerReferences (one to a
// missing object would have the garbage collector delete the run) or its
// finalizers.
func TestCancelAndRunIntegrity(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	start := func() *conveyorv1.PipelineRun {
		t.Helper()
		run, err := createRunAs("rita", ns, v140)
		if err != nil {
			t.Fatal(err)
		}
		waitJob(t, run, "build", "compile")
		return run
	}
	run := start()
	expectRefused(t, cancel("dana", run), `user "dana" may not cancel PipelineRun `+run.Name+`: only its requester "rita"`)

	for _, tc := range []struct{ name, patch, want string }{
		{"an ownerReference to a missing object", `{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"gone","uid":"00000000-0000-0000-0000-000000000001"}]}}`, "ownerReferences are the manager's alone"},
		{"a finalizer of someone else's", `{"metadata":{"finalizers":["example.com/keep"]}}`, "finalizers are the manager's alone"},
	} {
		err := as("dana").Patch(context.Background(), run.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(tc.patch)))
		expectRefused(t, err, tc.want)
	}
	if got := getRun(t, run); len(got.OwnerReferences) != 0 || got.Spec.Cancelled {
		t.Fatalf("the run was changed: owners %v, cancelled %v", got.OwnerReferences, got.Spec.Cancelled)
	}

	if err := cancel("omar", run); err != nil {
		t.Fatalf("devops (verb cancel) may cancel any run: %v", err)
	}
	waitRunReason(t, run, conveyorv1.RunCancelled, conveyorv1.ReasonCancelled)
	own := start()
	if err := cancel("rita", own); err != nil {
		t.Fatalf("the requester may cancel her run: %v", err)
	}
	waitRunReason(t, own, conveyorv1.RunCancelled, conveyorv1.ReasonCancelled)
}
