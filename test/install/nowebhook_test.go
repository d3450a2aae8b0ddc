package install

import (
	"context"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/test/framework/localcluster"
)

// Without the admission webhooks (a manager started by `make run`, or one
// whose webhook configuration was removed), nobody records who created an
// Approval: the manager fails closed, and such an Approval triggers nothing.
func TestUnrecordedApprovalCountsForNothing(t *testing.T) {
	cfg, _ := startBareManager(t, manager.Config{MetricsAddr: "0", ProbeAddr: "0"})
	ctx := context.Background()
	c, err := client.New(cfg, client.Options{Scheme: localcluster.Scheme()})
	if err != nil {
		t.Fatal(err)
	}

	p := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: "default"}, Spec: conveyorv1.PipelineSpec{
		Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
		Stages: []conveyorv1.Stage{{Name: "deploy", When: conveyorv1.WhenManual, TriggerGroups: []string{"developers"},
			Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "alpine/helm:3"}}}},
	}}
	run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: "shop-1", Namespace: "default"}, Spec: conveyorv1.PipelineRunSpec{
		PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: conveyorv1.GitRef{Branch: "feature_x", Commit: "abc1234"}}}
	for _, o := range []client.Object{p, run} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(run), run)).To(Succeed())
		g.Expect(run.Status.Phase).To(Equal(conveyorv1.RunWaiting))
	}).WithTimeout(20 * time.Second).Should(Succeed())

	a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{Name: "trigger", Namespace: "default"}, Spec: conveyorv1.ApprovalSpec{
		PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "deploy", Decision: conveyorv1.DecisionApprove}}
	if err := c.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(a), a)).To(Succeed())
		ready := meta.FindStatusCondition(a.Status.Conditions, conveyorv1.ConditionReady)
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Reason).To(Equal(conveyorv1.ReasonApproverNotRecorded))
		t.Logf("Approval %s: %s: %s", a.Name, ready.Reason, ready.Message)
	}).WithTimeout(20 * time.Second).Should(Succeed())
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(c.Get(ctx, client.ObjectKeyFromObject(run), run)).To(Succeed())
		g.Expect(run.Status.Phase).To(Equal(conveyorv1.RunWaiting))
		jobs := &batchv1.JobList{}
		g.Expect(c.List(ctx, jobs, client.InNamespace("default"))).To(Succeed())
		g.Expect(jobs.Items).To(BeEmpty())
	}).WithTimeout(3 * time.Second).Should(Succeed())
}
