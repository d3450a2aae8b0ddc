package integration_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

var (
	featureLogin = conveyorv1.GitRef{Branch: "feature_login", Commit: "9b1e4f2a"}
	v140         = conveyorv1.GitRef{Tag: "v1.4.0", Commit: "3f2a9c1d"}
)

// The seed's branch flow: build and testing run by themselves, staging waits
// for a trigger and then deploys into namespace staging; a branch run has no
// approve or production stage.
func TestBranchFlow(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, featureLogin)

	waitJob(t, run, "build", "compile")
	passStage(t, run, "build", "compile")
	testing := waitJob(t, run, "testing", "unit")
	waitJob(t, run, "testing", "lint")
	if testing.Namespace != ns || len(testing.OwnerReferences) != 1 || testing.OwnerReferences[0].Name != run.Name {
		t.Fatalf("testing Job %s/%s is not owned by the run: %v", testing.Namespace, testing.Name, testing.OwnerReferences)
	}
	env := map[string]string{}
	for _, e := range testing.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	for k, v := range map[string]string{"CONVEYOR_PIPELINE": "shop", "CONVEYOR_PIPELINE_RUN": run.Name, "CONVEYOR_STAGE": "testing",
		"CONVEYOR_JOB": "unit", "CONVEYOR_BRANCH": "feature_login", "CONVEYOR_REF_KIND": "branch", "CONVEYOR_COMMIT": "9b1e4f2a"} {
		if env[k] != v {
			t.Errorf("Job env %s = %q, want %q", k, env[k], v)
		}
	}
	passStage(t, run, "testing", "unit", "lint")

	got := waitRun(t, run, conveyorv1.RunWaiting, "staging")
	ready := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionReady)
	if ready == nil || ready.Reason != conveyorv1.ReasonWaitingForTrigger || !strings.Contains(ready.Message, "developers, devops, testers") {
		t.Fatalf("waiting run does not say for whom it waits: %+v", ready)
	}
	var names []string
	for _, s := range got.Status.Stages {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "build,testing,staging,pre-production" {
		t.Fatalf("branch run has stages %v", names)
	}
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(runJobs(g, run, "staging")).To(BeEmpty())
	}).WithTimeout(2 * time.Second).Should(Succeed())

	a := decide(t, run, "staging", conveyorv1.DecisionApprove)
	deploy := waitJob(t, run, "staging", "deploy")
	if deploy.Namespace != "staging" {
		t.Fatalf("staging Job runs in %s, want staging", deploy.Namespace)
	}
	got = waitRun(t, run, conveyorv1.RunRunning, "staging")
	if d := stageOf(got, "staging").Decisions; len(d) != 1 || d[0].Approval != a.Name {
		t.Fatalf("staging decisions = %+v, want the Approval %s", d, a.Name)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		ap := &conveyorv1.Approval{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(a), ap)).To(Succeed())
		c := meta.FindStatusCondition(ap.Status.Conditions, conveyorv1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(conveyorv1.ReasonAccepted))
	}).WithTimeout(10 * time.Second).Should(Succeed())

	finishJob(t, deploy, "", "")
	waitRun(t, run, conveyorv1.RunWaiting, "pre-production")
	// An Approval for a stage the branch run does not have is refused at admission.
	_, err := decideAs("omar", run, "production", conveyorv1.DecisionApprove)
	expectRefused(t, err, "stage production runs for tags only")
}

// The seed's tag flow: all six stages in order; production never starts before
// pre-production succeeded and the approve stage passed; then it deploys into
// namespace production after its trigger.
func TestTagFlow(t *testing.T) {
	cached, _ := startManagerCache(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, v140)

	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	// A production trigger given early is refused: it would fire the moment
	// production is reached, and let production jump the gate.
	_, err := decideEarly("omar", run, "production", conveyorv1.DecisionApprove)
	expectRefused(t, err, "stage production of PipelineRun "+run.Name+" is not waiting for a decision yet: the run is at stage staging")
	decide(t, run, "staging", conveyorv1.DecisionApprove)
	passStage(t, run, "staging", "deploy")
	waitRun(t, run, conveyorv1.RunWaiting, "pre-production")
	decide(t, run, "pre-production", conveyorv1.DecisionApprove)
	preprod := waitJob(t, run, "pre-production", "deploy")
	if preprod.Namespace != "pre-production" {
		t.Fatalf("pre-production Job runs in %s", preprod.Namespace)
	}
	noProduction := func() {
		NewWithT(t).Consistently(func(g Gomega) {
			g.Expect(runJobs(g, run, "production")).To(BeEmpty())
		}).WithTimeout(2 * time.Second).Should(Succeed())
	}
	noProduction()
	finishJob(t, preprod, "", "")
	got := waitRun(t, run, conveyorv1.RunWaiting, "approve")
	if c := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionReady); c.Reason != conveyorv1.ReasonWaitingForApproval || !strings.Contains(c.Message, "release-engineers") {
		t.Fatalf("gate condition %+v", c)
	}
	noProduction()

	decide(t, run, "approve", conveyorv1.DecisionApprove)
	waitRun(t, run, conveyorv1.RunWaiting, "production")
	noProduction()
	decide(t, run, "production", conveyorv1.DecisionApprove)
	prod := waitJob(t, run, "production", "deploy")
	if prod.Namespace != "production" {
		t.Fatalf("production Job runs in %s", prod.Namespace)
	}
	finishJob(t, prod, "", "")
	got = waitRun(t, run, conveyorv1.RunSucceeded, "production")
	if c := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionReady); c.Status != "True" {
		t.Fatalf("succeeded run not Ready: %+v", c)
	}
	if got.Status.CompletionTime == nil {
		t.Fatal("no completion time")
	}
	var order []string
	for _, s := range got.Status.Stages {
		if s.Phase != conveyorv1.StageSucceeded {
			t.Fatalf("stage %s is %s", s.Name, s.Phase)
		}
		order = append(order, s.Name)
	}
	if strings.Join(order, ",") != "build,testing,staging,pre-production,approve,production" {
		t.Fatalf("stages %v", order)
	}
	// The ledger says what is in production and who approved it.
	rel := release(t, ns, "v1.4.0", func(g Gomega, rel *conveyorv1.Release) {
		g.Expect(rel.Status.LastEnvironment).To(Equal("production"))
	})
	if rel.Status.Verdict != conveyorv1.VerdictApproved || rel.Status.DecidedBy != "rita" || len(rel.Status.Environments) != 3 {
		t.Fatalf("ledger after the release: %+v", rel.Status)
	}
	finishedRunLeavesCache(t, cached, run, 6, 4)
}

// finishedRunLeavesCache checks that the manager's cache holds none of a
// finished run's Jobs (they succeeded) nor its Approvals (they are settled),
// while the API server keeps them all.
func finishedRunLeavesCache(t *testing.T, cached cache.Cache, run *conveyorv1.PipelineRun, jobs, approvals int) {
	t.Helper()
	ctx := context.Background()
	stored := &batchv1.JobList{}
	if err := k8s.List(ctx, stored, client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)}); err != nil {
		t.Fatal(err)
	}
	if len(stored.Items) != jobs {
		t.Fatalf("API server holds %d Jobs of the run, want %d", len(stored.Items), jobs)
	}
	settled := &conveyorv1.ApprovalList{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.List(ctx, settled, client.InNamespace(run.Namespace), client.MatchingFields{"status.settled": "true"})).To(Succeed())
		g.Expect(settled.Items).To(HaveLen(approvals), "settled Approvals (server-side field selector)")
		inCache := &batchv1.JobList{}
		g.Expect(cached.List(ctx, inCache, client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)})).To(Succeed())
		g.Expect(inCache.Items).To(BeEmpty(), "Jobs of the finished run in the manager's cache")
		cachedApprovals := &conveyorv1.ApprovalList{}
		g.Expect(cached.List(ctx, cachedApprovals, client.InNamespace(run.Namespace))).To(Succeed())
		g.Expect(cachedApprovals.Items).To(BeEmpty(), "Approvals of the finished run in the manager's cache")
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

// A Reject at the approve stage ends the run as Rejected; no production Job is
// ever created, even when production is triggered.
func TestRejectAtApprove(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, v140)
	toApproveGate(t, run)

	decide(t, run, "approve", conveyorv1.DecisionReject)
	got := waitRun(t, run, conveyorv1.RunRejected, "approve")
	if c := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionStalled); c == nil || c.Reason != conveyorv1.ReasonRejected {
		t.Fatalf("rejected run: Stalled = %+v", c)
	}
	_, err := decideAs("omar", run, "production", conveyorv1.DecisionApprove)
	expectRefused(t, err, "already finished as Rejected")
	_, err = decideAs("rob", run, "approve", conveyorv1.DecisionApprove)
	expectRefused(t, err, "already finished as Rejected")
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(runJobs(g, run, "production")).To(BeEmpty())
		r := &conveyorv1.PipelineRun{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), r)).To(Succeed())
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunRejected))
	}).WithTimeout(3 * time.Second).Should(Succeed())
}

// A failed testing Job fails the run with the Job's reason, and no staging Job
// is created even when staging is triggered.
func TestFailedTestingJob(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, featureLogin)
	passStage(t, run, "build", "compile")
	finishJob(t, waitJob(t, run, "testing", "unit"), "BackoffLimitExceeded", "Job has reached the specified backoff limit")
	got := waitRun(t, run, conveyorv1.RunFailed, "testing")
	unit := stageOf(got, "testing").Jobs[0]
	if unit.Phase != conveyorv1.JobFailed || unit.Reason != "BackoffLimitExceeded" {
		t.Fatalf("unit job status %+v", unit)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionStalled); c == nil || !strings.Contains(c.Message, "BackoffLimitExceeded") {
		t.Fatalf("Stalled condition does not carry the Job's reason: %+v", c)
	}
	_, err := decideAs("dana", run, "staging", conveyorv1.DecisionApprove)
	expectRefused(t, err, "already finished as Failed")
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(runJobs(g, run, "staging")).To(BeEmpty())
	}).WithTimeout(2 * time.Second).Should(Succeed())
}

// A new manager started mid-run, on the same API server, creates no duplicate
// Job and finishes the run.
func TestManagerRestartMidRun(t *testing.T) {
	stop := startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	run := newRun(t, ns, v140)
	passStage(t, run, "build", "compile")
	waitJob(t, run, "testing", "unit")
	waitJob(t, run, "testing", "lint")
	stop()
	t.Log("Stopped the manager mid-stage")
	finishJob(t, waitJob(t, run, "testing", "unit"), "", "")

	startManager(t)
	t.Log("Started a new manager")
	finishJob(t, waitJob(t, run, "testing", "lint"), "", "")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	for _, stage := range []string{"staging", "pre-production"} {
		decide(t, run, stage, conveyorv1.DecisionApprove)
		passStage(t, run, stage, "deploy")
	}
	decide(t, run, "approve", conveyorv1.DecisionApprove)
	decide(t, run, "production", conveyorv1.DecisionApprove)
	passStage(t, run, "production", "deploy")
	waitRun(t, run, conveyorv1.RunSucceeded, "production")

	g := NewWithT(t)
	jobs := runJobs(g, run, "")
	seen := map[string]bool{}
	for _, j := range jobs {
		key := j.Labels[conveyorv1.LabelStage] + "/" + j.Labels[conveyorv1.LabelJob]
		if seen[key] {
			t.Fatalf("duplicate Job for %s", key)
		}
		seen[key] = true
	}
	if len(jobs) != 6 {
		t.Fatalf("%d Jobs for a six-job run", len(jobs))
	}
}

// Editing the Pipeline mid-run leaves the run on its snapshot.
func TestPipelineEditedMidRun(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	p := seedPipeline(t, ns)
	run := newRun(t, ns, featureLogin)
	waitJob(t, run, "build", "compile")

	// The edit renames testing's jobs and makes staging automatic.
	NewWithT(t).Eventually(func(g Gomega) {
		cur := &conveyorv1.Pipeline{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(p), cur)).To(Succeed())
		cur.Spec.Stages[1].Jobs = []conveyorv1.JobSpec{{Name: "integration", Image: "busybox"}}
		// (An Environment lets no stage deploy by itself: staging now runs
		// in the run's own namespace.)
		cur.Spec.Stages[2].When, cur.Spec.Stages[2].Environment, cur.Spec.Stages[2].TriggerGroups = conveyorv1.WhenAuto, "", nil
		g.Expect(k8s.Update(context.Background(), cur)).To(Succeed())
	}).Should(Succeed())
	t.Log("Edited the Pipeline: testing runs job integration, staging is automatic")

	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	got := waitRun(t, run, conveyorv1.RunWaiting, "staging")
	if got.Status.PipelineGeneration != 1 {
		t.Fatalf("snapshot of generation %d, want 1", got.Status.PipelineGeneration)
	}
	for _, j := range runJobs(NewWithT(t), run, "testing") {
		if j.Labels[conveyorv1.LabelJob] == "integration" {
			t.Fatal("the run picked up the edited Pipeline")
		}
	}

	// A new run uses the edited Pipeline.
	run2 := newRun(t, ns, featureLogin)
	passStage(t, run2, "build", "compile")
	passStage(t, run2, "testing", "integration")
	waitJob(t, run2, "staging", "deploy")
}

// A run whose Pipeline does not exist says so, and starts when it appears.
func TestMissingPipeline(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	run := newRun(t, ns, featureLogin)
	NewWithT(t).Eventually(func(g Gomega) {
		r := &conveyorv1.PipelineRun{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), r)).To(Succeed())
		c := meta.FindStatusCondition(r.Status.Conditions, conveyorv1.ConditionStalled)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(conveyorv1.ReasonPipelineNotFound))
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunPending))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	t.Log("Run waits for its Pipeline; creating it")
	seedPipeline(t, ns)
	waitJob(t, run, "build", "compile")
}

// A branch outside the Pipeline's patterns is refused at admission with the
// allowed patterns; a run created before its Pipeline existed, for a ref the
// Pipeline then does not allow, fails with the same message.
func TestRefNotAllowed(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	early := newRun(t, ns, conveyorv1.GitRef{Branch: "hotfix_x"})
	seedPipeline(t, ns)
	_, err := createRunAs("dana", ns, conveyorv1.GitRef{Branch: "hotfix_x"})
	expectRefused(t, err, `branch "hotfix_x" is not allowed: the pipeline runs for branches matching feature_*, infra_*`)

	got := waitRun(t, early, conveyorv1.RunFailed, "")
	c := meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionStalled)
	if c == nil || c.Reason != conveyorv1.ReasonRefNotAllowed || !strings.Contains(c.Message, "feature_*, infra_*") {
		t.Fatalf("Stalled = %+v", c)
	}
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(runJobs(g, early, "")).To(BeEmpty())
	}).WithTimeout(time.Second).Should(Succeed())
}

// TestFinalizerAtCreate: the cleanup finalizer is on a run from its create
// when its Pipeline deploys outside the run's namespace (the mutating
// webhook), on none whose Pipeline stays in it, and the manager puts it on a
// run created before its Pipeline, before its first Job outside.
func TestFinalizerAtCreate(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	seedPipeline(t, ns)
	if run := newRun(t, ns, featureLogin); !slices.Contains(run.Finalizers, conveyorv1.CleanupFinalizer) {
		t.Fatalf("a run of a Pipeline deploying to staging was created with finalizers %v", run.Finalizers)
	}

	inside := newNamespace(t)
	seedPipelineWith(t, inside, func(p *conveyorv1.Pipeline) { p.Spec.Stages = p.Spec.Stages[:2] })
	run := newRun(t, inside, featureLogin)
	if len(run.Finalizers) != 0 {
		t.Fatalf("a run of a Pipeline that stays in its namespace was created with finalizers %v", run.Finalizers)
	}
	waitJob(t, run, "build", "compile")
	if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(run), run); err != nil {
		t.Fatal(err)
	}
	if len(run.Finalizers) != 0 {
		t.Fatalf("the manager put finalizers %v on a run that stays in its namespace", run.Finalizers)
	}

	early := newNamespace(t)
	run = newRun(t, early, featureLogin)
	if len(run.Finalizers) != 0 {
		t.Fatalf("a run created before its Pipeline has finalizers %v", run.Finalizers)
	}
	seedPipeline(t, early)
	waitJob(t, run, "build", "compile")
	NewWithT(t).Eventually(func(g Gomega) {
		r := &conveyorv1.PipelineRun{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), r)).To(Succeed())
		g.Expect(r.Finalizers).To(ContainElement(conveyorv1.CleanupFinalizer))
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

// A missing environment namespace gives a condition naming it, and the stage
// starts once the namespace exists; deleting the run deletes its Jobs in
// environment namespaces through the finalizer.
func TestEnvironmentNamespaceAndCleanup(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	envNS := "qa-" + ns
	openEnvironment(t, envNS)
	p := &conveyorv1.Pipeline{}
	p.Name, p.Namespace = "shop", ns
	p.Spec = conveyorv1.PipelineSpec{
		Refs:   conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
		Stages: []conveyorv1.Stage{{Name: "deploy", Environment: envNS, Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "alpine/helm:3"}}}},
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	run := newRun(t, ns, featureLogin)
	NewWithT(t).Eventually(func(g Gomega) {
		r := &conveyorv1.PipelineRun{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), r)).To(Succeed())
		c := meta.FindStatusCondition(r.Status.Conditions, conveyorv1.ConditionStalled)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(conveyorv1.ReasonNamespaceNotFound))
		g.Expect(c.Message).To(ContainSubstring(envNS))
		g.Expect(r.Finalizers).To(ContainElement("conveyor.dev/environment-jobs"))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	t.Logf("Run reports namespace %s missing; creating it", envNS)
	createNamespace(t, envNS)
	job := waitJob(t, run, "deploy", "helm")
	if job.Namespace != envNS || len(job.OwnerReferences) != 0 {
		t.Fatalf("Job %s/%s owners %v", job.Namespace, job.Name, job.OwnerReferences)
	}

	if err := k8s.Delete(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(isNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(job), &batchv1.Job{}))).To(BeTrue(), "Job still exists")
		g.Expect(isNotFound(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), &conveyorv1.PipelineRun{}))).To(BeTrue(), "run still exists")
	}).WithTimeout(10 * time.Second).Should(Succeed())
	t.Log("Deleted the run: its environment Job is gone")
}

// expectRefused checks that the API server refused a request with a message
// containing want.
func expectRefused(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("the API server accepted a request it must refuse (%q)", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("refused with %q, want a message containing %q", err, want)
	}
	t.Logf("Refused as expected: %v", err)
}

// waitApproval waits until the Approval's Ready condition has the reason.
func waitApproval(t *testing.T, a *conveyorv1.Approval, reason string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		ap := &conveyorv1.Approval{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(a), ap)).To(Succeed())
		c := meta.FindStatusCondition(ap.Status.Conditions, conveyorv1.ConditionReady)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(reason), c.Message)
		t.Logf("Approval %s (%s %s): %s: %s", a.Name, a.Spec.Decision, a.Spec.Stage, c.Reason, c.Message)
	}).WithTimeout(10 * time.Second).Should(Succeed())
}
