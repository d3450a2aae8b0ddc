package integration_test

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/admission"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/controllers/outbound"
	"github.com/conveyor-dev/conveyor/controllers/receiver"
	"github.com/conveyor-dev/conveyor/test/framework/manifests"
	"github.com/conveyor-dev/conveyor/test/framework/story"
)

var (
	env *envtest.Environment
	cfg *rest.Config
	k8s client.Client
	// environments are the seed's deploy namespaces, shared by all tests.
	environments = []string{"staging", "pre-production", "production", queueEnv}
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		fmt.Fprintln(os.Stderr, "KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds kube-apiserver and etcd")
		return 1
	}
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapcore.InfoLevel)))
	env = &envtest.Environment{
		CRDDirectoryPaths:     []string{"../../config/crd/bases"},
		ErrorIfCRDPathMissing: true,
		WebhookInstallOptions: envtest.WebhookInstallOptions{Paths: []string{"../../config/webhook/manifests.yaml"}},
	}
	var err error
	if cfg, err = env.Start(); err != nil {
		fmt.Fprintln(os.Stderr, "starting kube-apiserver and etcd:", err)
		return 1
	}
	defer func() { _ = env.Stop() }()
	if k8s, err = client.New(cfg, client.Options{Scheme: manager.Scheme()}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := spareManager(); err != nil {
		fmt.Fprintln(os.Stderr, "sparing the manager the release ledger's webhook:", err)
		return 1
	}
	for _, ns := range environments {
		if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := k8s.Create(context.Background(), openEnvironmentFor(queueEnv)); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The Environments Conveyor ships guard the seed's deploys.
	shipped, err := manifests.ReadFile("../../config/environments/seed_environments.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for _, u := range shipped {
		if err := k8s.Create(context.Background(), u); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	if err := setupPersonas(); err != nil {
		fmt.Fprintln(os.Stderr, "setting up users:", err)
		return 1
	}
	return m.Run()
}

// spareManager gives the installed webhooks the match conditions the
// installed configuration has (the release ledger's webhook is not called
// for the manager's writes), naming the user the tests' managers run as
// (cfg's). Everyone else's writes still reach the webhook: the ledger's
// tests write Releases as other users.
func spareManager() error {
	ctx := context.Background()
	self := &authenticationv1.SelfSubjectReview{}
	if err := k8s.Create(ctx, self); err != nil {
		return err
	}
	for _, c := range env.WebhookInstallOptions.ValidatingWebhooks {
		installed := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(c), installed); err != nil {
			return err
		}
		if err := manifests.SpareManager("../..", installed, self.Status.UserInfo.Username); err != nil {
			return err
		}
		if err := k8s.Update(ctx, installed); err != nil {
			return err
		}
	}
	return nil
}

// startManager starts a manager with Conveyor's controllers, as main does, and
// returns a function that stops it (also called when the test ends).
func startManager(t *testing.T) (stop func()) {
	t.Helper()
	_, stop = startManagerCache(t)
	return stop
}

// startManagerCache is startManager that also returns the manager's cache, for
// tests of what it holds.
func startManagerCache(t *testing.T) (_ cache.Cache, stop func()) {
	t.Helper()
	mgr, stop := startManagerWith(t)
	return mgr.GetCache(), stop
}

// startManagerWith is startManager that also returns the manager; each
// setup function may change the manager's setup options (as main's flags do).
func startManagerWith(t *testing.T, setup ...func(ctrl.Manager, *manager.SetupOptions)) (_ ctrl.Manager, stop func()) {
	t.Helper()
	return startManagerConfig(t, manager.Config{}, setup...)
}

// testGuard is the outbound allowlist of the tests' managers: loopback,
// where the tests' sinks and git providers listen, and example.com's hosts.
var testGuard = func() *outbound.Guard {
	g, err := outbound.Parse([]string{"127.0.0.0/8", "*.example.com"})
	if err != nil {
		panic(err)
	}
	return g
}()

// startManagerConfig is startManagerWith with the manager's configuration
// (main's flags) as c says; the test's webhook server and no metrics.
func startManagerConfig(t *testing.T, c manager.Config, setup ...func(ctrl.Manager, *manager.SetupOptions)) (_ ctrl.Manager, stop func()) {
	t.Helper()
	wh := env.WebhookInstallOptions
	c.MetricsAddr, c.ProbeAddr = "0", "0"
	c.WebhookHost, c.WebhookPort, c.WebhookCertDir = wh.LocalServingHost, wh.LocalServingPort, wh.LocalServingCertDir
	mgr, err := ctrl.NewManager(cfg, manager.Options(c))
	if err != nil {
		t.Fatal(err)
	}
	if err := admission.Setup(mgr, admission.Options{Guard: testGuard}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	opts := manager.SetupOptions{Controller: controller.Options{SkipNameValidation: ptr.To(true)}, Shard: c.Shard}
	for _, f := range setup {
		f(mgr, &opts)
	}
	if err := manager.Setup(ctx, mgr, opts); err != nil {
		t.Fatal(err)
	}
	// The push receiver's index, as main sets it up (tests serve the receiver themselves).
	if err := receiver.Setup(ctx, mgr, "0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			t.Errorf("manager: %v", err)
		}
	}()
	// The webhooks fail closed: wait until they serve before the test acts.
	NewWithT(t).Eventually(func() error {
		return mgr.GetWebhookServer().StartedChecker()(nil)
	}).WithTimeout(10 * time.Second).Should(Succeed())
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(func() {
		// Tests share the environment namespaces, and each test's manager
		// reconciles every run left by earlier tests: cancel this test's
		// runs in flight (while the webhooks still serve) and free the
		// environments, as if each test had a cluster of its own.
		endRuns(t)
		stop()
		envs := &conveyorv1.EnvironmentList{}
		if err := k8s.List(context.Background(), envs); err != nil {
			t.Errorf("listing Environments: %v", err)
		}
		for i := range envs.Items {
			env := &envs.Items[i]
			if env.Status.HolderUID == "" {
				continue
			}
			engine.SetHolder(&env.Status, nil, "", metav1.Now())
			if err := k8s.Status().Update(context.Background(), env); err != nil && !apierrors.IsNotFound(err) {
				t.Errorf("freeing environment %s: %v", env.Name, err)
			}
		}
	})
	return mgr, stop
}

// endRuns cancels every run that has not finished.
func endRuns(t *testing.T) {
	runs := &conveyorv1.PipelineRunList{}
	if err := k8s.List(context.Background(), runs); err != nil {
		t.Errorf("listing runs: %v", err)
		return
	}
	for i := range runs.Items {
		run := &runs.Items[i]
		if run.Status.Phase.Finished() || run.Spec.Cancelled || !run.DeletionTimestamp.IsZero() {
			continue
		}
		patch := client.MergeFrom(run.DeepCopy())
		run.Spec.Cancelled = true
		if err := k8s.Patch(context.Background(), run, patch); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("cancelling run %s/%s left by the test: %v", run.Namespace, run.Name, err)
		}
	}
}

// createNamespace creates a namespace by name.
func createNamespace(t *testing.T, name string) {
	t.Helper()
	if err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: productionAllowed}}); err != nil {
		t.Fatal(err)
	}
}

// queueEnv is an environment any Pipeline deploys to by itself: for the
// tests of the one-deploy-at-a-time queue.
const queueEnv = "review"

// openEnvironmentFor is an Environment that lets any Pipeline deploy to
// namespace ns, by itself or triggered by any persona.
func openEnvironmentFor(ns string) *conveyorv1.Environment {
	return &conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: ns}, Spec: conveyorv1.EnvironmentSpec{
		Namespace:     ns,
		Pipelines:     conveyorv1.PipelineSelector{NamespaceSelector: &metav1.LabelSelector{}},
		TriggerGroups: []string{"developers", "devops", "testers", "release-engineers"},
		AllowAuto:     true,
	}}
}

// openEnvironment creates openEnvironmentFor(ns) for one test.
func openEnvironment(t *testing.T, ns string) {
	t.Helper()
	env := openEnvironmentFor(ns)
	if err := k8s.Create(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), env) })
}

// productionAllowed labels a namespace whose Pipelines the shipped
// production Environment lets deploy.
var productionAllowed = map[string]string{story.ProductionLabel: "allowed"}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-", Labels: productionAllowed}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// seedPipeline creates the seed's pipeline from config/samples in namespace ns.
func seedPipeline(t *testing.T, ns string) *conveyorv1.Pipeline {
	t.Helper()
	return seedPipelineWith(t, ns, nil)
}

// seedPipelineWith creates the seed's Pipeline as change makes it.
func seedPipelineWith(t *testing.T, ns string, change func(*conveyorv1.Pipeline)) *conveyorv1.Pipeline {
	t.Helper()
	p := seedPipelineFrom(t)
	p.Namespace = ns
	if change != nil {
		change(p)
	}
	if err := k8s.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// seedPipelineFrom reads the seed's Pipeline from config/samples.
func seedPipelineFrom(t *testing.T) *conveyorv1.Pipeline {
	t.Helper()
	data, err := os.ReadFile("../../config/samples/pipeline.yaml")
	if err != nil {
		t.Fatal(err)
	}
	p := &conveyorv1.Pipeline{}
	if err := yaml.UnmarshalStrict(data, p); err != nil {
		t.Fatal(err)
	}
	return p
}

// newRun creates a PipelineRun of pipeline "shop" for the ref, as the admin.
func newRun(t *testing.T, ns string, git conveyorv1.GitRef) *conveyorv1.PipelineRun {
	t.Helper()
	run, err := createRun(k8s, ns, git)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("Created PipelineRun %s for %s", run.Name, engine.RefString(git))
	return run
}

// createRunAs creates a PipelineRun of pipeline "shop" as the named persona.
func createRunAs(who, ns string, git conveyorv1.GitRef) (*conveyorv1.PipelineRun, error) {
	return createRun(as(who), ns, git)
}

func createRun(c client.Client, ns string, git conveyorv1.GitRef) (*conveyorv1.PipelineRun, error) {
	run := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "shop-", Namespace: ns},
		Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"}, Git: git},
	}
	return run, c.Create(context.Background(), run)
}

// decide creates an Approval of the run's stage as the person the seed has
// act on it: a developer triggers staging, a tester pre-production, a release
// engineer decides approve, a DevOps engineer triggers production.
func decide(t *testing.T, run *conveyorv1.PipelineRun, stage string, d conveyorv1.ApprovalDecision) *conveyorv1.Approval {
	t.Helper()
	who := map[string]string{"staging": "dana", "pre-production": "tess", "approve": "rita", "production": "omar"}[stage]
	if who == "" {
		who = "omar"
	}
	a, err := decideAs(who, run, stage, d)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s created Approval %s: %s stage %s", who, a.Name, d, stage)
	return a
}

// decideAs creates an Approval of the run's stage as the named user.
//
// A person acts once the stage asks for it: while admission answers that the
// stage is not waiting yet (its run has not recorded the stages before it as
// passed), the request is made again, for up to 10 seconds.
func decideAs(who string, run *conveyorv1.PipelineRun, stage string, d conveyorv1.ApprovalDecision) (*conveyorv1.Approval, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		a, err := decideEarly(who, run, stage, d)
		if err == nil || !strings.Contains(err.Error(), "is not waiting for a decision yet") || time.Now().After(deadline) {
			return a, err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// decideEarly creates an Approval as who once, whether or not the stage waits.
func decideEarly(who string, run *conveyorv1.PipelineRun, stage string, d conveyorv1.ApprovalDecision) (*conveyorv1.Approval, error) {
	a := &conveyorv1.Approval{
		ObjectMeta: metav1.ObjectMeta{GenerateName: run.Name + "-" + stage + "-", Namespace: run.Namespace},
		Spec:       conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: stage, Decision: d},
	}
	return a, as(who).Create(context.Background(), a)
}

// runJobs lists the Jobs of a run, in every namespace, by the run's UID label.
func runJobs(g Gomega, run *conveyorv1.PipelineRun, stage string) []batchv1.Job {
	list := &batchv1.JobList{}
	sel := client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)}
	if stage != "" {
		sel[conveyorv1.LabelStage] = stage
	}
	g.Expect(k8s.List(context.Background(), list, sel)).To(Succeed())
	return list.Items
}

// waitJob waits for the Job of a run's stage and job and returns it.
func waitJob(t *testing.T, run *conveyorv1.PipelineRun, stage, job string) *batchv1.Job {
	t.Helper()
	var found *batchv1.Job
	NewWithT(t).Eventually(func(g Gomega) {
		for _, j := range runJobs(g, run, stage) {
			if j.Labels[conveyorv1.LabelJob] == job {
				found = j.DeepCopy()
			}
		}
		g.Expect(found).NotTo(BeNil(), "Job %s/%s of run %s", stage, job, run.Name)
	}).WithTimeout(30 * time.Second).Should(Succeed())
	return found
}

// finishJob sets a Job's status the way the Job controller does when its pod
// succeeded (reason "") or when it failed for the given reason. A Job that
// has finished so already is left as it is, as the Job controller leaves it
// (its start and completion times cannot change: written again a second
// later, the API server refuses them).
func finishJob(t *testing.T, job *batchv1.Job, failReason, failMessage string) {
	t.Helper()
	NewWithT(t).Eventually(func(g Gomega) {
		j := &batchv1.Job{}
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(job), j)).To(Succeed())
		if failReason == "" && j.Status.Succeeded > 0 && j.Status.CompletionTime != nil ||
			failReason != "" && slices.ContainsFunc(j.Status.Conditions, func(c batchv1.JobCondition) bool {
				return c.Type == batchv1.JobFailed && c.Status == corev1.ConditionTrue && c.Reason == failReason
			}) {
			return
		}
		now := metav1.Now()
		start := metav1.NewTime(now.Add(-time.Second))
		j.Status.StartTime = &start
		j.Status.Active = 0
		j.Status.Ready = ptr.To[int32](0)
		j.Status.Terminating = ptr.To[int32](0)
		if failReason == "" {
			j.Status.Succeeded = 1
			j.Status.CompletionTime = &now
			j.Status.Conditions = []batchv1.JobCondition{
				{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: "CompletionsReached", Message: "Reached expected number of succeeded pods", LastProbeTime: now, LastTransitionTime: now},
				{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, Reason: "CompletionsReached", Message: "Reached expected number of succeeded pods", LastProbeTime: now, LastTransitionTime: now},
			}
		} else {
			j.Status.Failed = 1
			j.Status.Conditions = []batchv1.JobCondition{
				{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: failReason, Message: failMessage, LastProbeTime: now, LastTransitionTime: now},
				{Type: batchv1.JobFailed, Status: corev1.ConditionTrue, Reason: failReason, Message: failMessage, LastProbeTime: now, LastTransitionTime: now},
			}
		}
		g.Expect(k8s.Status().Update(context.Background(), j)).To(Succeed())
	}).WithTimeout(10 * time.Second).Should(Succeed())
	outcome := "succeeded"
	if failReason != "" {
		outcome = "failed (" + failReason + ")"
	}
	t.Logf("Job %s/%s %s", job.Namespace, job.Name, outcome)
}

// passStage finishes every job of a stage successfully.
func passStage(t *testing.T, run *conveyorv1.PipelineRun, stage string, jobs ...string) {
	t.Helper()
	for _, j := range jobs {
		finishJob(t, waitJob(t, run, stage, j), "", "")
	}
}

// toApproveGate takes a tag run of the seed's pipeline through its first four
// stages, triggered by the seed's people, to the approve stage.
func toApproveGate(t *testing.T, run *conveyorv1.PipelineRun) {
	t.Helper()
	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	for _, stage := range []string{"staging", "pre-production"} {
		// People trigger a stage once it waits for them (an earlier trigger
		// starts it without a wait, which the metrics test tells apart).
		waitRun(t, run, conveyorv1.RunWaiting, stage)
		decide(t, run, stage, conveyorv1.DecisionApprove)
		passStage(t, run, stage, "deploy")
	}
	waitRun(t, run, conveyorv1.RunWaiting, "approve")
}

// throughProduction takes a tag run waiting at the approve stage to its
// end: a release engineer approves, DevOps triggers production, it deploys.
func throughProduction(t *testing.T, run *conveyorv1.PipelineRun) {
	t.Helper()
	decide(t, run, "approve", conveyorv1.DecisionApprove)
	waitRun(t, run, conveyorv1.RunWaiting, "production")
	decide(t, run, "production", conveyorv1.DecisionApprove)
	passStage(t, run, "production", "deploy")
	waitRun(t, run, conveyorv1.RunSucceeded, "production")
}

// waitRun waits until the run's phase and current stage are as given.
func waitRun(t *testing.T, run *conveyorv1.PipelineRun, phase conveyorv1.RunPhase, stage string) *conveyorv1.PipelineRun {
	t.Helper()
	got := &conveyorv1.PipelineRun{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(k8s.Get(context.Background(), client.ObjectKeyFromObject(run), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(phase), describe(got))
		g.Expect(got.Status.CurrentStage).To(Equal(stage), describe(got))
	}).WithTimeout(30 * time.Second).Should(Succeed())
	t.Logf("Run %s: %s", run.Name, describe(got))
	return got
}

// describe renders where a run stands in one line.
func describe(run *conveyorv1.PipelineRun) string {
	var stages []string
	for _, s := range run.Status.Stages {
		stages = append(stages, s.Name+"="+string(s.Phase))
	}
	ready := meta.FindStatusCondition(run.Status.Conditions, conveyorv1.ConditionReady)
	msg := ""
	if ready != nil {
		msg = ready.Reason + ": " + ready.Message
	}
	return fmt.Sprintf("phase %s at %s [%s] %s", run.Status.Phase, run.Status.CurrentStage, strings.Join(stages, " "), msg)
}

// stageOf returns the status of the named stage of the run, nil if it has none.
func stageOf(run *conveyorv1.PipelineRun, name string) *conveyorv1.StageStatus {
	for i := range run.Status.Stages {
		if run.Status.Stages[i].Name == name {
			return &run.Status.Stages[i]
		}
	}
	return nil
}

// isNotFound is for assertions on deleted objects.
func isNotFound(err error) bool { return apierrors.IsNotFound(err) }
