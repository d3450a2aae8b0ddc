package integration_test

import (
	"context"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/manager"
)

// startShard starts a second manager beside the test's, as a shard of the
// chart does: it handles what the label selector matches, serves no
// webhooks and leaves Environments' status to the first.
func startShard(t *testing.T, selector string) ctrl.Manager {
	mgr, _ := startShardStoppable(t, selector)
	return mgr
}

// startShardStoppable is startShard that also returns a function stopping
// the shard's manager (also called when the test ends).
func startShardStoppable(t *testing.T, selector string) (ctrl.Manager, func()) {
	t.Helper()
	shard, err := manager.ParseShard(selector)
	if err != nil {
		t.Fatal(err)
	}
	mgr, err := ctrl.NewManager(cfg, manager.Options(manager.Config{MetricsAddr: "0", ProbeAddr: "0", Shard: shard}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := manager.Setup(ctx, mgr, manager.SetupOptions{Controller: controller.Options{SkipNameValidation: ptr.To(true)},
		Shard: shard, NoEnvironmentStatus: true}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("shard manager: %v", err)
		}
	}()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return mgr, stop
}

// startTwoShards starts the test's manager for the runs without a shard
// label (serving the webhooks) and a second for shard b, as the chart does
// with sharding.shards={b}.
func startTwoShards(t *testing.T) (main, b ctrl.Manager) {
	t.Helper()
	return startFirstShard(t), startShard(t, conveyorv1.LabelShard+"=b")
}

// startFirstShard starts the test's manager for the runs without a shard
// label; it serves the webhooks.
func startFirstShard(t *testing.T) ctrl.Manager {
	t.Helper()
	unlabelled, err := manager.ParseShard("!" + conveyorv1.LabelShard)
	if err != nil {
		t.Fatal(err)
	}
	mgr, _ := startManagerConfig(t, manager.Config{Shard: unlabelled})
	return mgr
}

// cachedRuns are the names of the runs in ns a manager's cache holds.
func cachedRuns(g Gomega, mgr ctrl.Manager, ns string) []string {
	list := &conveyorv1.PipelineRunList{}
	g.Expect(mgr.GetCache().List(context.Background(), list, client.InNamespace(ns))).To(Succeed())
	var names []string
	for _, r := range list.Items {
		names = append(names, r.Name)
	}
	return names
}

// blueAndGreen makes a namespace with two deployPipelines: blue, of the
// first manager, and green, labelled for shard b.
func blueAndGreen(t *testing.T) string {
	t.Helper()
	ns := newNamespace(t)
	deployPipeline(t, ns, "blue", "")
	deployPipeline(t, ns, "green", "")
	green := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "green"}}
	if err := k8s.Patch(context.Background(), green, client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"conveyor.dev/shard":"b"}}}`))); err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestShardsSplitTheRuns: two managers side by side, one for unlabelled runs
// and one for shard b. A run takes its Pipeline's shard at admission,
// whatever its creator wrote; its Jobs and Approvals follow it; each manager
// holds and handles only its own runs; the environment lock, in the API
// server, keeps one deploy at a time in an environment both shards deploy
// to; and nobody moves a run or an Approval to another shard.
func TestShardsSplitTheRuns(t *testing.T) {
	main, b := startTwoShards(t)
	watchStaging(t)
	ns := blueAndGreen(t)

	// The creator's label does not choose the shard: the Pipeline's does.
	forged := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "blue-forged", Labels: map[string]string{conveyorv1.LabelShard: "b"}},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "blue"},
			Git: conveyorv1.GitRef{Branch: "main", Commit: "abc123"}},
	}
	if err := k8s.Create(context.Background(), forged); err != nil {
		t.Fatal(err)
	}
	runs := []*conveyorv1.PipelineRun{forged}
	for _, name := range []string{"green-1", "blue-1", "green-2"} {
		runs = append(runs, deployRun(t, ns, name[:len(name)-2], name))
	}
	for _, run := range runs {
		want, ok := map[string]string{"green-1": "b", "green-2": "b"}[run.Name]
		if got, has := run.Labels[conveyorv1.LabelShard]; got != want || has != ok {
			t.Fatalf("run %s: shard label %q (set %v), want %q (set %v)", run.Name, got, has, want, ok)
		}
	}

	finishAll(t, runs)
	for _, run := range runs {
		for _, j := range runJobs(NewWithT(t), run, "") {
			if j.Labels[conveyorv1.LabelShard] != run.Labels[conveyorv1.LabelShard] {
				t.Errorf("Job %s of run %s: shard label %q, want the run's %q", j.Name, run.Name, j.Labels[conveyorv1.LabelShard], run.Labels[conveyorv1.LabelShard])
			}
		}
	}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(cachedRuns(g, main, ns)).To(ConsistOf("blue-forged", "blue-1"))
		g.Expect(cachedRuns(g, b, ns)).To(ConsistOf("green-1", "green-2"))
	}).WithTimeout(10 * time.Second).Should(Succeed())

	// Nobody moves a run to another shard, its creator and admins included.
	for _, patch := range []string{`{"metadata":{"labels":{"conveyor.dev/shard":null}}}`, `{"metadata":{"labels":{"conveyor.dev/shard":"c"}}}`} {
		err := k8s.Patch(context.Background(), runs[1].DeepCopy(), client.RawPatch(types.MergePatchType, []byte(patch)))
		expectRefused(t, err, "label conveyor.dev/shard cannot change once set")
	}
	err := k8s.Patch(context.Background(), runs[2].DeepCopy(), client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"conveyor.dev/shard":"b"}}}`)))
	expectRefused(t, err, "label conveyor.dev/shard cannot change once set")
}

// finishAll plays the Job controller for the runs' Jobs until every run
// succeeded: each Job that appears is completed.
func finishAll(t *testing.T, runs []*conveyorv1.PipelineRun) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		for _, run := range runs {
			for _, j := range runJobs(g, run, "") {
				if j.Status.Succeeded == 0 {
					finishJob(t, &j, "", "")
				}
			}
		}
		for _, run := range runs {
			got := &conveyorv1.PipelineRun{}
			g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), got)).To(Succeed())
			g.Expect(got.Status.Phase).To(Equal(conveyorv1.RunSucceeded), describe(got))
		}
	}).WithTimeout(60 * time.Second).WithPolling(200 * time.Millisecond).Should(Succeed())
}

// TestShardTakesItsApprovals: a release of a Pipeline in shard b goes through
// its gates, handled by shard b alone: each Approval carries the run's shard
// (whatever its author wrote), so shard b sees it; the other manager never
// holds the run. Shard b's manager is replaced mid-run (a restart, as a
// rollout does) and the new one carries the run on.
func TestShardTakesItsApprovals(t *testing.T) {
	main := startFirstShard(t)
	_, stopB := startShardStoppable(t, conveyorv1.LabelShard+"=b")
	ns := newNamespace(t)
	seedPipelineWith(t, ns, func(p *conveyorv1.Pipeline) { p.Labels = map[string]string{conveyorv1.LabelShard: "b"} })
	run := newRun(t, ns, v140)
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	// dana labels her trigger for the other shard: admission puts it in the run's.
	a := &conveyorv1.Approval{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "trigger-", Namespace: ns, Labels: map[string]string{conveyorv1.LabelShard: "c"}},
		Spec:       conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "staging", Decision: conveyorv1.DecisionApprove},
	}
	if err := as("dana").Create(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	if a.Labels[conveyorv1.LabelShard] != "b" {
		t.Fatalf("Approval's shard label %q, want the run's b", a.Labels[conveyorv1.LabelShard])
	}
	staging := waitJob(t, run, "staging", "deploy")
	stopB()
	finishJob(t, staging, "", "") // while no manager handles shard b
	b := startShard(t, conveyorv1.LabelShard+"=b")
	waitRun(t, run, conveyorv1.RunWaiting, "pre-production")
	decide(t, run, "pre-production", conveyorv1.DecisionApprove)
	passStage(t, run, "pre-production", "deploy")
	waitRun(t, run, conveyorv1.RunWaiting, "approve")
	throughProduction(t, run)
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(cachedRuns(g, main, ns)).To(BeEmpty())
		g.Expect(cachedRuns(g, b, ns)).To(ConsistOf(run.Name))
	}).WithTimeout(time.Second).Should(Succeed())
	list := &conveyorv1.ApprovalList{}
	if err := k8s.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, ap := range list.Items {
		if ap.Labels[conveyorv1.LabelShard] != "b" {
			t.Errorf("Approval %s: shard label %q, want b", ap.Name, ap.Labels[conveyorv1.LabelShard])
		}
	}
	if len(list.Items) != 4 {
		t.Errorf("%d Approvals, want 4", len(list.Items))
	}
	err := k8s.Patch(context.Background(), &list.Items[0], client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"conveyor.dev/shard":null}}}`)))
	expectRefused(t, err, "label conveyor.dev/shard cannot change once set")
	var jobs batchv1.JobList
	if err := k8s.List(context.Background(), &jobs, client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID), conveyorv1.LabelShard: "b"}); err != nil || len(jobs.Items) != 6 {
		t.Errorf("%d Jobs of the run carry shard b (%v), want 6", len(jobs.Items), err)
	}
}

// TestStaleLockCopyTakesNothing: a manager takes an environment's lock from
// its own last copy of the Environment, without reading it first (the queue
// handoff's shortcut). Another shard takes the lock meanwhile: the copy is
// behind, names a holder that is done, and the take must be refused and
// read again, leaving the run queued behind the other shard's deploy, never
// beside it. When that deploy ends, the run deploys.
func TestStaleLockCopyTakesNothing(t *testing.T) {
	startTwoShards(t)
	watchStaging(t)
	ns := blueAndGreen(t)

	// The first manager takes the lock for blue-1 and keeps that Environment.
	blue1 := deployRun(t, ns, "blue", "blue-1")
	finishJob(t, waitJob(t, blue1, "deploy", "helm"), "", "")
	waitRun(t, blue1, conveyorv1.RunSucceeded, "deploy")
	// Shard b takes it from blue-1 for green-1: the first manager's copy is
	// now behind.
	green1 := deployRun(t, ns, "green", "green-1")
	greenJob := waitJob(t, green1, "deploy", "helm")
	// blue-2's manager finds blue-1 done in its copy; the update is refused.
	blue2 := deployRun(t, ns, "blue", "blue-2")
	waitQueued(t, blue2, ns+"/green-1")

	finishJob(t, greenJob, "", "")
	waitRun(t, green1, conveyorv1.RunSucceeded, "deploy")
	// blue-2 is woken when shard b gives the lock back in the Environment
	// (TestLockGivenBackWakesTheHead), or else at its periodic recheck.
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(runJobs(g, blue2, "deploy")).To(HaveLen(1))
	}).WithTimeout(engine.QueuedRecheck + 15*time.Second).Should(Succeed())
}

// TestShardKeepsTheLedgerWhileWebhooksAreDown: the manager serving the
// webhooks stops while shard b's tag run deploys. The shard still records
// the deploy in the run's Release and the run succeeds: the release
// ledger's webhook is not called for the manager's own writes (with it
// called, the write failed closed and the run waited for the webhooks).
// Anyone else's Release write is refused meanwhile.
func TestShardKeepsTheLedgerWhileWebhooksAreDown(t *testing.T) {
	unlabelled, err := manager.ParseShard("!" + conveyorv1.LabelShard)
	if err != nil {
		t.Fatal(err)
	}
	_, stopMain := startManagerConfig(t, manager.Config{Shard: unlabelled})
	startShard(t, conveyorv1.LabelShard+"=b")
	ns := newNamespace(t)
	p := &conveyorv1.Pipeline{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop", Labels: map[string]string{conveyorv1.LabelShard: "b"}},
		Spec: conveyorv1.PipelineSpec{
			Refs: conveyorv1.PipelineRefs{Tags: []string{"v*"}},
			Stages: []conveyorv1.Stage{{Name: "deploy", Environment: queueEnv,
				Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "alpine/helm:3"}}}},
		},
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	run := newRun(t, ns, v140)
	deploy := waitJob(t, run, "deploy", "helm")
	release(t, ns, v140.Tag, func(g Gomega, rel *conveyorv1.Release) { g.Expect(rel.Spec.Commit).To(Equal(v140.Commit)) })
	stopMain()
	t.Log("Stopped the manager serving the webhooks")
	finishJob(t, deploy, "", "")
	waitRun(t, run, conveyorv1.RunSucceeded, "deploy")
	rel := release(t, ns, v140.Tag, func(g Gomega, rel *conveyorv1.Release) {
		g.Expect(rel.Status.Environments).To(HaveLen(1))
		g.Expect(rel.Status.LastEnvironment).To(Equal(queueEnv))
	})
	forged := rel.DeepCopy()
	forged.Status.Verdict = conveyorv1.VerdictApproved
	expectRefused(t, as("ada").Update(context.Background(), forged), "failed calling webhook")
	// The webhooks back, for the cleanup's cancellations.
	startFirstShard(t)
}
