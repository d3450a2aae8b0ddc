package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// The sandbox Environment, edited from outside while a deploy waits (the
// real Job controller, pods by kwok): a deploy triggered during a freeze
// waits as Frozen; a policy tightened meanwhile (the commit must first have
// been to staging, where it never went) blocks it, naming the rule; once the
// policy is put back it waits for the window again, and its Job is created
// only after the window closed.
func TestEnvironmentPolicyHolds(t *testing.T) {
	ns := allowJobs(t, appIn(t, conveyorv1.PipelineSpec{
		Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "compile", Image: "golang:1.26"}}},
			{Name: "deploy", When: conveyorv1.WhenManual, TriggerGroups: []string{"devops"}, Environment: sandbox,
				Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "alpine/helm:3"}}},
		},
	}))
	if err := admin.Create(context.Background(), &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "conveyor-devops", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "conveyor-devops"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: "devops"}},
	}); err != nil {
		t.Fatal(err)
	}
	end := time.Now().Add(40 * time.Second).Truncate(time.Second)
	editSandbox(t, func(s *conveyorv1.EnvironmentSpec) {
		s.FreezeWindows = []conveyorv1.FreezeWindow{{Name: "e2e-freeze", Reason: "set from outside",
			Start: &metav1.Time{Time: time.Now().Add(-time.Minute)}, End: &metav1.Time{Time: end}}}
	})
	defer editSandbox(t, func(s *conveyorv1.EnvironmentSpec) { s.FreezeWindows = nil })

	run := startRun(t, ns)
	waitRun(t, run, time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunWaiting))
		g.Expect(r.Status.CurrentStage).To(Equal("deploy"))
	})
	trigger := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{GenerateName: run.Name + "-deploy-", Namespace: ns},
		Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "deploy"}}
	if err := personas["omar"].Create(context.Background(), trigger); err != nil {
		t.Fatal(err)
	}
	stage := func(phase conveyorv1.StagePhase, in string) {
		t.Helper()
		got := waitRun(t, run, 30*time.Second, func(g Gomega, r *conveyorv1.PipelineRun) {
			for _, ss := range r.Status.Stages {
				if ss.Name == "deploy" {
					g.Expect(ss.Phase).To(Equal(phase), ss.Message)
					g.Expect(ss.Message).To(ContainSubstring(in))
				}
			}
			g.Expect(jobsOf(g, r)).To(HaveLen(1), "only build's Job")
		})
		t.Logf("deploy is %s: %s", phase, got.Status.Stages[1].Message)
	}
	stage(conveyorv1.StageFrozen, "freeze window e2e-freeze until "+end.UTC().Format(time.RFC3339))

	editSandbox(t, func(s *conveyorv1.EnvironmentSpec) { s.Requires = []string{"staging"} })
	stage(conveyorv1.StageBlocked, "Environment sandbox (namespace sandbox), rule requires: commit abcdef1 has not been deployed to Environment staging")
	editSandbox(t, func(s *conveyorv1.EnvironmentSpec) { s.Requires = nil })
	stage(conveyorv1.StageFrozen, "e2e-freeze")

	got := waitRun(t, run, 2*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunSucceeded), describe(r))
	})
	for _, j := range jobsOf(NewWithT(t), got) {
		if j.Labels[conveyorv1.LabelStage] == "deploy" && j.CreationTimestamp.Time.Before(end) {
			t.Fatalf("the deploy's Job was created at %s, before the freeze ended at %s", j.CreationTimestamp, end)
		}
	}
	t.Logf("deploy ran after the window closed: %s", got.Status.Stages[1].Message)
}

// editSandbox changes the sandbox Environment as a cluster admin would.
func editSandbox(t *testing.T, change func(*conveyorv1.EnvironmentSpec)) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		env := &conveyorv1.Environment{}
		if err := admin.Get(context.Background(), client.ObjectKey{Name: sandbox}, env); err != nil {
			return err
		}
		change(&env.Spec)
		return admin.Update(context.Background(), env)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// describe is where a run stands, for a failure message.
func describe(r *conveyorv1.PipelineRun) string {
	var b strings.Builder
	b.WriteString(string(r.Status.Phase) + " at " + r.Status.CurrentStage)
	for _, ss := range r.Status.Stages {
		b.WriteString("; " + ss.Name + "=" + string(ss.Phase) + ": " + ss.Message)
	}
	return b.String()
}
