// Package e2e runs Conveyor against a local control plane with the real
// kube-controller-manager (Job controller, garbage collector), kube-scheduler
// and kwok, with the manager as a separate process: what only a real control
// plane shows.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/gomega"
	"go.uber.org/zap/zapcore"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/cmd/kubectl-conveyor/cli"
	"github.com/conveyor-dev/conveyor/test/framework/localcluster"
	"github.com/conveyor-dev/conveyor/test/framework/story"
)

var (
	cluster    *localcluster.Cluster
	admin      client.Client
	personas   = map[string]client.Client{}
	managerBin string
	manager    *localcluster.Manager
	// shardB is a second manager, for the runs labelled conveyor.dev/shard=b,
	// as the chart runs shards: every test runs with two shards up.
	shardB *localcluster.Manager
	root   string
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	logf.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true), zap.Level(zapcore.InfoLevel)))
	binDir := os.Getenv("E2E_BIN_DIR")
	if binDir == "" {
		fmt.Fprintln(os.Stderr, "E2E_BIN_DIR is not set: run the end-to-end tests with 'make test' or 'make e2e', which build the control plane")
		return 1
	}
	var err error
	if root, err = filepath.Abs("../.."); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "conveyor-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	managerBin = filepath.Join(tmp, "manager")
	if out, err := exec.Command("go", "build", "-o", managerBin, root).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the manager: %v\n%s", err, out)
		return 1
	}
	ctx := context.Background()
	stages, _ := filepath.Glob(filepath.Join(binDir, "kwok-stages", "*.yaml"))
	cluster, err = localcluster.Start(ctx, localcluster.Options{BinDir: binDir, Users: localcluster.DefaultUsers, StageFiles: stages, Log: os.Stderr})
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the local cluster:", err)
		return 1
	}
	failed := true
	defer func() {
		cluster.Stop()
		if failed {
			cluster.TailLogs(os.Stderr, 30)
			fmt.Fprintf(os.Stderr, "Component logs kept in %s/logs\n", cluster.Dir)
			return
		}
		_ = cluster.Remove()
	}()
	webhookPort, _ := localcluster.FreePort()
	probePort, _ := localcluster.FreePort()
	receiverPort, _ := localcluster.FreePort()
	if err := cluster.InstallConveyor(ctx, root, webhookPort); err != nil {
		fmt.Fprintln(os.Stderr, "installing Conveyor:", err)
		return 1
	}
	if manager, err = cluster.StartManager(ctx, managerBin, webhookPort, probePort, receiverPort, "--watch-label-selector=!"+conveyorv1.LabelShard); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	shardProbe, _ := localcluster.FreePort()
	if shardB, err = cluster.StartShardManager(ctx, managerBin, "b", shardProbe); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	opts := &client.Options{Scheme: localcluster.Scheme()}
	if admin, err = cluster.Client("admin", opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := openSandbox(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "creating the sandbox environment:", err)
		return 1
	}
	for _, u := range localcluster.DefaultUsers {
		if personas[u.Name], err = cluster.Client(u.Name, opts); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	code := m.Run()
	failed = code != 0
	return code
}

// tlog writes the story into the test log, a line at a time.
type tlog struct {
	t   *testing.T
	buf []byte
}

func (w *tlog) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		w.t.Log(string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
}

// The seed's story, played as the personas with the real Job controller: every
// refusal and every stage as the seed says.
func TestSeedStory(t *testing.T) {
	if testing.Short() {
		t.Skip("the story takes minutes")
	}
	s := &story.Story{Admin: admin, Kubeconfig: cluster.Kubeconfig, Out: &tlog{t: t}, Root: root, Timeout: 3 * time.Minute}
	ctx := context.Background()
	if err := cluster.AllowJobs(ctx, story.Namespace); err != nil {
		t.Fatal(err)
	}
	if err := s.SetScene(ctx); err != nil {
		t.Fatal(err)
	}
	res, err := s.Play(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []conveyorv1.RunPhase{conveyorv1.RunSucceeded, conveyorv1.RunSucceeded, conveyorv1.RunRejected, conveyorv1.RunSucceeded}
	if len(res.Runs) != len(want) {
		t.Fatalf("the story played %d runs, want %d", len(res.Runs), len(want))
	}
	for i, r := range res.Runs {
		if r.Status.Phase != want[i] {
			t.Errorf("run %s ended %s, want %s", r.Name, r.Status.Phase, want[i])
		}
	}
	pluginLooksBack(t, res.Runs)
}

// kubectlConveyor runs the plugin against the local cluster as the persona
// (its kubeconfig context), in the story's namespace.
func kubectlConveyor(t *testing.T, who string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"--kubeconfig", cluster.Kubeconfig, "--context", who, "-n", story.Namespace, "--color", "never"}, args...)
	code = cli.Main(all, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	t.Logf("%s$ kubectl conveyor %s  (exit %d)\n%s%s", who, strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// pluginLooksBack reads the story's runs with the plugin, as the personas.
func pluginLooksBack(t *testing.T, runs []conveyorv1.PipelineRun) {
	release := runs[1]
	out, _, code := kubectlConveyor(t, "tess", "list")
	for _, r := range runs {
		if !strings.Contains(out, r.Name) {
			t.Errorf("list lacks %s", r.Name)
		}
	}
	out, _, code2 := kubectlConveyor(t, "rita", "get", release.Name)
	for _, want := range []string{"✔ Succeeded at production", "requested by", "approved by rob", "triggered by omar", "✔ deploy"} {
		if !strings.Contains(out, want) {
			t.Errorf("the release's graph lacks %q", want)
		}
	}
	if code != 0 || code2 != 0 {
		t.Errorf("list/get exited %d/%d", code, code2)
	}
	if out, _, _ := kubectlConveyor(t, "rita", "get", runs[3].Name); !strings.Contains(out, "freeze overridden by rob") {
		t.Errorf("the frozen release's graph does not say who overrode the freeze")
	}
	_, errOut, code := kubectlConveyor(t, "dana", "trigger", release.Name, "production")
	if code != 1 || !strings.Contains(errOut, "Error from server (Forbidden)") {
		t.Errorf("dana triggering a finished release's production: exit %d, %q; want exit 1 and the webhook's refusal", code, errOut)
	}
	out, _, _ = kubectlConveyor(t, "rita", "history", "shop")
	if !strings.Contains(out, "Approved") || !strings.Contains(out, "Refused") {
		t.Errorf("history lacks the releases' verdicts:\n%s", out)
	}
	// The production deploy's pod lives in namespace production: the plugin
	// reads its log there, through the API server and the fake Node's kubelet
	// server (kwok serves localcluster.ContainerLog for every container).
	// dana may not read production's pods.
	_, errOut, code = kubectlConveyor(t, "dana", "logs", release.Name, "production")
	if code != 1 || !strings.Contains(errOut, "forbidden") {
		t.Errorf("dana reading production's logs: exit %d, %q; want exit 1, forbidden", code, errOut)
	}
	out, errOut, code = kubectlConveyor(t, "omar", "logs", release.Name, "production")
	if want := "[production/deploy] " + localcluster.ContainerLog; code != 0 || !strings.Contains(out, want) || errOut != "" {
		t.Errorf("logs of production: exit %d, stdout %q, stderr %q; want the line %q", code, out, errOut, want)
	}
	out, _, code = kubectlConveyor(t, "omar", "logs", release.Name)
	for _, stage := range []string{"build", "testing", "staging", "pre-production", "production"} {
		if !strings.Contains(out, "["+stage+"/") {
			t.Errorf("logs of the whole run (exit %d) lack stage %s:\n%s", code, stage, out)
		}
	}
}

// sandbox is an environment whose Environment lets any Pipeline deploy by
// itself: the tests of how deploys run (not of who may deploy) use it.
const sandbox = "sandbox"

// openSandbox creates the sandbox namespace, lets the manager run Jobs there,
// and creates its Environment.
func openSandbox(ctx context.Context) error {
	if err := cluster.AllowJobs(ctx, sandbox); err != nil {
		return err
	}
	return admin.Create(ctx, &conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: sandbox}, Spec: conveyorv1.EnvironmentSpec{
		Namespace:     sandbox,
		Pipelines:     conveyorv1.PipelineSelector{NamespaceSelector: &metav1.LabelSelector{}},
		TriggerGroups: []string{"devops"},
		AllowAuto:     true,
	}})
}

// pipeline creates a one-off Pipeline in a new namespace: a build stage in the
// run's namespace, then a deploy stage in namespace sandbox, with the given
// pod metadata on the deploy job.
func pipeline(t *testing.T, deployPod *conveyorv1.PodMetadata) string {
	t.Helper()
	return allowJobs(t, pipelineIn(t, deployPod))
}

// pipelineIn is pipeline without letting the manager create Jobs in the new namespace.
func pipelineIn(t *testing.T, deployPod *conveyorv1.PodMetadata) string {
	t.Helper()
	return appIn(t, conveyorv1.PipelineSpec{
		Refs: conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
		Stages: []conveyorv1.Stage{
			{Name: "build", Jobs: []conveyorv1.JobSpec{{Name: "compile", Image: "golang:1.26"}}},
			{Name: "deploy", Environment: sandbox, Jobs: []conveyorv1.JobSpec{{Name: "helm", Image: "alpine/helm:3", PodMetadata: deployPod}}},
		},
	})
}

// appIn creates a new namespace holding a Pipeline "app" with the spec.
func appIn(t *testing.T, spec conveyorv1.PipelineSpec) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	if err := admin.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	p := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Name: "app", Namespace: ns.Name}, Spec: spec}
	if err := admin.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// allowJobs lets the manager create Jobs in namespace ns.
func allowJobs(t *testing.T, ns string) string {
	t.Helper()
	if err := cluster.AllowJobs(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

func startRun(t *testing.T, ns string) *conveyorv1.PipelineRun {
	t.Helper()
	run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Namespace: ns},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "app"}, Git: conveyorv1.GitRef{Branch: "feature_x", Commit: "abcdef1"}}}
	if err := admin.Create(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	t.Logf("Created PipelineRun %s/%s", ns, run.Name)
	return run
}

func waitRun(t *testing.T, run *conveyorv1.PipelineRun, timeout time.Duration, check func(g Gomega, r *conveyorv1.PipelineRun)) *conveyorv1.PipelineRun {
	t.Helper()
	got := &conveyorv1.PipelineRun{}
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(admin.Get(context.Background(), client.ObjectKeyFromObject(run), got)).To(Succeed())
		check(g, got)
	}).WithTimeout(timeout).WithPolling(250 * time.Millisecond).Should(Succeed())
	return got
}

func jobsOf(g Gomega, run *conveyorv1.PipelineRun) []batchv1.Job {
	list := &batchv1.JobList{}
	g.Expect(admin.List(context.Background(), list, client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)})).To(Succeed())
	return list.Items
}

// slow keeps a job's pod running for d before kwok completes it.
func slow(d string) *conveyorv1.PodMetadata {
	return &conveyorv1.PodMetadata{Annotations: map[string]string{"pod-complete.stage.kwok.x-k8s.io/delay": d}}
}

// A Job whose pod fails exhausts its backoffLimit in the real Job controller;
// the stage and the run fail with the Job's reason.
func TestBackoffLimitFailsStage(t *testing.T) {
	ns := pipeline(t, &conveyorv1.PodMetadata{Labels: map[string]string{"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}})
	run := startRun(t, ns)
	got := waitRun(t, run, 2*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunFailed))
	})
	deploy := got.Status.Stages[1]
	t.Logf("Run %s: %s at %s: %s", got.Name, got.Status.Phase, got.Status.CurrentStage, deploy.Message)
	if deploy.Phase != conveyorv1.StageFailed || deploy.Jobs[0].Reason != "BackoffLimitExceeded" {
		t.Fatalf("deploy stage %+v, want Failed with BackoffLimitExceeded", deploy)
	}
}

// Deleting a run: the garbage collector deletes its Jobs in its namespace
// (owner references), the finalizer its Jobs in environment namespaces.
func TestDeleteRunCleansUp(t *testing.T) {
	ns := pipeline(t, slow("10m"))
	run := startRun(t, ns)
	var jobs []batchv1.Job
	NewWithT(t).Eventually(func(g Gomega) {
		jobs = jobsOf(g, run)
		g.Expect(jobs).To(HaveLen(2))
	}).WithTimeout(2 * time.Minute).Should(Succeed())
	for _, j := range jobs {
		t.Logf("Job %s/%s exists", j.Namespace, j.Name)
	}
	if err := admin.Delete(context.Background(), run); err != nil {
		t.Fatal(err)
	}
	NewWithT(t).Eventually(func(g Gomega) {
		for _, j := range jobs {
			err := admin.Get(context.Background(), client.ObjectKeyFromObject(&j), &batchv1.Job{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "Job %s/%s still exists", j.Namespace, j.Name)
		}
		pods := &corev1.PodList{}
		g.Expect(admin.List(context.Background(), pods, client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)})).To(Succeed())
		g.Expect(pods.Items).To(BeEmpty())
	}).WithTimeout(2 * time.Minute).Should(Succeed())
	t.Log("Deleted the run: its Jobs and pods are gone in both namespaces")
}

// A pod deleted mid-run does not leave the run hanging: the Job controller
// counts it, and the run ends with the Job's reason.
func TestPodDeletedMidRun(t *testing.T) {
	ns := pipeline(t, slow("10m"))
	run := startRun(t, ns)
	var pod corev1.Pod
	NewWithT(t).Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(admin.List(context.Background(), pods, client.InNamespace(sandbox),
			client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)})).To(Succeed())
		g.Expect(pods.Items).NotTo(BeEmpty())
		pod = pods.Items[0]
		g.Expect(pod.Status.Phase).To(Equal(corev1.PodRunning))
	}).WithTimeout(2 * time.Minute).Should(Succeed())
	t.Logf("Deleting pod %s/%s mid-stage", pod.Namespace, pod.Name)
	if err := admin.Delete(context.Background(), &pod); err != nil {
		t.Fatal(err)
	}
	got := waitRun(t, run, 2*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase.Finished()).To(BeTrue(), "run is %s", r.Status.Phase)
	})
	t.Logf("Run %s ended %s: %s", got.Name, got.Status.Phase, got.Status.Stages[1].Message)
}

// The manager killed with SIGKILL mid-stage and started again creates no
// duplicate Job, and the run completes.
func TestManagerKilledMidStage(t *testing.T) {
	ns := pipeline(t, slow("8s"))
	run := startRun(t, ns)
	NewWithT(t).Eventually(func(g Gomega) {
		g.Expect(jobsOf(g, run)).To(HaveLen(2))
	}).WithTimeout(2 * time.Minute).Should(Succeed())
	t.Log("Killing the manager (SIGKILL) while the deploy Job runs")
	manager = killAndRestart(t, manager)
	t.Log("Started the manager again")
	waitRun(t, run, 2*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunSucceeded))
	})
	g := NewWithT(t)
	jobs := jobsOf(g, run)
	if len(jobs) != 2 {
		t.Fatalf("%d Jobs after the restart, want 2", len(jobs))
	}
	t.Log("Run succeeded with exactly one Job per job")
}

// The manager creates Jobs only where conveyor-job-runner is bound: a run in a
// namespace without the binding says so, and starts once it is bound.
func TestJobsOnlyWhereAllowed(t *testing.T) {
	ns := pipelineIn(t, nil)
	run := startRun(t, ns)
	got := waitRun(t, run, time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		c := meta.FindStatusCondition(r.Status.Conditions, conveyorv1.ConditionStalled)
		g.Expect(c).NotTo(BeNil())
		g.Expect(c.Reason).To(Equal(conveyorv1.ReasonJobsForbidden))
	})
	t.Logf("Run %s: %s", got.Name, meta.FindStatusCondition(got.Status.Conditions, conveyorv1.ConditionStalled).Message)
	if err := cluster.AllowJobs(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Logf("Bound conveyor-job-runner in %s", ns)
	waitRun(t, run, 3*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunSucceeded))
	})
}

// A signed push posted to the running manager's receiver starts one run
// (twice delivered included); an unsigned one is refused and starts nothing.
func TestPushReceiver(t *testing.T) {
	ctx := context.Background()
	ns := pipeline(t, nil)
	// A GitLab and a chat on this machine's localhost, as the held-out check
	// runs them: the local cluster's manager may reach loopback.
	var mu sync.Mutex
	var statuses, chat []string
	gitlab := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b map[string]string
		_ = json.NewDecoder(r.Body).Decode(&b)
		mu.Lock()
		statuses = append(statuses, r.Header.Get("PRIVATE-TOKEN")+" "+r.URL.EscapedPath()+" "+b["name"]+"="+b["state"])
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer gitlab.Close()
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m struct{ Text string }
		_ = json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		chat = append(chat, m.Text)
		mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	defer sink.Close()
	if err := admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "hook", Namespace: ns},
		StringData: map[string]string{"token": "e2e-secret", "gitlab": "glpat-e2e", "url": sink.URL + "/hooks/chat"}}); err != nil {
		t.Fatal(err)
	}
	p := &conveyorv1.Pipeline{}
	if err := admin.Get(ctx, client.ObjectKey{Namespace: ns, Name: "app"}, p); err != nil {
		t.Fatal(err)
	}
	base := client.MergeFrom(p.DeepCopy())
	p.Spec.Source = &conveyorv1.PipelineSource{Repository: "acme/app", SecretRef: conveyorv1.SecretKeyReference{Name: "hook"},
		CommitStatus: &conveyorv1.CommitStatusReport{Provider: "GitLab", APIURL: gitlab.URL + "/api/v4", Project: "acme/app",
			TokenRef: conveyorv1.SecretKeyReference{Name: "hook", Key: "gitlab"}}}
	p.Spec.Notifications = &conveyorv1.Notifications{Sinks: []conveyorv1.EventSink{{Name: "chat",
		URLFrom: &conveyorv1.SecretKeyReference{Name: "hook"}, Mode: conveyorv1.SinkTemplate, Types: []string{"run.succeeded"},
		Template: `{"text": {{json (printf "%s %s: %s" .Run .Phase .Message)}}}`}}}
	if err := admin.Patch(ctx, p, base); err != nil {
		t.Fatal(err)
	}
	body := []byte(`{"object_kind":"push","ref":"refs/heads/feature_push","after":"1234567890abcdef1234567890abcdef12345678",` +
		`"checkout_sha":"1234567890abcdef1234567890abcdef12345678","user_username":"dana","project":{"path_with_namespace":"acme/app"},` +
		`"commits":[{"id":"1234567890abcdef1234567890abcdef12345678","timestamp":"2026-11-30T09:00:00+01:00"}]}`)
	send := func(token string) int {
		req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/hooks/gitlab", manager.ReceiverPort), bytes.NewReader(body))
		req.Header.Set("X-Gitlab-Event", "Push Hook")
		if token != "" {
			req.Header.Set("X-Gitlab-Token", token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		t.Logf("POST /hooks/gitlab (token %q): %d", token, resp.StatusCode)
		return resp.StatusCode
	}
	if code := send(""); code != http.StatusUnauthorized {
		t.Fatalf("unsigned push: %d, want 401", code)
	}
	NewWithT(t).Eventually(func() int { return send("e2e-secret") }).WithTimeout(30 * time.Second).Should(Equal(http.StatusAccepted))
	if code := send("e2e-secret"); code != http.StatusAccepted {
		t.Fatalf("redelivery: %d", code)
	}
	runs := &conveyorv1.PipelineRunList{}
	if err := admin.List(ctx, runs, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(runs.Items) != 1 || runs.Items[0].Spec.Git.Branch != "feature_push" {
		t.Fatalf("runs after two signed deliveries: %+v", runs.Items)
	}
	waitRun(t, &runs.Items[0], 3*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunSucceeded))
	})
	t.Logf("Run %s, created from the push, succeeded", runs.Items[0].Name)
	if ct := runs.Items[0].Spec.Trigger.CommitTime; ct == nil || !ct.Time.Equal(time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)) {
		t.Errorf("the run's commit time %v, want the pushed commit's", ct)
	}
	// Each stage reported on the commit, with the token; the chat told the end.
	NewWithT(t).Eventually(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		g.Expect(statuses).To(ContainElement("glpat-e2e /api/v4/projects/acme%2Fapp/statuses/1234567890abcdef1234567890abcdef12345678 conveyor/app/build=success"))
		g.Expect(chat).To(ContainElement(HavePrefix(runs.Items[0].Name + " Succeeded: ")))
	}).WithTimeout(30 * time.Second).Should(Succeed())
	mu.Lock()
	t.Logf("GitLab got %d commit statuses, the chat %q", len(statuses), chat)
	mu.Unlock()
}

// Cancelling a run whose deploy pod runs: the manager deletes the Job, the
// real garbage collector deletes its pod, and the run ends as Cancelled.
func TestCancelDeletesPods(t *testing.T) {
	ns := pipeline(t, slow("10m"))
	run := startRun(t, ns)
	NewWithT(t).Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(admin.List(context.Background(), pods, client.InNamespace(sandbox),
			client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)})).To(Succeed())
		g.Expect(pods.Items).NotTo(BeEmpty())
		g.Expect(pods.Items[0].Status.Phase).To(Equal(corev1.PodRunning))
	}).WithTimeout(2 * time.Minute).Should(Succeed())
	patch := client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancelled":true}}`))
	if err := admin.Patch(context.Background(), run.DeepCopy(), patch); err != nil {
		t.Fatal(err)
	}
	t.Log("Set spec.cancelled while the deploy pod runs")
	got := waitRun(t, run, 2*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
		g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunCancelled))
	})
	// The finished build Job stays as a record; the running deploy Job goes, and its pod.
	NewWithT(t).Eventually(func(g Gomega) {
		for _, j := range jobsOf(g, run) {
			g.Expect(j.Labels[conveyorv1.LabelStage]).To(Equal("build"), "Job %s/%s still exists", j.Namespace, j.Name)
		}
		pods := &corev1.PodList{}
		g.Expect(admin.List(context.Background(), pods, client.InNamespace(sandbox), client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)})).To(Succeed())
		g.Expect(pods.Items).To(BeEmpty())
	}).WithTimeout(2 * time.Minute).Should(Succeed())
	deploy := got.Status.Stages[1]
	if deploy.Phase != conveyorv1.StageCancelled || deploy.Jobs[0].Phase != conveyorv1.JobCancelled {
		t.Errorf("deploy stage after cancel: %s, job %s", deploy.Phase, deploy.Jobs[0].Phase)
	}
	t.Logf("Run %s %s at %s; the deploy Job and its pod are gone", got.Name, got.Status.Phase, got.Status.CurrentStage)
}

// A job's timeout and retries are enforced by the real Job controller: a pod
// that outlives the timeout fails the job with DeadlineExceeded; a pod that
// keeps failing is retried, each attempt counted in the run's status.
func TestJobTimeoutAndRetries(t *testing.T) {
	failing := &conveyorv1.PodMetadata{Labels: map[string]string{"pod-container-running-failed.stage.kwok.x-k8s.io": "true"}}
	for _, tc := range []struct {
		job                      conveyorv1.JobSpec
		reason                   string
		attempts, failedAttempts int32
	}{
		{conveyorv1.JobSpec{Name: "slow", Image: "golang:1.26", PodMetadata: slow("10m"), Timeout: &metav1.Duration{Duration: 3 * time.Second}}, "DeadlineExceeded", 1, 1},
		{conveyorv1.JobSpec{Name: "flaky", Image: "golang:1.26", PodMetadata: failing, Retries: ptr.To[int32](1)}, "BackoffLimitExceeded", 2, 2},
	} {
		ns := allowJobs(t, appIn(t, conveyorv1.PipelineSpec{
			Refs:   conveyorv1.PipelineRefs{Branches: []string{"feature_*"}},
			Stages: []conveyorv1.Stage{{Name: "build", Jobs: []conveyorv1.JobSpec{tc.job}}},
		}))
		run := startRun(t, ns)
		got := waitRun(t, run, 3*time.Minute, func(g Gomega, r *conveyorv1.PipelineRun) {
			g.Expect(r.Status.Phase).To(Equal(conveyorv1.RunFailed))
		})
		js := got.Status.Stages[0].Jobs[0]
		t.Logf("job %s: %s %s (%s), attempts %d, failed %d", js.Name, js.Phase, js.Reason, js.Message, js.Attempts, js.FailedAttempts)
		if js.Reason != tc.reason || js.Attempts != tc.attempts || js.FailedAttempts != tc.failedAttempts {
			t.Errorf("job %s: %s after %d attempts (%d failed), want %s after %d (%d failed)", js.Name, js.Reason, js.Attempts, js.FailedAttempts, tc.reason, tc.attempts, tc.failedAttempts)
		}
	}
}

// killAndRestart kills m with SIGKILL, waits for it to end, and starts it
// again with its ports and flags.
func killAndRestart(t *testing.T, m *localcluster.Manager) *localcluster.Manager {
	t.Helper()
	if err := m.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-m.Done
	m, err := cluster.RestartManager(context.Background(), managerBin, m)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
