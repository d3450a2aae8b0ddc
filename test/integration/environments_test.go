package integration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/test/framework/envcheck"
)

// deployPipeline creates a Pipeline with one stage that deploys to staging
// by itself, with the given queue order.
func deployPipeline(t *testing.T, ns, name string, queue conveyorv1.EnvironmentQueue) {
	t.Helper()
	p := &conveyorv1.Pipeline{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: conveyorv1.PipelineSpec{
			EnvironmentQueue: queue,
			Refs:             conveyorv1.PipelineRefs{Branches: []string{"*"}},
			Stages: []conveyorv1.Stage{{Name: "deploy", Environment: queueEnv,
				Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "alpine/helm:3"}}}},
		},
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// deployRun creates a run of a deployPipeline. Runs are queued by creation
// time, in whole seconds: it waits a second after creating so the next run is
// strictly newer.
func deployRun(t *testing.T, ns, pipeline, name string) *conveyorv1.PipelineRun {
	t.Helper()
	run := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: pipeline},
			Git: conveyorv1.GitRef{Branch: "main", Commit: "abc123"}},
	}
	if err := k8s.Create(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	return run
}

// watchStaging watches the staging namespace's Jobs for the whole test and
// checks at its end that no two were ever unfinished at once.
func watchStaging(t *testing.T) {
	t.Helper()
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	o, err := envcheck.Watch(ctx, wc, queueEnv)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		max, worst, events, err := o.Result()
		t.Logf("staging: at most %d unfinished Job(s) at once over %d Job events", max, events)
		if err != nil || max > 1 || events == 0 {
			t.Errorf("one deploy at a time broken in staging: %d Jobs at once (%s), %d events, watch error %v", max, worst, events, err)
		}
	})
}

// waitQueued waits until a run is queued for staging behind holder ("" when
// the environment is free and another run goes first) and checks it has no Job.
func waitQueued(t *testing.T, run *conveyorv1.PipelineRun, holder string) *conveyorv1.PipelineRun {
	t.Helper()
	got := waitRun(t, run, conveyorv1.RunQueued, "deploy")
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), got)).To(Succeed())
		g.Expect(stageOf(got, "deploy").HeldBy).To(Equal(holder), describe(got))
	}).WithTimeout(30 * time.Second).Should(Succeed())
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(runJobs(g, run, "deploy")).To(BeEmpty(), "a queued run has a Job")
	}).WithTimeout(time.Second).Should(Succeed())
	return got
}

// queueTest starts a manager and a namespace with deployPipelines of the
// given names (queue order OldestFirst), and watches the queue's environment
// for overlapping deploys; it returns the namespace.
func queueTest(t *testing.T, pipelines ...string) string {
	t.Helper()
	startManager(t)
	ns := newNamespace(t)
	for _, p := range pipelines {
		deployPipeline(t, ns, p, "")
	}
	watchStaging(t)
	return ns
}

// deploysLast has run last deploy and succeed, and checks that run never
// deploys.
func deploysLast(t *testing.T, last, never *conveyorv1.PipelineRun, why string) {
	t.Helper()
	finishJob(t, waitJob(t, last, "deploy", "helm"), "", "")
	waitRun(t, last, conveyorv1.RunSucceeded, "deploy")
	neverDeploys(t, never, why)
}

// lockHandovers is the manager's count of lock handovers in the queue's
// environment.
func lockHandovers(t *testing.T) float64 {
	return sample(t, "conveyor_environment_lock_handovers_total", map[string]string{"environment": queueEnv})
}

// queueOfThree has run web-a of Pipeline web deploy to the queue's
// environment, then queues a run of Pipeline second and run web-c behind it.
func queueOfThree(t *testing.T, ns, second string) (a, b, c *conveyorv1.PipelineRun, jobA *batchv1.Job) {
	t.Helper()
	a = deployRun(t, ns, "web", "web-a")
	jobA = waitJob(t, a, "deploy", "helm")
	b = deployRun(t, ns, second, second+"-b")
	waitQueued(t, b, ns+"/web-a")
	c = deployRun(t, ns, "web", "web-c")
	waitQueued(t, c, ns+"/web-a")
	return a, b, c, jobA
}

// cancelRun cancels a run (spec.cancelled) and waits until it has ended.
func cancelRun(t *testing.T, run *conveyorv1.PipelineRun, stage string) {
	t.Helper()
	if err := k8s.Patch(context.Background(), run.DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancelled":true}}`))); err != nil {
		t.Fatal(err)
	}
	waitRun(t, run, conveyorv1.RunCancelled, stage)
}

// neverDeploys checks for a second that a run has no Job.
func neverDeploys(t *testing.T, run *conveyorv1.PipelineRun, why string) {
	t.Helper()
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(runJobs(g, run, "")).To(BeEmpty(), why)
	}).WithTimeout(time.Second).Should(Succeed())
}

// TestEnvironmentQueueOldestFirst: across two Pipelines, one deploy runs in
// staging at a time; the others are Queued with the holder named, and go in
// the order their runs were created; the gauge counts them; the
// Environment's status names the holder.
func TestEnvironmentQueueOldestFirst(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	deployPipeline(t, ns, "web", "")
	deployPipeline(t, ns, "api", conveyorv1.QueueOldestFirst)
	watchStaging(t)

	a, b, c, jobA := queueOfThree(t, ns, "api")
	holderA := ns + "/web-a"
	queued := waitQueued(t, b, holderA)
	if msg := readyMessage(queued); !strings.Contains(msg, "environment "+queueEnv+" is in use by run "+holderA+" (stage deploy)") {
		t.Errorf("queued run's Ready message: %q", msg)
	}

	if holder := lockHolder(t); holder != holderA+" deploy" {
		t.Fatalf("lock holder and stage %q, want %s deploy", holder, holderA)
	}
	NewWithT(t).Eventually(func() float64 {
		return sample(t, "conveyor_environment_queued_deploys", map[string]string{"environment": queueEnv})
	}).WithTimeout(10 * time.Second).Should(BeEquivalentTo(2))

	// a ends: b, the older of the queued, deploys; c now waits for b.
	finishJob(t, jobA, "", "")
	waitRun(t, a, conveyorv1.RunSucceeded, "deploy")
	jobB := waitJob(t, b, "deploy", "helm")
	waitQueued(t, c, ns+"/api-b")
	running := waitRun(t, b, conveyorv1.RunRunning, "deploy")
	if st := stageOf(running, "deploy"); st.HeldBy != "" || st.StartTime == nil || st.StartTime.Time.Before(jobB.CreationTimestamp.Add(-time.Second)) {
		t.Errorf("deploying stage: heldBy %q start %v (Job created %v)", st.HeldBy, st.StartTime, jobB.CreationTimestamp)
	}
	NewWithT(t).Eventually(func() float64 {
		return sample(t, "conveyor_environment_queued_deploys", map[string]string{"environment": queueEnv})
	}).WithTimeout(10 * time.Second).Should(BeEquivalentTo(1))

	// b fails: the environment is free again all the same, and c deploys.
	finishJob(t, jobB, "BackoffLimitExceeded", "Job has reached the specified backoff limit")
	waitRun(t, b, conveyorv1.RunFailed, "deploy")
	finishJob(t, waitJob(t, c, "deploy", "helm"), "", "")
	waitRun(t, c, conveyorv1.RunSucceeded, "deploy")
	// The last deploy's record gave the lock back: nobody holds it.
	if holder := lockHolder(t); holder != " " {
		t.Errorf("lock holder after the queue emptied: %q", holder)
	}
	if n := sample(t, "conveyor_environment_queued_deploys", map[string]string{"environment": queueEnv}); n != 0 {
		t.Errorf("queued deploys after the queue emptied: %v", n)
	}
	if n := sample(t, "conveyor_environment_queue_wait_seconds", map[string]string{"environment": queueEnv}); n < 2 {
		t.Errorf("queue waits observed: %v, want at least 2", n)
	}
}

// TestEnvironmentQueueNewestFirst: with NewestFirst, a newer queued run of the
// same Pipeline supersedes the older queued one, which ends Cancelled with
// reason Superseded and never deploys; cancelling the holder frees the
// environment.
func TestEnvironmentQueueNewestFirst(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	deployPipeline(t, ns, "web", conveyorv1.QueueNewestFirst)
	watchStaging(t)

	a := deployRun(t, ns, "web", "web-a")
	waitJob(t, a, "deploy", "helm")
	b := deployRun(t, ns, "web", "web-b")
	waitQueued(t, b, ns+"/web-a")
	c := deployRun(t, ns, "web", "web-c")

	superseded := waitRun(t, b, conveyorv1.RunCancelled, "deploy")
	if reason := readyReason(superseded); reason != conveyorv1.ReasonSuperseded || !strings.Contains(readyMessage(superseded), "run "+ns+"/web-c") {
		t.Fatalf("superseded run: reason %s message %q", reason, readyMessage(superseded))
	}
	waitQueued(t, c, ns+"/web-a")

	// Cancelling the holder deletes its Job and frees staging for c.
	cancelRun(t, a, "deploy")
	deploysLast(t, c, b, "the superseded run deployed")
}

// TestEnvironmentStaleLock: a lock whose holder is gone is taken over.
func TestEnvironmentStaleLock(t *testing.T) {
	startManager(t)
	ns := newNamespace(t)
	deployPipeline(t, ns, "web", "")
	setLockHolder(t, &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "deleted-run", UID: "gone"}}, "deploy")
	a := deployRun(t, ns, "web", "web-a")
	job := waitJob(t, a, "deploy", "helm")
	finishJob(t, job, "", "")
	waitRun(t, a, conveyorv1.RunSucceeded, "deploy")
}

func readyReason(run *conveyorv1.PipelineRun) string {
	if c := meta.FindStatusCondition(run.Status.Conditions, conveyorv1.ConditionReady); c != nil {
		return c.Reason
	}
	return ""
}

func readyMessage(run *conveyorv1.PipelineRun) string {
	if c := meta.FindStatusCondition(run.Status.Conditions, conveyorv1.ConditionReady); c != nil {
		return c.Message
	}
	return ""
}

// TestOverlapCheckBites: the watch that checks one deploy at a time does see
// two unfinished Jobs at once when there are.
func TestOverlapCheckBites(t *testing.T) {
	ns := newNamespace(t)
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o, err := envcheck.Watch(ctx, wc, ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"one", "two"} {
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{conveyorv1.LabelRunUID: "x"}},
			Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
				Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}},
		}
		if err := k8s.Create(context.Background(), job); err != nil {
			t.Fatal(err)
		}
	}
	NewWithT(t).Eventually(func() int {
		max, _, _, _ := o.Result()
		return max
	}).WithTimeout(10 * time.Second).Should(Equal(2))
}

// TestStaleEnvironmentCopyIsReadAgain: the manager keeps its last copy of
// the Environment holding a lock, to take the lock without reading it
// first. Someone else writes the Environment's status meanwhile (here a
// holder that is gone, as a crashed shard would leave it): the next run's
// update of the copy is refused, and the run reads the Environment again,
// finds the holder gone, and deploys.
func TestStaleEnvironmentCopyIsReadAgain(t *testing.T) {
	ns := queueTest(t, "web")
	a := deployRun(t, ns, "web", "web-a")
	finishJob(t, waitJob(t, a, "deploy", "helm"), "", "")
	waitRun(t, a, conveyorv1.RunSucceeded, "deploy")
	setLockHolder(t, &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "crashed", UID: "crashed-uid"}}, "deploy")
	b := deployRun(t, ns, "web", "web-b")
	finishJob(t, waitJob(t, b, "deploy", "helm"), "", "")
	done := waitRun(t, b, conveyorv1.RunSucceeded, "deploy")
	env := &conveyorv1.Environment{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: queueEnv}, env); err != nil {
		t.Fatal(err)
	}
	if env.Status.LastDeploy == nil || env.Status.LastDeploy.Run != ns+"/web-b" || env.Status.Holder != "" {
		t.Errorf("Environment after b: last deploy %+v, holder %q; run: %s", env.Status.LastDeploy, env.Status.Holder, describe(done))
	}
}

// TestRecreatedEnvironmentKeepsTheLock: an Environment deleted and created
// again while a deploy runs there starts with an empty status, which names
// no holder. The next run must not deploy beside the running one: it waits
// until that deploy ends, then deploys. The manager is restarted after the
// Environment is created again, so that it has no copy of the old one (which
// would name the holder).
func TestRecreatedEnvironmentKeepsTheLock(t *testing.T) {
	stop := startManager(t)
	ns := newNamespace(t)
	deployPipeline(t, ns, "web", "")
	watchStaging(t)
	ctx := context.Background()
	a := deployRun(t, ns, "web", "web-a")
	jobA := waitJob(t, a, "deploy", "helm")
	env := &conveyorv1.Environment{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: queueEnv}, env); err != nil {
		t.Fatal(err)
	}
	if env.Status.HolderUID != string(a.UID) {
		t.Fatalf("a deploys, and the Environment names %q as the holder", env.Status.Holder)
	}
	again := &conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: env.Name, Labels: env.Labels}, Spec: env.Spec}
	if err := k8s.Delete(ctx, env); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func() error { return k8s.Create(ctx, again.DeepCopy()) }).WithTimeout(10 * time.Second).Should(Succeed())
	stop()
	startManager(t)
	b := deployRun(t, ns, "web", "web-b")
	waitQueued(t, b, ns+"/web-a")
	neverDeploys(t, b, "b deployed beside a once the Environment was created again")
	finishJob(t, jobA, "", "")
	waitRun(t, a, conveyorv1.RunSucceeded, "deploy")
	finishJob(t, waitJob(t, b, "deploy", "helm"), "", "")
	waitRun(t, b, conveyorv1.RunSucceeded, "deploy")
}

// TestDeletedHolderLetsGo: a run deleted while it deploys gives its lock
// back before it goes, so that the Environment does not name a run that is
// gone; a run queued behind it is handed the lock and deploys.
func TestDeletedHolderLetsGo(t *testing.T) {
	ns := queueTest(t, "web")
	ctx := context.Background()
	a := deployRun(t, ns, "web", "web-a")
	waitJob(t, a, "deploy", "helm")
	if holder := lockHolder(t); holder != ns+"/web-a deploy" {
		t.Fatalf("a deploys, and the lock names %q", holder)
	}
	if err := k8s.Delete(ctx, a); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func() string { return lockHolder(t) }).WithTimeout(30 * time.Second).Should(Equal(" "))
	b := deployRun(t, ns, "web", "web-b")
	c := deployRun(t, ns, "web", "web-c")
	waitQueued(t, c, ns+"/web-b")
	if err := k8s.Delete(ctx, b); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func() string { return lockHolder(t) }).WithTimeout(30 * time.Second).Should(Equal(ns + "/web-c deploy"))
	finishJob(t, waitJob(t, c, "deploy", "helm"), "", "")
	waitRun(t, c, conveyorv1.RunSucceeded, "deploy")
}

// TestLongRunNameHoldsTheLock: a run's name may have 253 characters, and
// the lock and the deploy record name it with its namespace: longer than a
// name. The run takes the lock, deploys, and is recorded.
func TestLongRunNameHoldsTheLock(t *testing.T) {
	ns := queueTest(t, "web")
	name := "web-" + strings.Repeat("x", 249)
	a := deployRun(t, ns, "web", name)
	waitJob(t, a, "deploy", "helm")
	if holder := lockHolder(t); holder != ns+"/"+name+" deploy" {
		t.Fatalf("lock holder %q", holder)
	}
	finishJob(t, waitJob(t, a, "deploy", "helm"), "", "")
	waitRun(t, a, conveyorv1.RunSucceeded, "deploy")
	env := &conveyorv1.Environment{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: queueEnv}, env); err != nil {
		t.Fatal(err)
	}
	if env.Status.LastDeploy == nil || env.Status.LastDeploy.Run != ns+"/"+name {
		t.Errorf("last deploy %+v, want run %s/%s", env.Status.LastDeploy, ns, name)
	}
}

// lockHolder is the holder and stage the queue environment's status names
// ("namespace/name stage"; " " when nobody holds the lock).
func lockHolder(t *testing.T) string {
	t.Helper()
	env := &conveyorv1.Environment{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Name: queueEnv}, env); err != nil {
		t.Fatal(err)
	}
	return env.Status.Holder + " " + env.Status.HolderStage
}

// setLockHolder writes the queue environment's lock to name run's stage, as
// a manager would (a cluster admin's client: only they and Conveyor may
// write an Environment's status).
func setLockHolder(t *testing.T, run *conveyorv1.PipelineRun, stage string) {
	t.Helper()
	NewWithT(t).Eventually(func() error {
		env := &conveyorv1.Environment{}
		if err := k8s.Get(context.Background(), client.ObjectKey{Name: queueEnv}, env); err != nil {
			return err
		}
		engine.SetHolder(&env.Status, run, stage, metav1.Now())
		return k8s.Status().Update(context.Background(), env)
	}).WithTimeout(10 * time.Second).Should(Succeed())
}

// TestHandedLockGoesOn: when a deploy ends, the manager hands its lock to
// the queue's head in the same reconcile (the head need not take it). A head
// that then cannot start (here a ResourceQuota refuses every Job in the
// environment) keeps the lock while the others wait, and nothing deploys
// twice. Cancelled, it hands the lock on to the next run, which deploys once
// Jobs may be created again; the cancelled run never deploys.
func TestHandedLockGoesOn(t *testing.T) {
	ns := queueTest(t, "web")
	ctx := context.Background()

	a, b, c, jobA := queueOfThree(t, ns, "web")

	// No Job may be created in the environment: the quota's status is
	// written as the quota controller would.
	quota := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Namespace: queueEnv, Name: "no-jobs"},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"count/jobs.batch": resource.MustParse("0")}}}
	if err := k8s.Create(ctx, quota); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), quota) })
	quota.Status = corev1.ResourceQuotaStatus{Hard: quota.Spec.Hard, Used: corev1.ResourceList{"count/jobs.batch": resource.MustParse("0")}}
	if err := k8s.Status().Update(ctx, quota); err != nil {
		t.Fatal(err)
	}

	before := lockHandovers(t)
	finishJob(t, jobA, "", "")
	waitRun(t, a, conveyorv1.RunSucceeded, "deploy")
	holder := func(g Gomega) string {
		env := &conveyorv1.Environment{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Name: queueEnv}, env)).To(Succeed())
		return env.Status.Holder + " " + env.Status.HolderStage
	}
	NewWithT(t).Eventually(holder).WithTimeout(30 * time.Second).Should(Equal(ns + "/web-b deploy"))
	if n := lockHandovers(t); n != before+1 {
		t.Errorf("lock handovers: %v, want %v (a's end hands the lock to b)", n, before+1)
	}
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(holder(g)).To(Equal(ns + "/web-b deploy"))
		g.Expect(runJobs(g, b, "deploy")).To(BeEmpty(), "b has a Job despite the quota")
		g.Expect(runJobs(g, c, "deploy")).To(BeEmpty(), "c deployed while b holds the lock")
	}).WithTimeout(2 * time.Second).Should(Succeed())

	cancelRun(t, b, "deploy")
	NewWithT(t).Eventually(holder).WithTimeout(30 * time.Second).Should(Equal(ns + "/web-c deploy"))
	if n := lockHandovers(t); n != before+2 {
		t.Errorf("lock handovers: %v, want %v (b's cancel hands the lock to c)", n, before+2)
	}
	if err := k8s.Delete(ctx, quota); err != nil {
		t.Fatal(err)
	}
	deploysLast(t, c, b, "the cancelled run deployed")
}

// TestHandedLockGivenBack: the queue's head is handed the lock when the
// deploy before it ends, but the policy changed while it was queued (its
// Pipeline may no longer deploy there): it goes Blocked and passes the lock
// on to the next run, which deploys, instead of keeping the environment
// from everyone while blocked.
func TestHandedLockGivenBack(t *testing.T) {
	ns := queueTest(t, "web", "api")
	ctx := context.Background()

	a, b, c, jobA := queueOfThree(t, ns, "api")

	// Only this namespace's web Pipeline may deploy there from now on.
	env := &conveyorv1.Environment{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: queueEnv}, env); err != nil {
		t.Fatal(err)
	}
	was := env.Spec.Pipelines
	t.Cleanup(func() {
		// b first ends: once the policy is restored it would deploy, after
		// the manager has stopped, and leave its Job to the next tests.
		cancelRun(t, b, "deploy")
		NewWithT(t).Eventually(func(g Gomega) {
			e := &conveyorv1.Environment{}
			g.Expect(k8s.Get(context.Background(), client.ObjectKey{Name: queueEnv}, e)).To(Succeed())
			e.Spec.Pipelines = was
			g.Expect(k8s.Update(context.Background(), e)).To(Succeed())
		}).WithTimeout(10 * time.Second).Should(Succeed())
	})
	env.Spec.Pipelines = conveyorv1.PipelineSelector{Names: []string{ns + "/web"}}
	if err := k8s.Update(ctx, env); err != nil {
		t.Fatal(err)
	}

	before := lockHandovers(t)
	finishJob(t, jobA, "", "")
	waitRun(t, a, conveyorv1.RunSucceeded, "deploy")
	jobC := waitJob(t, c, "deploy", "helm")
	blocked := waitRun(t, b, conveyorv1.RunWaiting, "deploy")
	if st := stageOf(blocked, "deploy"); st.Phase != conveyorv1.StageBlocked {
		t.Errorf("b's deploy stage: %s, want Blocked; run: %s", st.Phase, describe(blocked))
	}
	if n := lockHandovers(t); n != before+2 {
		t.Errorf("lock handovers: %v, want %v (a's end to b, b's block to c)", n, before+2)
	}
	if holder := lockHolder(t); holder != ns+"/web-c deploy" {
		t.Errorf("lock holder %q, want %s/web-c deploy; blocked run: %s", holder, ns, describe(blocked))
	}
	finishJob(t, jobC, "", "")
	waitRun(t, c, conveyorv1.RunSucceeded, "deploy")
	neverDeploys(t, b, "the blocked run deployed")
}
