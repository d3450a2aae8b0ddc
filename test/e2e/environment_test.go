package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/test/framework/envcheck"
	"github.com/conveyor-dev/conveyor/test/framework/localcluster"
)

// Two tag runs reach production at the same time: one deploys, the other is
// Queued with the holder named, then deploys after it. A watch of the
// environment's namespace (sandbox, where any Pipeline may deploy by itself)
// checks, for the whole test, that their Jobs (run by the real Job
// controller, pods by kwok) never overlapped.
func TestOneDeployAtATimeInProduction(t *testing.T) {
	wc, err := client.NewWithWatch(cluster.RestConfig("admin"), client.Options{Scheme: localcluster.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	overlap, err := envcheck.Watch(ctx, wc, sandbox)
	if err != nil {
		t.Fatal(err)
	}

	ns := allowJobs(t, appIn(t, conveyorv1.PipelineSpec{
		Refs: conveyorv1.PipelineRefs{Tags: []string{"v*"}},
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "compile", Image: "golang:1.26"}}},
			{Name: "production", Environment: sandbox, Jobs: []conveyorv1.JobSpec{{Name: "deploy", Image: "alpine/helm:3", PodMetadata: slow("8s")}}},
		},
	}))
	var runs []*conveyorv1.PipelineRun
	for _, tag := range []string{"v1.0.0", "v1.0.1"} {
		run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Namespace: ns},
			Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "app"}, Git: conveyorv1.GitRef{Tag: tag, Commit: "abcdef1"}}}
		if err := admin.Create(context.Background(), run); err != nil {
			t.Fatal(err)
		}
		runs = append(runs, run)
	}
	t.Logf("Created runs %s and %s", runs[0].Name, runs[1].Name)

	// One of them deploys; the other is queued behind it.
	var holder, queued *conveyorv1.PipelineRun
	NewWithT(t).Eventually(func(g Gomega) {
		var got [2]*conveyorv1.PipelineRun
		for i, r := range runs {
			got[i] = &conveyorv1.PipelineRun{}
			g.Expect(admin.Get(context.Background(), client.ObjectKeyFromObject(r), got[i])).To(Succeed())
		}
		if got[1].Status.Phase == conveyorv1.RunQueued {
			got[0], got[1] = got[1], got[0]
		}
		g.Expect(got[0].Status.Phase).To(Equal(conveyorv1.RunQueued))
		g.Expect(got[1].Status.Phase).To(Equal(conveyorv1.RunRunning))
		g.Expect(got[1].Status.CurrentStage).To(Equal("production"))
		queued, holder = got[0], got[1]
	}).WithTimeout(2 * time.Minute).WithPolling(100 * time.Millisecond).Should(Succeed())
	stage := queued.Status.Stages[1]
	t.Logf("Run %s deploys; run %s is %s: %s", holder.Name, queued.Name, queued.Status.Phase, stage.Message)
	if stage.HeldBy != ns+"/"+holder.Name || !strings.Contains(stage.Message, "in use by run "+ns+"/"+holder.Name) {
		t.Errorf("queued stage: heldBy %q message %q", stage.HeldBy, stage.Message)
	}

	for _, r := range runs {
		got := waitRun(t, r, 3*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
			g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunSucceeded))
		})
		t.Logf("Run %s succeeded: production from %s to %s", got.Name, got.Status.Stages[1].StartTime, got.Status.Stages[1].CompletionTime)
	}
	first, second := waitRun(t, holder, time.Second, func(Gomega, *conveyorv1.PipelineRun) {}), waitRun(t, queued, time.Second, func(Gomega, *conveyorv1.PipelineRun) {})
	if second.Status.Stages[1].StartTime.Before(first.Status.Stages[1].CompletionTime) {
		t.Errorf("the queued run's deploy started (%s) before the holder's ended (%s)", second.Status.Stages[1].StartTime, first.Status.Stages[1].CompletionTime)
	}
	cancel()
	max, worst, events, werr := overlap.Result()
	t.Logf("production: at most %d unfinished Job(s) at once over %d Job events", max, events)
	if werr != nil || max != 1 || events < 4 {
		t.Errorf("one deploy at a time: %d unfinished Jobs at once (%s) over %d events, watch error %v", max, worst, events, werr)
	}
}
