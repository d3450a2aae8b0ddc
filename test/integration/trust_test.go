package integration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
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
	refused("rita", "approve", conveyorv1.DecisionApprove, `separation of duties: "rita" requested PipelineRun`)
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

// An Approval counts for the run it was given to, recorded at admission by
// UID: a run deleted and created again under its name (with another commit)
// starts from nothing, and the earlier run's Approval says so.
func TestRecreatedRunStartsFromNothing(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	createPipeline(t, ns, `
refs: {tags: ["v*"]}
stages:
- name: build
  jobs: [{name: compile, image: golang:1.26}]
- name: approve
  approval: {groups: [release-engineers], required: 2}
`)
	create := func(commit string) *conveyorv1.PipelineRun {
		t.Helper()
		run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: "shop-v1-4-0", Namespace: ns},
			Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: conveyorv1.GitRef{Tag: "v1.4.0", Commit: commit}}}
		if err := as("rita").Create(context.Background(), run); err != nil {
			t.Fatal(err)
		}
		passStage(t, run, "build", "compile")
		waitRun(t, run, conveyorv1.RunWaiting, "approve")
		return run
	}
	first := create("3f2a9c1d")
	old, err := decideAs("rob", first, "approve", conveyorv1.DecisionApprove)
	if err != nil {
		t.Fatal(err)
	}
	if old.Spec.Run == nil || old.Spec.Run.UID != string(first.UID) || old.Spec.Run.Commit != "3f2a9c1d" {
		t.Fatalf("recorded run = %+v, want uid %s commit 3f2a9c1d", old.Spec.Run, first.UID)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(stageOf(getRun(t, first), "approve").Decisions).To(HaveLen(1))
	}).WithTimeout(10 * time.Second).Should(Succeed())

	if err := k8s.Delete(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(first), &conveyorv1.PipelineRun{}))
	}).WithTimeout(10 * time.Second).Should(BeTrue())
	// envtest has no garbage collector: delete the earlier run's Jobs as it would.
	if err := k8s.DeleteAllOf(context.Background(), &batchv1.Job{}, client.InNamespace(ns),
		client.MatchingLabels{conveyorv1.LabelRunUID: string(first.UID)}, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	// Under its name with another commit, the tag moved: the ledger refuses it.
	moved := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: "shop-v1-4-0", Namespace: ns},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: conveyorv1.GitRef{Tag: "v1.4.0", Commit: "77c0ffee"}}}
	expectRefused(t, as("rita").Create(context.Background(), moved), "the tag moved")
	again := create("3f2a9c1d")
	waitApproval(t, old, conveyorv1.ReasonRunReplaced)
	NewWithT(t).Consistently(func(g Gomega) {
		approve := stageOf(getRun(t, again), "approve")
		g.Expect(approve.Decisions).To(BeEmpty())
		g.Expect(approve.Message).To(ContainSubstring("waiting for 2 more approval(s)"))
	}).WithTimeout(2 * time.Second).Should(Succeed())
}

// spec.trigger tells which push started a run; only the push receiver sets
// it, so that nobody borrows a pusher's name or swallows a push.
func TestTriggerIsTheReceiversAlone(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{GenerateName: "shop-", Namespace: ns},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: v140,
			Trigger: &conveyorv1.Trigger{Provider: "gitlab", Event: "Tag Push Hook", Delivery: "forged", Pusher: "rob"}}}
	expectRefused(t, as("rita").Create(context.Background(), run), "spec.trigger is set by Conveyor's push receiver only")
}

// A tag is a release: where the Pipeline gives tags to release engineers, a
// developer's tag run is refused, a release engineer's is not.
func TestTagRunsForTagGroups(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	createPipeline(t, ns, `
refs: {branches: ["feature_*"], tags: ["v*"], tagGroups: [release-engineers]}
stages:
- name: build
  jobs: [{name: compile, image: golang:1.26}]
`)
	_, err := createRunAs("dana", ns, v140)
	expectRefused(t, err, `user "dana" may not start a run for tag v1.4.0: Pipeline shop gives tags to the groups release-engineers`)
	if _, err := createRunAs("dana", ns, featureLogin); err != nil {
		t.Fatalf("a developer's branch run: %v", err)
	}
	if _, err := createRunAs("rita", ns, v140); err != nil {
		t.Fatalf("a release engineer's tag run: %v", err)
	}
}

// A Job anyone makes with a run's labels and annotation in a namespace of
// their own (a sandbox, a CI ServiceAccount's) is not the run's: the manual
// stage it imitates stays waiting for its trigger, and an Event says so.
func TestLookAlikeJobIgnored(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	sandbox := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, featureLogin)
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	// Told while the fake runs: once it has succeeded it leaves the
	// manager's cache (only unfinished Jobs are cached), and a create and
	// success in a row may never be seen at all.
	fake := lookAlikeJob(t, run, sandbox, run.Name+"-staging-deploy")
	NewWithT(t).Eventually(func(g Gomega) {
		events := &eventsv1.EventList{}
		g.Expect(k8s.List(context.Background(), events, client.InNamespace(ns))).To(Succeed())
		found := false
		for _, e := range events.Items {
			found = found || (e.Reason == conveyorv1.EventJobIgnored && e.Regarding.Name == run.Name)
		}
		g.Expect(found).To(BeTrue(), "a JobIgnored Event on the run")
	}).WithTimeout(10 * time.Second).Should(Succeed())
	finishJob(t, fake, "", "")
	NewWithT(t).Consistently(func(g Gomega) {
		got := getRun(t, run)
		g.Expect(got.Status.Phase).To(Equal(conveyorv1.RunWaiting))
		g.Expect(stageOf(got, "staging").Phase).To(Equal(conveyorv1.StageWaiting))
	}).WithTimeout(2 * time.Second).Should(Succeed())
}

// lookAlikeJob creates, as someone with Job rights in ns, a Job named name
// that carries the run's labels and annotation for its staging deploy.
func lookAlikeJob(t *testing.T, run *conveyorv1.PipelineRun, ns, name string) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns,
			Labels: map[string]string{conveyorv1.LabelRunUID: string(run.UID), conveyorv1.LabelStage: "staging", conveyorv1.LabelJob: "deploy",
				conveyorv1.LabelManagedBy: conveyorv1.ManagedByValue},
			Annotations: map[string]string{conveyorv1.AnnotationRun: run.Namespace + "/" + run.Name}},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "x", Image: "busybox"}}}}},
	}
	if err := k8s.Create(context.Background(), job); err != nil {
		t.Fatal(err)
	}
	return job
}

// A Job made under a stage's own name in its own namespace before the stage
// is ready (by anyone with Job rights there) neither starts the stage nor is
// adopted once the stage is triggered: the run says the name is taken, and
// the stage starts with Conveyor's own Job once the squatter is deleted.
func TestJobNameSquattedAheadOfTime(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, featureLogin)
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	squat := lookAlikeJob(t, run, "staging", engine.JobName(ns, run.Name, "staging", "deploy", "staging"))
	finishJob(t, squat, "", "")
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(stageOf(getRun(t, run), "staging").Phase).To(Equal(conveyorv1.StageWaiting))
	}).WithTimeout(2 * time.Second).Should(Succeed())

	// Creation times are whole seconds: trigger in a later second than the squat.
	time.Sleep(1100 * time.Millisecond)
	decide(t, run, "staging", conveyorv1.DecisionApprove)
	NewWithT(t).Eventually(func(g Gomega) {
		got := getRun(t, run)
		g.Expect(readyReason(got)).To(Equal(conveyorv1.ReasonJobNameTaken), describe(got))
		g.Expect(stageOf(got, "staging").Phase).NotTo(Equal(conveyorv1.StageSucceeded))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	t.Logf("Squatted: %s", readyMessage(getRun(t, run)))

	if err := k8s.Delete(context.Background(), squat, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	// Gone, or already replaced by Conveyor's own Job under the name.
	NewWithT(t).Eventually(func() bool {
		j := &batchv1.Job{}
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(squat), j)
		return isNotFound(err) || err == nil && j.UID != squat.UID
	}).WithTimeout(10 * time.Second).Should(BeTrue())
	real := waitJob(t, run, "staging", "deploy")
	if real.UID == squat.UID {
		t.Fatal("the squatter's Job was taken as the stage's")
	}
	finishJob(t, real, "", "")
	waitRun(t, run, conveyorv1.RunWaiting, "pre-production")
}
