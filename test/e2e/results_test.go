package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// A build's result travels down the pipeline on a real cluster: the build's
// pod ends with the termination message a job that wrote its results file
// leaves (kwok plays the kubelet: see the local cluster's
// pod-complete-with-message stage), the manager reads it from the pod, and
// the deploy in namespace sandbox runs the digest the build wrote, in the
// region the run chose.
func TestResultReachesTheDeploy(t *testing.T) {
	ns := allowJobs(t, appIn(t, conveyorv1.PipelineSpec{
		Refs:   conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
		Params: []conveyorv1.ParamSpec{{Name: "region", Default: ptr.To("eu-west-1")}},
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "image", Image: "builder",
				Results: []conveyorv1.ResultSpec{{Name: "digest"}},
				PodMetadata: &conveyorv1.PodMetadata{Annotations: map[string]string{
					"pod-complete.stage.kwok.x-k8s.io/weight": "0",
					"conveyor.dev/fake-termination-message":   "# the build's results\ndigest=sha256:5eed\n",
				}}}}},
			{Name: "deploy", Environment: sandbox, Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "registry.local/app@$(stages.build.jobs.image.results.digest)",
				Args: []string{"upgrade", "--set", "region=$(params.region)"}}}},
		},
	}))
	run := startRun(t, ns)
	got := waitRun(t, run, 2*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunSucceeded))
	})
	build := got.Status.Stages[0].Jobs[0]
	if len(build.Results) != 1 || build.Results[0].Value != "sha256:5eed" {
		t.Fatalf("the build's results in the run's status: %+v", build.Results)
	}
	var deployImage, deployArgs string
	NewWithT(t).Eventually(func(g Gomega) {
		for _, j := range jobsOf(g, got) {
			if j.Labels[conveyorv1.LabelStage] == "deploy" {
				c := j.Spec.Template.Spec.Containers[0]
				deployImage, deployArgs = c.Image, strings.Join(c.Args, " ")
			}
		}
		g.Expect(deployImage).NotTo(BeEmpty())
	}).WithTimeout(10 * time.Second).Should(Succeed())
	if deployImage != "registry.local/app@sha256:5eed" || deployArgs != "upgrade --set region=eu-west-1" {
		t.Errorf("the deploy ran %s %s", deployImage, deployArgs)
	}
	// The pod in sandbox is the one the Job controller made from that spec.
	pods := podsOf(t, "sandbox", got)
	if len(pods) == 0 || pods[0] != "registry.local/app@sha256:5eed" {
		t.Errorf("the deploy's pods ran images %v", pods)
	}
	t.Logf("Run %s: build wrote digest %s; deploy ran %s %s", got.Name, build.Results[0].Value, deployImage, deployArgs)
}

// podsOf are the images of the run's pods in namespace ns.
func podsOf(t *testing.T, ns string, run *conveyorv1.PipelineRun) []string {
	t.Helper()
	list := &corev1.PodList{}
	if err := admin.List(context.Background(), list, client.InNamespace(ns), client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)}); err != nil {
		t.Fatal(err)
	}
	var images []string
	for _, p := range list.Items {
		images = append(images, p.Spec.Containers[0].Image)
	}
	return images
}

// An approval covers the digest it saw: a release approved with one build's
// digest whose deploy failed is rerun after the build changed; the rerun
// builds another digest, so the approval stage asks again (even with
// carryOverToReruns), and rob's new Approval records the new digest, which
// is what the deploy runs.
func TestChangedDigestNeedsANewApproval(t *testing.T) {
	ctx := context.Background()
	spec := func(digest string, deployFails bool) conveyorv1.PipelineSpec {
		deployPod := map[string]string{}
		if deployFails {
			deployPod["pod-container-running-failed.stage.kwok.x-k8s.io"] = "true"
		}
		return conveyorv1.PipelineSpec{
			Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
			Stages: []conveyorv1.Stage{
				{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "image", Image: "builder", Results: []conveyorv1.ResultSpec{{Name: "digest"}},
					PodMetadata: &conveyorv1.PodMetadata{Annotations: map[string]string{
						"pod-complete.stage.kwok.x-k8s.io/weight": "0", "conveyor.dev/fake-termination-message": "digest=" + digest}}}}},
				{Name: "approve", Approval: &conveyorv1.ApprovalGate{Groups: []string{"release-engineers"}, Required: 1, CarryOverToReruns: true}},
				{Name: "deploy", Environment: sandbox, Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "registry.local/app@$(stages.build.jobs.image.results.digest)",
					PodMetadata: &conveyorv1.PodMetadata{Labels: deployPod}}}},
			},
		}
	}
	ns := allowJobs(t, appIn(t, spec("sha256:aaaa", true)))
	// Release engineers decide approvals in the namespace.
	if err := admin.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "release-engineers", Namespace: ns},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "conveyor-release-engineer"},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: "release-engineers"}}}); err != nil {
		t.Fatal(err)
	}
	approveAs := func(run *conveyorv1.PipelineRun) *conveyorv1.Approval {
		t.Helper()
		a := &conveyorv1.Approval{ObjectMeta: metav1.ObjectMeta{GenerateName: run.Name + "-approve-", Namespace: ns},
			Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "approve", Decision: conveyorv1.DecisionApprove}}
		if err := personas["rob"].Create(ctx, a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	atGate := func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunWaiting))
		g.Expect(r.Status.CurrentStage).To(Equal("approve"))
	}

	first := startRun(t, ns)
	waitRun(t, first, 2*time.Minute, atGate)
	if a := approveAs(first); a.Spec.Run == nil || !hasValue(a.Spec.Run.Values, "sha256:aaaa") {
		t.Fatalf("rob's first Approval records %+v", a.Spec.Run)
	}
	waitRun(t, first, 3*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) { g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunFailed)) })

	// The build changes (another digest) and the deploy is fixed; a rerun.
	p := &conveyorv1.Pipeline{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, p); err != nil {
		t.Fatal(err)
	}
	p.Spec = spec("sha256:bbbb", false)
	if err := admin.Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	rerun := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Namespace: ns},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: first.Spec.PipelineRef, Git: first.Spec.Git, RerunOf: first.Name}}
	if err := admin.Create(ctx, rerun); err != nil {
		t.Fatal(err)
	}
	got := waitRun(t, rerun, 2*time.Minute, atGate)
	for _, ss := range got.Status.Stages {
		if ss.ReusedFrom != "" {
			t.Fatalf("the rerun reused stage %s of a build that changed", ss.Name)
		}
	}
	a := approveAs(rerun)
	if !hasValue(a.Spec.Run.Values, "sha256:bbbb") {
		t.Fatalf("rob's second Approval records %+v", a.Spec.Run.Values)
	}
	waitRun(t, rerun, 2*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) { g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunSucceeded)) })
	if images := podsOf(t, sandbox, rerun); len(images) == 0 || images[0] != "registry.local/app@sha256:bbbb" {
		t.Errorf("the rerun deployed %v", images)
	}
	t.Logf("Run %s approved digest sha256:aaaa (deploy failed); rerun %s built sha256:bbbb, waited for a new approval (%s), deployed it", first.Name, rerun.Name, a.Name)
}

func hasValue(vs []conveyorv1.ApprovedValue, v string) bool {
	for _, x := range vs {
		if x.Value == v {
			return true
		}
	}
	return false
}
