package integration_test

import (
	"context"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// digestPipeline: build writes the image digest it built; deploy runs that
// digest in the region a run chooses, for the change ticket it names.
func digestPipeline(ns string) *conveyorv1.Pipeline {
	return &conveyorv1.Pipeline{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns},
		Spec: conveyorv1.PipelineSpec{
			Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
			Params: []conveyorv1.ParamSpec{
				{Name: "region", Default: ptr.To("eu-west-1"), Enum: []string{"eu-west-1", "us-east-1"}},
				{Name: "ticket", Description: "the change ticket"},
			},
			Stages: []conveyorv1.Stage{
				{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "image", Image: "builder",
					Results: []conveyorv1.ResultSpec{{Name: "digest", Description: "the image digest built"}}}}},
				{Name: "deploy", Jobs: []conveyorv1.JobSpec{{Name: "rollout", Image: "registry.local/shop@$(stages.build.jobs.image.results.digest)",
					Args: []string{"--region=$(params.region)", "--ticket=$(params.ticket)"}}}},
			},
		},
	}
}

func runWithParams(c client.Client, ns string, params ...conveyorv1.Param) (*conveyorv1.PipelineRun, error) {
	run := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "shop-", Namespace: ns},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"},
			Git: conveyorv1.GitRef{Branch: "feature_x", Commit: "abc1234"}, Params: params},
	}
	return run, c.Create(context.Background(), run)
}

// succeedWithResults makes the Job's pod succeed with the termination
// message a job writes to $CONVEYOR_RESULTS (as the kubelet reports it),
// then the Job, as the Job controller would.
func succeedWithResults(t *testing.T, job *batchv1.Job, message string) {
	t.Helper()
	ctx := context.Background()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: job.Name + "-", Namespace: job.Namespace,
			Labels: map[string]string{batchv1.ControllerUidLabel: string(job.UID), batchv1.JobNameLabel: job.Name}},
		Spec: job.Spec.Template.Spec,
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	now := metav1.Now()
	pod.Status = corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{{
		Name: pod.Spec.Containers[0].Name, Image: pod.Spec.Containers[0].Image,
		State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed", Message: message, FinishedAt: now}},
	}}}
	if err := k8s.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	finishJob(t, job, "", "")
}

// TestParamsAndResults: parameters are checked at admission and reach the
// jobs; the build's digest, read from its pod, is recorded in the run's
// status and reaches the deploy's image; a build that wrote no digest fails
// saying so.
func TestParamsAndResults(t *testing.T) {
	ns := newNamespace(t)
	startManager(t)
	ctx := context.Background()

	// A Pipeline referring to what its runs will not have is refused.
	bad := digestPipeline(ns)
	bad.Spec.Stages[1].Jobs[0].Args = append(bad.Spec.Stages[1].Jobs[0].Args, "--zone=$(params.zone)")
	err := k8s.Create(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), `"$(params.zone)": no parameter of the Pipeline has that name`) {
		t.Fatalf("a Pipeline referring to an unknown parameter: %v", err)
	}
	if err := k8s.Create(ctx, digestPipeline(ns)); err != nil {
		t.Fatal(err)
	}

	// Runs whose params do not fit are refused, as dana would meet it.
	for _, c := range []struct {
		params []conveyorv1.Param
		want   string
	}{
		{nil, "spec.params: Required value: parameter ticket has no default"},
		{[]conveyorv1.Param{{Name: "ticket", Value: "CHG-1"}, {Name: "zone", Value: "b"}}, `spec.params[1].name: Unsupported value: "zone"`},
		{[]conveyorv1.Param{{Name: "ticket", Value: "CHG-1"}, {Name: "region", Value: "mars"}}, `Unsupported value: "mars": supported values: "eu-west-1", "us-east-1"`},
	} {
		if _, err := runWithParams(as("dana"), ns, c.params...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("run with params %v: %v, want %q", c.params, err, c.want)
		}
	}

	run, err := runWithParams(as("dana"), ns, conveyorv1.Param{Name: "ticket", Value: "CHG-7 $(params.region)"})
	if err != nil {
		t.Fatal(err)
	}
	// The params are part of the immutable spec.
	patched := run.DeepCopy()
	patched.Spec.Params[0].Value = "CHG-8"
	if err := as("dana").Update(ctx, patched); err == nil || !strings.Contains(err.Error(), "immutable") {
		t.Errorf("changing a run's params: %v, want a refusal", err)
	}

	build := waitJob(t, run, "build", "image")
	c := build.Spec.Template.Spec.Containers[0]
	env := map[string]string{}
	for _, e := range c.Env {
		env[e.Name] = e.Value
	}
	if env["CONVEYOR_PARAM_REGION"] != "eu-west-1" || env["CONVEYOR_PARAM_TICKET"] != "CHG-7 $$(params.region)" || env["CONVEYOR_RESULTS"] != "/dev/termination-log" {
		t.Errorf("the build's environment: %v", env)
	}
	succeedWithResults(t, build, "digest=sha256:feedbeef\n")

	rollout := waitJob(t, run, "deploy", "rollout").Spec.Template.Spec.Containers[0]
	if rollout.Image != "registry.local/shop@sha256:feedbeef" || strings.Join(rollout.Args, " ") != "--region=eu-west-1 --ticket=CHG-7 $$(params.region)" {
		t.Errorf("the deploy runs %s %q", rollout.Image, rollout.Args)
	}
	got := waitRun(t, run, conveyorv1.RunRunning, "deploy")
	if r := stageOf(got, "build").Jobs[0].Results; len(r) != 1 || r[0].Name != "digest" || r[0].Value != "sha256:feedbeef" {
		t.Errorf("the run's status records results %+v", r)
	}
	if len(got.Status.Params) != 2 || got.Status.Params[0] != (conveyorv1.Param{Name: "region", Value: "eu-west-1"}) {
		t.Errorf("the run's status records params %+v", got.Status.Params)
	}

	// A build that succeeds without writing its digest fails, saying so.
	// This time dana starts it with the plugin.
	start := []string{"start", "shop", "--branch", "feature_x", "--commit", "abc1234"}
	pluginRefused(t, "dana", ns, `Unsupported value: "zone"`, append(start, "-p", "ticket=CHG-9", "-p", "zone=b")...)
	pluginRefused(t, "dana", ns, "give a parameter as NAME=VALUE", append(start, "-p", "ticket")...)
	second := runFrom(t, ns, pluginOK(t, "dana", ns, append(start, "-p", "ticket=CHG-9")...))
	succeedWithResults(t, waitJob(t, second, "build", "image"), "built, but forgot the digest\n")
	failed := waitRun(t, second, conveyorv1.RunFailed, "build")
	js := stageOf(failed, "build").Jobs[0]
	if js.Reason != conveyorv1.ReasonResultMissing || !strings.Contains(js.Message, "the job wrote no result digest") {
		t.Errorf("the build without a digest: %s: %s", js.Reason, js.Message)
	}
	NewWithT(t).Consistently(func(g Gomega) {
		g.Expect(runJobs(g, second, "deploy")).To(BeEmpty())
	}).WithTimeout(2 * 1e9).Should(Succeed())
}

// TestApprovalRecordsWhatItApproves: the Approval of a gate after the build
// records the run's values (the digest built) and their digest, whatever the
// approver wrote there; the deploy after it runs that digest.
func TestApprovalRecordsWhatItApproves(t *testing.T) {
	ns := newNamespace(t)
	startManager(t)
	ctx := context.Background()
	p := digestPipeline(ns)
	p.Spec.Stages = append([]conveyorv1.Stage{p.Spec.Stages[0],
		{Name: "approve", Approval: &conveyorv1.ApprovalGate{Groups: []string{"release-engineers"}, Required: 2}}}, p.Spec.Stages[1:]...)
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	run, err := runWithParams(as("dana"), ns, conveyorv1.Param{Name: "ticket", Value: "CHG-11"})
	if err != nil {
		t.Fatal(err)
	}
	succeedWithResults(t, waitJob(t, run, "build", "image"), "digest=sha256:abcd\n")
	waitRun(t, run, conveyorv1.RunWaiting, "approve")

	// rob writes values of his own into spec.run: the API server's record wins.
	a := &conveyorv1.Approval{
		ObjectMeta: metav1.ObjectMeta{GenerateName: run.Name + "-approve-", Namespace: ns},
		Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: "approve", Decision: conveyorv1.DecisionApprove,
			Run: &conveyorv1.RecordedRun{UID: string(run.UID), ValuesDigest: "sha256:forged", Values: []conveyorv1.ApprovedValue{{Ref: "params.ticket", Value: "CHG-0"}}}},
	}
	if err := as("rob").Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	want := []conveyorv1.ApprovedValue{
		{Ref: "params.region", Value: "eu-west-1"}, {Ref: "params.ticket", Value: "CHG-11"},
		{Ref: "stages.build.jobs.image.results.digest", Value: "sha256:abcd"},
	}
	if got := a.Spec.Run.Values; len(got) != 3 || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] {
		t.Errorf("the Approval records values %+v, want %+v", got, want)
	}
	if d := a.Spec.Run.ValuesDigest; !strings.HasPrefix(d, "sha256:") || d == "sha256:forged" {
		t.Errorf("the Approval records digest %q", d)
	}
	// rita approves with the plugin, which shows what she approved.
	out := pluginOK(t, "rita", ns, "approve", run.Name, "-m", "digest checked")
	if !strings.Contains(out, "for the run's values ("+a.Spec.Run.ValuesDigest+")") || !strings.Contains(out, "stages.build.jobs.image.results.digest = sha256:abcd") {
		t.Errorf("the plugin's approve does not show the values approved:\n%s", out)
	}
	rollout := waitJob(t, run, "deploy", "rollout").Spec.Template.Spec.Containers[0]
	if rollout.Image != "registry.local/shop@sha256:abcd" {
		t.Errorf("the deploy after the approval runs %s", rollout.Image)
	}
}

// TestJobVolumesAtAdmission: a deploy job may mount only the Secrets and
// ConfigMaps its Environment lists (they are the environment namespace's,
// not the Pipeline's), never a PersistentVolumeClaim; a job in the run's
// namespace mounts its own; the Job's pod gets the volumes.
func TestJobVolumesAtAdmission(t *testing.T) {
	ns, envNS := newNamespace(t), newNamespace(t)
	openEnvironment(t, envNS)
	startManager(t)
	ctx := context.Background()
	pipeline := func() *conveyorv1.Pipeline {
		p := digestPipeline(ns)
		p.Spec.Stages[0].Jobs[0].Volumes = []conveyorv1.JobVolume{{Name: "cache", PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "go-cache"}}}
		p.Spec.Stages[0].Jobs[0].VolumeMounts = []corev1.VolumeMount{{Name: "cache", MountPath: "/cache"}}
		p.Spec.Stages[1].Environment = envNS
		p.Spec.Stages[1].Jobs[0].Volumes = []conveyorv1.JobVolume{{Name: "creds", Secret: &corev1.SecretVolumeSource{SecretName: "deploy-token"}}}
		p.Spec.Stages[1].Jobs[0].VolumeMounts = []corev1.VolumeMount{{Name: "creds", MountPath: "/var/run/creds", ReadOnly: true}}
		return p
	}
	// The Environment lists nothing yet: the deploy's Secret is refused.
	err := k8s.Create(ctx, pipeline())
	if err == nil || !strings.Contains(err.Error(), "rule mounts: job rollout uses Secret deploy-token (volume creds); a pod mounts only objects of its own namespace, "+envNS) {
		t.Fatalf("a deploy mounting an unlisted Secret: %v", err)
	}
	// A claim in an environment stage is refused by the schema, saying why.
	withClaim := pipeline()
	withClaim.Spec.Stages[1].Jobs[0].Volumes = append(withClaim.Spec.Stages[1].Jobs[0].Volumes,
		conveyorv1.JobVolume{Name: "data", PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "go-cache"}})
	if err := k8s.Create(ctx, withClaim); err == nil || !strings.Contains(err.Error(), "cannot mount a persistentVolumeClaim: a claim belongs to the run's namespace") {
		t.Fatalf("a deploy mounting a claim: %v", err)
	}
	// Two sources in one volume.
	twoSources := pipeline()
	twoSources.Spec.Stages[0].Jobs[0].Volumes[0].EmptyDir = &corev1.EmptyDirVolumeSource{}
	if err := k8s.Create(ctx, twoSources); err == nil || !strings.Contains(err.Error(), "a volume has exactly one of") {
		t.Fatalf("a volume with two sources: %v", err)
	}

	env := &conveyorv1.Environment{}
	if err := k8s.Get(ctx, client.ObjectKey{Name: envNS}, env); err != nil {
		t.Fatal(err)
	}
	env.Spec.Mounts = &conveyorv1.EnvironmentMounts{Secrets: []string{"deploy-token"}}
	if err := k8s.Update(ctx, env); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Create(ctx, pipeline()); err != nil {
		t.Fatalf("a deploy mounting a Secret its Environment lists: %v", err)
	}
	run, err := runWithParams(k8s, ns, conveyorv1.Param{Name: "ticket", Value: "CHG-2"})
	if err != nil {
		t.Fatal(err)
	}
	build := waitJob(t, run, "build", "image")
	if v := build.Spec.Template.Spec.Volumes; len(v) != 1 || v[0].PersistentVolumeClaim == nil || v[0].PersistentVolumeClaim.ClaimName != "go-cache" {
		t.Errorf("the build's pod volumes %+v", v)
	}
	succeedWithResults(t, build, "digest=sha256:1\n")
	deploy := waitJob(t, run, "deploy", "rollout")
	if deploy.Namespace != envNS || len(deploy.Spec.Template.Spec.Volumes) != 1 || deploy.Spec.Template.Spec.Volumes[0].Secret.SecretName != "deploy-token" {
		t.Errorf("the deploy's Job %s/%s volumes %+v", deploy.Namespace, deploy.Name, deploy.Spec.Template.Spec.Volumes)
	}
}

// TestPipelineMountsOnlyWhatItsAuthorMayRead: the manager creates the Jobs,
// so a Pipeline admin who may not read a Secret cannot have a job mount it
// (or pull with it); once RBAC lets her get it, she can.
func TestPipelineMountsOnlyWhatItsAuthorMayRead(t *testing.T) {
	ns := newNamespace(t)
	startManager(t)
	ctx := context.Background()
	p := digestPipeline(ns)
	p.Spec.Stages[0].Jobs[0].ImagePullSecrets = []corev1.LocalObjectReference{{Name: "ci-registry"}}
	err := as("pia").Create(ctx, p.DeepCopy())
	if err == nil || !strings.Contains(err.Error(), `job image uses Secret ci-registry (imagePullSecrets), and user "pia" may not get it in namespace `+ns) {
		t.Fatalf("pia's Pipeline pulling with a Secret she may not read: %v", err)
	}
	letGetSecret(t, ns, "pia", "ci-registry")
	NewWithT(t).Eventually(func() error { return as("pia").Create(ctx, p.DeepCopy()) }).WithTimeout(10 * time.Second).Should(Succeed())
	// Another Secret in a volume is still hers to be refused.
	// (Read again on a conflict: the manager writes the new Pipeline's status.)
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		got := &conveyorv1.Pipeline{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
			return err
		}
		got.Spec.Stages[0].Jobs[0].Volumes = []conveyorv1.JobVolume{{Name: "db", Secret: &corev1.SecretVolumeSource{SecretName: "db-password"}}}
		return as("pia").Update(ctx, got)
	})
	if err == nil || !strings.Contains(err.Error(), "uses Secret db-password (volume db)") {
		t.Fatalf("pia's update mounting db-password: %v", err)
	}
}
