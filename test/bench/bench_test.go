// Package bench runs the benchmark behind `make bench` at a small scale,
// every phase of it (the two shards and the memory phase's retained runs
// included) on a cluster given a history first (--deploy-history,
// --release-history), so that a change which breaks the bench fails `make test`
// rather than the next person who measures. It checks that the bench runs
// through and prints each figure with its target's mark; it asserts no
// timing. Two rows are facts, not timings, and must pass: no writes for
// finished runs after a manager restart, and with two shards no run
// handled twice.
package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestBenchRunsThrough(t *testing.T) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		t.Fatal("KUBEBUILDER_ASSETS is not set: run the tests with 'make test', which builds kube-apiserver and etcd")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	dir := t.TempDir()
	for _, b := range [][2]string{{"manager", "."}, {"bench", "./hack/bench"}, {"patchcost", "./hack/patchcost"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, b[0]), b[1])
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", b[0], err, out)
		}
	}
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "bench"), "--root", root, "--manager", filepath.Join(dir, "manager"),
		"--runs", "20", "--concurrency", "10", "--samples", "10", "--retained", "60", "--deploy-history", "3", "--release-history", "2",
		"--dump", filepath.Join(dir, "objects"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the bench failed: %v\nstdout:\n%s\nstderr (last lines):\n%s", err, out, tail(stderr.String(), 40))
	}
	table := string(out)
	t.Logf("the bench's table:\n%s", table)

	// Every target's row, with its mark.
	for _, name := range []string{
		"2. reaction p99 / floor p99",
		"3. throughput: 20 tag runs, 10 concurrent",
		"3. Jobs launched/s, and / raw create rate",
		"3b. one environment, 50 deploys queued: handoff p50 / p99",
		"4. writes per stage transition / minimum",
		"4. API server CPU per run: Conveyor / floor",
		"4. API writes per run, Events included: Conveyor / floor",
		"3. Approval created -> stage's first Job, p50 / p99",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `.*\s(pass|short)$`).MatchString(table) {
			t.Errorf("no row %q with a mark", name)
		}
	}
	// The heap per run, over this few runs, is noise: printed, not marked.
	for _, name := range []string{
		"5. heap KiB per retained finished run (its Jobs included)",
		"5. heap KiB per added finished run (runs without Jobs)",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `.*noise, not marked\)\s+<= 5 KiB\s*$`).MatchString(table) {
			t.Errorf("no row %q, unmarked", name)
		}
	}
	// The memory phase reads the manager with the runs it holds: 20 of the
	// throughput, 10 of the reaction, 10 of phase 3c's 20 (the other 10 are
	// the second shard's); then with copies up to --retained, none pruned.
	if !strings.Contains(table, "5. manager heap / RSS, 60 finished runs ") {
		t.Errorf("no memory reading with the 60 runs retained")
	}
	for _, name := range []string{
		"4. writes for 40 finished runs after a manager restart",
		"3c. two shards: Job creates per run, refused creates per run",
	} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `.*\spass$`).MatchString(table) {
			t.Errorf("row %q does not pass", name)
		}
	}
	// The manager's other writes, the release ledger's among them: the
	// bench's runs are tag runs, each recorded in its tag's Release.
	other := regexp.MustCompile(`(?m)^4\. other manager writes per run: .*release ledger\s+[0-9.]+ \+ [0-9.]+ \+ [0-9.]+ \+ ([0-9.]+)`).FindStringSubmatch(table)
	if other == nil || other[1] == "0.00" {
		t.Errorf("no release ledger writes among the manager's other writes (%q)", other)
	}
	// What a scrape of the manager's metrics costs it, at each reading.
	for _, runs := range []int{0, 40, 60} {
		re := regexp.MustCompile(fmt.Sprintf(`(?m)^5\. a /metrics scrape, %d runs held: time, allocated\s+([0-9.]+) ms, ([0-9]+) KiB`, runs))
		m := re.FindStringSubmatch(table)
		if m == nil || m[1] == "0.00" || m[2] == "0" {
			t.Errorf("no scrape row with figures for %d runs held (%q)", runs, m)
		}
	}
	for _, name := range []string{"API requests per run by verb and resource", "The API server's calls to admission webhooks per run"} {
		if !strings.Contains(table, name) {
			t.Errorf("no %q", name)
		}
	}

	// hack/patchcost writes again each kind of object the bench dumped.
	cmd = exec.CommandContext(ctx, filepath.Join(dir, "patchcost"), "--root", root, "--objects", filepath.Join(dir, "objects"),
		"--objects-per-kind", "2", "--writes", "2", "--rounds", "1")
	stderr.Reset()
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("patchcost failed: %v\nstdout:\n%s\nstderr (last lines):\n%s", err, out, tail(stderr.String(), 40))
	}
	t.Logf("patchcost:\n%s", out)
	for _, name := range []string{"PipelineRun status patch, as stored", "Approval status patch", "Environment status update",
		"Release update", "Event create", "Job create"} {
		if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `.*\s[1-9][0-9]* \([1-9][0-9]*\)\s.*median [0-9.]+`).MatchString(string(out)) {
			t.Errorf("patchcost printed no row %q with its size and figures", name)
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
