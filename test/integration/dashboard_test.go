package integration_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/cmd/kubectl-conveyor/cli"
)

// chromium is the browser the dashboard test drives: $CHROMIUM, else
// Debian's package (make browser installs it; make test does first).
func chromium(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if p == "" {
			continue
		}
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatal("no Chromium: run `make browser` (Debian's chromium package), or set CHROMIUM")
	return ""
}

// serveDashboard serves the plugin's dashboard as the persona, on loopback,
// until the test ends, and returns its address with its token.
func serveDashboard(t *testing.T, who, ns string) string {
	t.Helper()
	o := cli.OptionsFor(personaKubeconfigs[who], ns, genericiooptions.NewTestIOStreamsDiscard())
	d, err := cli.NewDashboard(o, false)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	return d.URL(l.Addr())
}

// TestDashboardInABrowser loads the dashboard in headless Chromium, reads the
// run's graph, presses approve as a developer (refused, and the page shows
// the API server's message) and as a release engineer (the stage moves, live).
// Screenshots go to bin/screenshots/.
func TestDashboardInABrowser(t *testing.T) {
	browser := chromium(t)
	ns := newNamespace(t)
	startManager(t)
	seedPipelineWith(t, ns, func(p *conveyorv1.Pipeline) {
		p.Spec.Stages[0].Jobs[0].Results = []conveyorv1.ResultSpec{{Name: "digest"}}
	})
	run, err := createRunAs("dana", ns, conveyorv1.GitRef{Tag: "v2.0.0", Commit: "c0ffee1"})
	if err != nil {
		t.Fatal(err)
	}
	succeedWithResults(t, waitJob(t, run, "build", "compile"), "digest=sha256:d1a9\n")
	toApproveGate(t, run)

	danaURL := serveDashboard(t, "dana", ns)
	ritaURL := serveDashboard(t, "rita", ns)

	// The API refuses a caller without the token, and a foreign Host.
	base := strings.SplitN(danaURL, "?", 2)[0]
	if resp, err := http.Get(base + "api/events"); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("events without the token: %v %v, want 401", resp, err)
	}
	req, _ := http.NewRequest(http.MethodGet, strings.Replace(danaURL, "?", "api/whoami?", 1), nil)
	req.Host = "evil.example:80"
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("whoami for another Host: %v %v, want 403", resp, err)
	}

	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(browser), chromedp.NoSandbox, chromedp.WindowSize(1500, 900))...)
	defer cancelAlloc()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelTimeout()

	card := fmt.Sprintf(`article[data-run=%q]`, run.Name)
	stageSel := func(stage, phase string) string {
		return fmt.Sprintf(`%s section[data-stage=%q][data-phase=%q]`, card, stage, phase)
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	step := func(who string, a chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, a); err != nil {
			t.Fatalf("as %s: %v", who, err)
		}
	}
	read := func(who string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			t.Fatalf("as %s: %v", who, err)
		}
		return v
	}
	screenshot := func(name string) {
		t.Helper()
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		save(t, name, png)
	}

	step("dana", chromedp.Navigate(danaURL))
	step("dana", chromedp.WaitVisible(css(stageSel("approve", "Waiting"))))
	stages := read("dana", chromedp.Evaluate[string](fmt.Sprintf(`[...document.querySelectorAll('%s section[data-stage]')].map(s => s.dataset.stage + "=" + s.dataset.phase).join(" ")`, card)))
	step("dana", chromedp.WaitVisible(css(`#who:not(:empty)`)))
	who := read("dana", chromedp.Text(css(`#who`)))
	step("dana", chromedp.Click(css(stageSel("approve", "Waiting")+` button[data-action="approve"]`)))
	step("dana", chromedp.WaitVisible(css(card+` output.run-message.refused`)))
	refusal := read("dana", chromedp.Text(css(card+` output.run-message`)))
	screenshot("dashboard-dana-refused.png")
	if want := "build=Succeeded testing=Succeeded staging=Succeeded pre-production=Succeeded approve=Waiting production=Pending"; stages != want {
		t.Errorf("the page draws %q, want %q", stages, want)
	}
	if results := read("dana", chromedp.Text(css(card+` section[data-stage="build"] li[data-job="compile"] ul.results`))); results != "digest=sha256:d1a9" {
		t.Errorf("the build's results read %q on the page", results)
	}
	if !strings.Contains(who, "dana") {
		t.Errorf("the page says %q, want it acting as dana", who)
	}
	if !strings.Contains(refusal, "Forbidden") || !strings.Contains(refusal, `user "dana" may not approve`) {
		t.Errorf("dana's refusal reads %q", refusal)
	}

	step("rita", chromedp.Navigate(ritaURL))
	step("rita", chromedp.WaitVisible(css(stageSel("approve", "Waiting"))))
	step("rita", chromedp.SendKeys(css(card+` input.comment`), "release notes checked"))
	step("rita", chromedp.Click(css(stageSel("approve", "Waiting")+` button[data-action="approve"]`)))
	// The stage moves on the page from the watch, not from a reload.
	step("rita", chromedp.WaitVisible(css(stageSel("approve", "Succeeded"))))
	step("rita", chromedp.WaitVisible(css(stageSel("production", "Waiting")+` button[data-action="trigger"]`)))
	notes := read("rita", chromedp.Text(css(stageSel("approve", "Succeeded")+` ul.notes`)))
	screenshot("dashboard-rita-approved.png")
	if head := read("rita", chromedp.Text(css(card+` .run-head`))); strings.Contains(head, "null") || strings.Contains(head, "[object") {
		t.Errorf("the run header reads %q", head)
	}
	if !strings.Contains(notes, `approved by rita: "release notes checked"`) {
		t.Errorf("the approve stage's notes read %q", notes)
	}
	waitRun(t, run, conveyorv1.RunWaiting, "production")
}

// save writes a screenshot under bin/screenshots (ignored by git) for a person to look at.
func save(t *testing.T, name string, png []byte) {
	t.Helper()
	dir := filepath.Join("..", "..", "bin", "screenshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", filepath.Join(dir, name))
}
