package integration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// createPipeline creates a Pipeline named shop from YAML (its spec) in ns.
func createPipeline(t *testing.T, ns, spec string) {
	t.Helper()
	p := &conveyorv1.Pipeline{}
	if err := yaml.UnmarshalStrict([]byte(spec), &p.Spec); err != nil {
		t.Fatal(err)
	}
	p.Name, p.Namespace = "shop", ns
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// cancel sets spec.cancelled on a run as the given persona.
func cancel(who string, run *conveyorv1.PipelineRun) error {
	patch := client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"cancelled":true}}`))
	return as(who).Patch(context.Background(), run.DeepCopy(), patch)
}

// waitRunReason waits until the run's phase and Ready reason are as given.
func waitRunReason(t *testing.T, run *conveyorv1.PipelineRun, phase conveyorv1.RunPhase, reason string) *conveyorv1.PipelineRun {
	t.Helper()
	got := &conveyorv1.PipelineRun{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(phase), describe(got))
		ready := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Reason).To(Equal(reason), describe(got))
	}).WithTimeout(30 * time.Second).Should(Succeed())
	t.Logf("Run %s: %s", run.Name, describe(got))
	return got
}

func expectJobGone(t *testing.T, job *batchv1.Job) {
	t.Helper()
	NewWithT(t).Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(job), &batchv1.Job{}))
	}).WithTimeout(10*time.Second).Should(BeTrue(), "Job %s/%s deleted", job.Namespace, job.Name)
}

// Cancelling a running run deletes its running Job and ends it as Cancelled;
// nothing starts afterwards; the spec accepts no other change, nor an
// un-cancel.
func TestCancelRunningRun(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run, err := createRunAs("dana", ns, featureLogin)
	if err != nil {
		t.Fatal(err)
	}
	job := waitJob(t, run, "build", "compile")

	if err := cancel("dana", run); err != nil {
		t.Fatalf("a developer cancels her run: %v", err)
	}
	t.Log("dana set spec.cancelled: true")
	got := waitRunReason(t, run, conveyorv1.RunCancelled, conveyorv1.ReasonCancelled)
	expectJobGone(t, job)
	build := stageOf(got, "build")
	if build.Phase != conveyorv1.StageCancelled || build.Jobs[0].Phase != conveyorv1.JobCancelled {
		t.Errorf("build stage after cancel: %+v", build)
	}
	if testing := stageOf(got, "testing"); testing.Phase != conveyorv1.StagePending {
		t.Errorf("testing stage after cancel: %s", testing.Phase)
	}
	expectHealth(t, "PipelineRun", ns, run.Name, "Failed", "Degraded")

	if err := updateRun(run, func(r *conveyorv1.PipelineRun) { r.Spec.Cancelled = false }); err == nil || !strings.Contains(err.Error(), "stays cancelled") {
		t.Errorf("un-cancel: want refused, got %v", err)
	}
	if err := updateRun(run, func(r *conveyorv1.PipelineRun) { r.Spec.Git.Commit = "deadbeef" }); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("changing the commit: want refused, got %v", err)
	}
	// Settled: no Job comes back, the status stays.
	time.Sleep(time.Second)
	if jobs := runJobs(NewWithT(t), run, ""); len(jobs) != 0 {
		t.Errorf("%d Jobs after cancel", len(jobs))
	}
	waitRunReason(t, run, conveyorv1.RunCancelled, conveyorv1.ReasonCancelled)
}

// Cancelling a run that waits for a trigger ends it; the waiting stage never
// starts, and an Approval for it is refused.
func TestCancelWaitingRun(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, featureLogin)
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	if err := cancel("tess", run); err != nil {
		t.Fatal(err)
	}
	got := waitRunReason(t, run, conveyorv1.RunCancelled, conveyorv1.ReasonCancelled)
	if s := stageOf(got, "staging"); s.Phase != conveyorv1.StageCancelled {
		t.Errorf("staging after cancel: %s", s.Phase)
	}
	if _, err := decideAs("dana", run, "staging", conveyorv1.DecisionApprove); err == nil {
		t.Error("an Approval for a cancelled run was admitted")
	} else {
		t.Logf("Approval refused: %v", err)
	}
	if jobs := runJobs(NewWithT(t), run, "staging"); len(jobs) != 0 {
		t.Errorf("%d staging Jobs after cancel", len(jobs))
	}
}

// A manual stage past its waitTimeout ends the run as Expired, told apart
// from a refusal.
func TestWaitTimeoutExpires(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	createPipeline(t, ns, `
refs: {branches: ["feature_*"]}
stages:
- name: build
  jobs: [{name: compile, image: golang:1.26}]
- name: staging
  when: manual
  triggerGroups: [developers]
  waitTimeout: 2s
  jobs: [{name: deploy, image: deployer:1}]
`)
	run := newRun(t, ns, featureLogin)
	passStage(t, run, "build", "compile")
	got := waitRunReason(t, run, conveyorv1.RunExpired, conveyorv1.ReasonExpired)
	s := stageOf(got, "staging")
	if s.Phase != conveyorv1.StageExpired || !strings.Contains(s.Message, "waitTimeout of 2s") {
		t.Errorf("staging: %s %q", s.Phase, s.Message)
	}
	if jobs := runJobs(NewWithT(t), run, "staging"); len(jobs) != 0 {
		t.Errorf("%d staging Jobs after expiry", len(jobs))
	}
	// Nothing of this run ever left its namespace: no cleanup finalizer.
	if len(got.Finalizers) != 0 {
		t.Errorf("a run that never leaves its namespace carries finalizers %v", got.Finalizers)
	}
}

// A run past its Pipeline's timeout fails with reason Timeout and its running
// Job is deleted; a job's timeout and retries become the Job's deadline and
// backoff limit, and its attempts show in status.
func TestRunTimeoutAndJobLimits(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	createPipeline(t, ns, `
refs: {branches: ["feature_*"]}
timeout: 4s
stages:
- name: build
  jobs: [{name: compile, image: golang:1.26, timeout: 90s, retries: 2}]
`)
	run := newRun(t, ns, featureLogin)
	job := waitJob(t, run, "build", "compile")
	if d := job.Spec.ActiveDeadlineSeconds; d == nil || *d != 90 {
		t.Errorf("activeDeadlineSeconds %v, want 90", d)
	}
	if b := job.Spec.BackoffLimit; b == nil || *b != 2 {
		t.Errorf("backoffLimit %v, want 2", b)
	}
	// The Job controller replaced a failed pod: attempt 2 runs.
	NewWithT(t).Eventually(func(g Gomega) {
		j := &batchv1.Job{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(job), j)).To(Succeed())
		j.Status.Failed, j.Status.Active = 1, 1
		g.Expect(k8s.Status().Update(context.Background(), j)).To(Succeed())
	}).Should(Succeed())
	NewWithT(t).Eventually(func(g Gomega) {
		got := &conveyorv1.PipelineRun{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), got)).To(Succeed())
		js := stageOf(got, "build").Jobs[0]
		g.Expect(js.Attempts).To(Equal(int32(2)))
		g.Expect(js.FailedAttempts).To(Equal(int32(1)))
		g.Expect(js.Message).To(Equal("attempt 2 of 3 (1 failed)"))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	t.Log("status shows attempt 2 of 3 (1 failed)")

	got := waitRunReason(t, run, conveyorv1.RunFailed, conveyorv1.ReasonTimeout)
	expectJobGone(t, job)
	ready := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionReady)
	if !strings.Contains(ready.Message, "timeout of 4s") {
		t.Errorf("Ready message %q does not name the timeout", ready.Message)
	}
}

// Finished runs beyond the Pipeline's history limits are deleted, oldest
// first; running ones are never touched.
func TestHistoryLimits(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	createPipeline(t, ns, `
refs: {branches: ["feature_*"]}
history: {succeeded: 2, failed: 1}
stages:
- name: build
  jobs: [{name: compile, image: golang:1.26}]
`)
	// Times in status have whole seconds: runs a second apart are ordered by them.
	var ok, failed []*conveyorv1.PipelineRun
	for i := 0; i < 3; i++ {
		time.Sleep(1100 * time.Millisecond)
		run := newRun(t, ns, featureLogin)
		passStage(t, run, "build", "compile")
		waitRun(t, run, conveyorv1.RunSucceeded, "build")
		ok = append(ok, run)
	}
	for i := 0; i < 2; i++ {
		time.Sleep(1100 * time.Millisecond)
		run := newRun(t, ns, featureLogin)
		finishJob(t, waitJob(t, run, "build", "compile"), "BackoffLimitExceeded", "failed")
		waitRun(t, run, conveyorv1.RunFailed, "build")
		failed = append(failed, run)
	}
	running := newRun(t, ns, featureLogin)
	waitJob(t, running, "build", "compile")

	exists := func(run *conveyorv1.PipelineRun) bool {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(run), &conveyorv1.PipelineRun{})
		return !apierrors.IsNotFound(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(exists(ok[0])).To(BeFalse(), "oldest succeeded run %s deleted", ok[0].Name)
		g.Expect(exists(failed[0])).To(BeFalse(), "older failed run %s deleted", failed[0].Name)
	}).WithTimeout(10 * time.Second).Should(Succeed())
	for _, run := range []*conveyorv1.PipelineRun{ok[1], ok[2], failed[1], running} {
		if !exists(run) {
			t.Errorf("run %s was deleted", run.Name)
		}
	}
	t.Logf("kept %s, %s (succeeded), %s (failed), %s (running)", ok[1].Name, ok[2].Name, failed[1].Name, running.Name)
}

// updateRun reads the run, changes it and updates it, again on a conflict (a
// status write in between), and returns the update's verdict. A run written
// over and over (five conflicts in a row) returns the conflict: a finished
// run is not written again, so that is a failure.
func updateRun(run *conveyorv1.PipelineRun, change func(*conveyorv1.PipelineRun)) error {
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		cur := &conveyorv1.PipelineRun{}
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(run), cur); err != nil {
			return err
		}
		change(cur)
		if err = k8s.Update(context.Background(), cur); !apierrors.IsConflict(err) {
			return err
		}
	}
	return err
}
