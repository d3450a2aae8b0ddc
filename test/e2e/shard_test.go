package e2e

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestShardsEndToEnd: two Pipelines deploying to one environment, one
// handled by the first manager and one by shard b's (its Pipeline labelled
// b). Shard b's manager is killed while its run's build runs and started
// again. Both runs succeed with exactly one Job per job (no run handled
// twice), the shard's Jobs carry its label, and the two deploys never
// overlap in the environment (the real Job controller's start and
// completion times).
func TestShardsEndToEnd(t *testing.T) {
	ctx := context.Background()
	nsA, nsB := pipeline(t, slow("4s")), pipeline(t, slow("4s"))
	p := &conveyorv1.Pipeline{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: nsB, Name: "app"}, p); err != nil {
		t.Fatal(err)
	}
	base := client.MergeFrom(p.DeepCopy())
	p.Labels = map[string]string{conveyorv1.LabelShard: "b"}
	if err := admin.Patch(ctx, p, base); err != nil {
		t.Fatal(err)
	}
	runA, runB := startRun(t, nsA), startRun(t, nsB)
	if runA.Labels[conveyorv1.LabelShard] != "" || runB.Labels[conveyorv1.LabelShard] != "b" {
		t.Fatalf("shard labels: run A %v, run B %v; want none and b (from the Pipeline)", runA.Labels, runB.Labels)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(jobsOf(g, runB)).NotTo(BeEmpty())
	}).WithTimeout(2 * time.Minute).Should(Succeed())
	t.Log("Killing shard b's manager (SIGKILL) while run B's first Job runs")
	shardB = killAndRestart(t, shardB)
	t.Log("Started shard b's manager again")

	deploys := map[string]batchv1.Job{}
	for _, run := range []*conveyorv1.PipelineRun{runA, runB} {
		waitRun(t, run, 3*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
			g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunSucceeded))
		})
		jobs := jobsOf(NewWithT(t), run)
		if len(jobs) != 2 {
			t.Fatalf("run %s: %d Jobs, want 2 (one per job)", run.Name, len(jobs))
		}
		for _, j := range jobs {
			if j.Labels[conveyorv1.LabelShard] != run.Labels[conveyorv1.LabelShard] {
				t.Errorf("Job %s/%s shard label %q, its run's %q", j.Namespace, j.Name, j.Labels[conveyorv1.LabelShard], run.Labels[conveyorv1.LabelShard])
			}
			if j.Namespace == sandbox {
				deploys[run.Name] = j
			}
		}
	}
	a, b := deploys[runA.Name], deploys[runB.Name]
	if a.Status.StartTime == nil || a.Status.CompletionTime == nil || b.Status.StartTime == nil || b.Status.CompletionTime == nil {
		t.Fatalf("deploy Jobs without start or completion times: %+v, %+v", a.Status, b.Status)
	}
	if a.Status.StartTime.Before(b.Status.CompletionTime) && b.Status.StartTime.Before(a.Status.CompletionTime) {
		t.Errorf("the deploys overlap in %s: %s ran %v–%v, %s ran %v–%v", sandbox,
			a.Name, a.Status.StartTime, a.Status.CompletionTime, b.Name, b.Status.StartTime, b.Status.CompletionTime)
	}
	t.Logf("Deploys in %s: %s %v–%v, %s %v–%v", sandbox, a.Name, a.Status.StartTime.Format(time.TimeOnly), a.Status.CompletionTime.Format(time.TimeOnly),
		b.Name, b.Status.StartTime.Format(time.TimeOnly), b.Status.CompletionTime.Format(time.TimeOnly))
}
