package integration_test

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"k8s.io/cli-runtime/pkg/genericiooptions"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/cmd/kubectl-conveyor/cli"
)

// plugin runs kubectl-conveyor as the persona, in namespace ns, and returns
// what it printed and its exit code.
func plugin(t *testing.T, who, ns string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	all := append([]string{"--kubeconfig", personaKubeconfigs[who], "-n", ns, "--color", "never"}, args...)
	code = cli.Main(all, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	t.Logf("%s$ kubectl conveyor %s  (exit %d)\n%s%s", who, strings.Join(args, " "), code, out.String(), errOut.String())
	return out.String(), errOut.String(), code
}

// pluginOK runs the plugin and fails the test unless it succeeded.
func pluginOK(t *testing.T, who, ns string, args ...string) string {
	t.Helper()
	out, errOut, code := plugin(t, who, ns, args...)
	if code != 0 {
		t.Fatalf("%s: kubectl conveyor %s exited %d: %s", who, strings.Join(args, " "), code, errOut)
	}
	return out
}

// pluginRefused runs the plugin, expects exit code 1 and an error containing want.
func pluginRefused(t *testing.T, who, ns, want string, args ...string) {
	t.Helper()
	_, errOut, code := plugin(t, who, ns, args...)
	if code != 1 || !strings.Contains(errOut, want) {
		t.Fatalf("%s: kubectl conveyor %s: exit %d, stderr %q; want exit 1 and %q", who, strings.Join(args, " "), code, errOut, want)
	}
}

var createdRun = regexp.MustCompile(`pipelinerun/(\S+) created`)

func runFrom(t *testing.T, ns, out string) *conveyorv1.PipelineRun {
	t.Helper()
	m := createdRun.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no run name in %q", out)
	}
	run := &conveyorv1.PipelineRun{}
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: m[1]}, run); err != nil {
		t.Fatal(err)
	}
	return run
}

// TestPluginPlaysTheRelease plays the seed's release with the plugin only, as
// each persona with their own kubeconfig: what the API server refuses, the
// plugin reports with its message and exit code 1.
func TestPluginPlaysTheRelease(t *testing.T) {
	ns := newNamespace(t)
	startManager(t)
	seedPipeline(t, ns)

	out := pluginOK(t, "dana", ns, "start", "shop", "--tag", "v1.4.0", "--commit", "3f2a9c1")
	run := runFrom(t, ns, out)
	if run.Spec.Requester == nil || run.Spec.Requester.Username != "dana" {
		t.Fatalf("requester %+v, want dana", run.Spec.Requester)
	}
	if !strings.HasPrefix(run.Name, "shop-tag-v1-4-0-") {
		t.Errorf("run name %s, want shop-tag-v1-4-0-*", run.Name)
	}
	pluginRefused(t, "dana", ns, "a tag run names its commit", "start", "shop", "--tag", "v1.4.1")

	passStage(t, run, "build", "compile")
	passStage(t, run, "testing", "unit", "lint")
	waitRun(t, run, conveyorv1.RunWaiting, "staging")
	pluginOK(t, "dana", ns, "trigger", run.Name, "staging", "-m", "try it")
	passStage(t, run, "staging", "deploy")

	waitRun(t, run, conveyorv1.RunWaiting, "pre-production")
	pluginRefused(t, "dana", ns, "Error from server (Forbidden)", "trigger", run.Name, "pre-production")
	pluginRefused(t, "dana", ns, "name the stage", "trigger", run.Name)
	pluginOK(t, "tess", ns, "trigger", run.Name, "pre-production")
	passStage(t, run, "pre-production", "deploy")
	waitRun(t, run, conveyorv1.RunWaiting, "approve")

	graph := pluginOK(t, "dana", ns, "get", run.Name)
	for _, want := range []string{"◆ Waiting at approve", "requested by dana", "✔ compile", "triggered by dana", "triggered by tess", "◆ Waiting", "○ Pending"} {
		if !strings.Contains(graph, want) {
			t.Errorf("graph lacks %q:\n%s", want, graph)
		}
	}
	// The approval stage is the one approve picks without being told.
	pluginRefused(t, "dana", ns, "Error from server (Forbidden)", "approve", run.Name)
	pluginRefused(t, "rita", ns, "say why", "reject", run.Name)
	pluginRefused(t, "omar", ns, "has no stage frozen", "override", run.Name, "-m", "no reason")
	pluginOK(t, "rita", ns, "approve", run.Name, "-m", "ship it")
	waitRun(t, run, conveyorv1.RunWaiting, "production")

	listed := pluginOK(t, "tess", ns, "list", "--phase", "Waiting")
	if !strings.Contains(listed, run.Name) || !strings.Contains(listed, "tag/v1.4.0") {
		t.Errorf("list lacks the run:\n%s", listed)
	}
	if out := pluginOK(t, "tess", ns, "list", "--pipeline", "other"); !strings.Contains(out, "No runs found.") {
		t.Errorf("list --pipeline other shows runs:\n%s", out)
	}
	pluginOK(t, "omar", ns, "trigger", run.Name, "production")
	passStage(t, run, "production", "deploy")
	waitRun(t, run, conveyorv1.RunSucceeded, "production")

	// --watch on a finished run draws it once and returns.
	watched := pluginOK(t, "rita", ns, "get", run.Name, "--watch")
	if !strings.Contains(watched, "✔ Succeeded at production") || !strings.Contains(watched, "approved by rita") {
		t.Errorf("watched graph:\n%s", watched)
	}
	history := pluginOK(t, "rita", ns, "history", "shop")
	if !strings.Contains(history, run.Name) || !regexp.MustCompile(`v1\.4\.0\s+3f2a9c1\s+Approved\s+rita\s+production`).MatchString(history) {
		t.Errorf("history lacks the run or the release's verdict:\n%s", history)
	}

	// A branch run: another persona may not cancel it, its requester may,
	// and a rerun of it is created with rerunOf.
	branch := runFrom(t, ns, pluginOK(t, "dana", ns, "start", "shop", "--branch", "feature_x", "--commit", "9b1e4d2"))
	waitRun(t, branch, conveyorv1.RunRunning, "build")
	pluginRefused(t, "tess", ns, "Error from server", "cancel", branch.Name)
	pluginOK(t, "dana", ns, "cancel", branch.Name)
	waitRun(t, branch, conveyorv1.RunCancelled, "build")
	rerun := runFrom(t, ns, pluginOK(t, "dana", ns, "rerun", branch.Name))
	if rerun.Spec.RerunOf != branch.Name || rerun.Spec.Git != branch.Spec.Git {
		t.Errorf("rerun spec %+v", rerun.Spec)
	}
	pluginRefused(t, "dana", ns, "NotFound", "get", "no-such-run")
}
