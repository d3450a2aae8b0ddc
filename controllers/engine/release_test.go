package engine

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

func TestReleaseName(t *testing.T) {
	a, b := ReleaseName("shop", "v1.4.0"), ReleaseName("shop", "V1.4.0")
	if !strings.HasPrefix(a, "shop-v1.4.0-") || a == b {
		t.Fatalf("names %q and %q: want the tag in the name and distinct names for distinct tags", a, b)
	}
	if ReleaseName("shop", "v1.4.0") != a {
		t.Fatal("the name is not deterministic")
	}
	long := ReleaseName(strings.Repeat("p", 120), "release/"+strings.Repeat("X_", 120))
	if len(long) > 253 || strings.ContainsAny(long, "/_X") {
		t.Fatalf("name %q is not a valid object name", long)
	}
}

func TestSameCommit(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"abc1234", "ABC1234def", true}, {"abc1234def", "abc1234", true}, {"abc1234", "abc1235", false}, {"", "abc", false},
	} {
		if got := SameCommit(tc.a, tc.b); got != tc.want {
			t.Errorf("SameCommit(%q, %q) = %v", tc.a, tc.b, got)
		}
	}
}

// decidedTagRun is a tag run of the seed through staging and pre-production,
// decided at its approval gate by approvals, its production deploy done when
// deployed.
func decidedTagRun(decision conveyorv1.ApprovalDecision, deployed bool) (*conveyorv1.PipelineRun, Plan) {
	run := newRun(tag)
	jobs := done("build/compile", "testing/unit", "testing/lint", "staging/deploy", "pre-production/deploy")
	gate := approve("g", "approve", "rel")
	gate.Decision, gate.Comment = decision, "looks right"
	approvals := []ApprovalFact{approve("s", "staging", "dev"), approve("p", "pre-production", "tess"), gate}
	if deployed {
		approvals = append(approvals, approve("x", "production", "ops"))
		jobs = merge(jobs, done("production/deploy"))
	}
	return run, decide(Facts{Run: run, Jobs: jobs, Approvals: approvals, Now: t0})
}

// TestRecordRelease: a tag run's verdict and deploys go into its Release; a
// refusal outranks a later approval; nothing new writes nothing.
func TestRecordRelease(t *testing.T) {
	run, p := decidedTagRun(conveyorv1.DecisionApprove, true)
	rel := RecordRelease(run, &p.Status, nil)
	if rel == nil || rel.Spec.Tag != "v1.4.0" || rel.Spec.Commit != "abc123" || rel.Labels[conveyorv1.LabelPipeline] != "shop" {
		t.Fatalf("release %+v", rel)
	}
	st := rel.Status
	if st.Verdict != conveyorv1.VerdictApproved || st.DecidedBy != "rel" || st.LastEnvironment == "" || len(st.Environments) != 3 {
		t.Fatalf("status %+v: want Approved by rel, three environments reached", st)
	}
	if st.Decisions[0].Comment != "looks right" || st.Decisions[0].RunUID != "uid-1" {
		t.Fatalf("decision %+v", st.Decisions[0])
	}
	for _, e := range st.Environments {
		if e.Name == "production" && e.TriggeredBy != "ops" {
			t.Fatalf("production deployed by %q, want ops", e.TriggeredBy)
		}
	}
	if again := RecordRelease(run, &p.Status, rel); again != nil {
		t.Fatal("recording the same status again writes")
	}

	// A second run of the tag is refused at its gate: Refused, and final.
	second, q := decidedTagRun(conveyorv1.DecisionReject, false)
	second.Name, second.UID = "shop-2", "uid-2"
	refused := RecordRelease(second, &q.Status, rel)
	if refused == nil || refused.Status.Verdict != conveyorv1.VerdictRefused || len(refused.Status.Decisions) != 2 {
		t.Fatalf("after a refusal: %+v", refused)
	}
	third, r := decidedTagRun(conveyorv1.DecisionApprove, false)
	third.Name, third.UID = "shop-3", "uid-3"
	if later := RecordRelease(third, &r.Status, refused); later == nil || later.Status.Verdict != conveyorv1.VerdictRefused {
		t.Fatalf("an approval after a refusal changed the verdict: %+v", later)
	}

	// Another commit under the tag writes nothing (the run is refused instead).
	moved := newRun(conveyorv1.GitRef{Tag: "v1.4.0", Commit: "def456"})
	if RecordRelease(moved, &moved.Status, rel) != nil {
		t.Fatal("a run of a moved tag wrote the ledger")
	}
	if RecordRelease(newRun(branch), &p.Status, nil) != nil {
		t.Fatal("a branch run wrote the ledger")
	}
}

// TestReleaseBar: the ledger refuses a refused release (not the run that
// refused it), a moved tag, and a refused commit under another tag.
func TestReleaseBar(t *testing.T) {
	run, p := decidedTagRun(conveyorv1.DecisionReject, false)
	refused := RecordRelease(run, &p.Status, nil)
	refused.CreationTimestamp = t0

	other := newRun(tag)
	other.Name, other.UID = "shop-2", "uid-2"
	retag := newRun(conveyorv1.GitRef{Tag: "v1.4.1", Commit: "ABC123FF"})
	retag.UID = "uid-3"
	moved := newRun(conveyorv1.GitRef{Tag: "v1.4.0", Commit: "def456"})
	moved.UID = "uid-4"
	approved := refused.DeepCopy()
	approved.Status.Decisions[0].Verdict = conveyorv1.VerdictApproved
	settleVerdict(&approved.Status)

	for _, tc := range []struct {
		name   string
		run    *conveyorv1.PipelineRun
		l      Ledger
		reason string
		says   string
	}{
		{"the refusing run itself", run, Ledger{Release: refused}, "", ""},
		{"a new run of the refused tag", other, Ledger{Release: refused}, conveyorv1.ReasonReleaseRefused, "refused by rel at 2026-11-26T12:00:00Z in run shop-1, stage approve (\"looks right\")"},
		{"the refused commit under another tag", retag, Ledger{Refused: []conveyorv1.Release{*refused}}, conveyorv1.ReasonReleaseRefused, "commit abc123 was refused as release v1.4.0"},
		{"the tag moved", moved, Ledger{Release: approved}, conveyorv1.ReasonTagMoved, "names commit abc123"},
		{"an approved release runs again", other, Ledger{Release: approved}, "", ""},
		{"a branch run", newRun(branch), Ledger{Release: refused}, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reason, err := ReleaseBar(tc.run, tc.l)
			if reason != tc.reason || (err == nil) != (tc.says == "") || err != nil && !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %q %v; want %q saying %q", reason, err, tc.reason, tc.says)
			}
		})
	}
}

// TestRefusedReleaseStopsRuns: a run of a refused release ends as Rejected,
// before it starts (no snapshot) and in flight (its running Jobs deleted).
func TestRefusedReleaseStopsRuns(t *testing.T) {
	run, p := decidedTagRun(conveyorv1.DecisionReject, false)
	l := Ledger{Release: RecordRelease(run, &p.Status, nil)}

	fresh := newRun(tag)
	fresh.UID, fresh.Status = "uid-2", conveyorv1.PipelineRunStatus{}
	pipeline := &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Name: "shop"}, Spec: *seed()}
	start := DecideRun(Facts{Run: fresh, Pipeline: pipeline, Ledger: l, Now: t0})
	if start.Status.Phase != conveyorv1.RunRejected || start.Reason != conveyorv1.ReasonReleaseRefused || start.Terminal == nil || start.Status.PipelineSpec != nil {
		t.Fatalf("a new run of a refused release: %s %s (%s)", start.Status.Phase, start.Reason, start.Message)
	}

	inFlight := newRun(tag)
	inFlight.UID = "uid-3"
	withStatus(inFlight, decide(Facts{Run: inFlight, Now: t0}))
	if len(inFlight.Status.Stages[0].Jobs) == 0 || inFlight.Status.Phase != conveyorv1.RunRunning {
		t.Fatalf("fixture: %s", inFlight.Status.Phase)
	}
	running := map[string]JobObservation{"build/compile": {Phase: conveyorv1.JobRunning}}
	stop := decide(Facts{Run: inFlight, Jobs: running, Ledger: l, Now: t0})
	if stop.Status.Phase != conveyorv1.RunRejected || stop.Reason != conveyorv1.ReasonReleaseRefused || len(stop.Delete) != 1 || len(stop.Create) != 0 {
		t.Fatalf("a run in flight when its release was refused: %s %s, delete %d create %d", stop.Status.Phase, stop.Reason, len(stop.Delete), len(stop.Create))
	}
	withStatus(inFlight, stop)
	inFlight.Status.Conditions = []metav1.Condition{{Type: conveyorv1.ConditionReady, Reason: stop.Reason, Message: stop.Message}}
	if again := decide(Facts{Run: inFlight, Ledger: Ledger{}, Now: t0}); again.Status.Phase != conveyorv1.RunRejected || len(again.Create) != 0 {
		t.Fatalf("a stopped run moved again: %s, create %d", again.Status.Phase, len(again.Create))
	}
}

// FuzzReleaseLedger: whatever the tags and commits, a Release's name is a
// valid object name; once a release is refused, a run of its tag, or of its
// commit under another tag, is barred, and recording any other run never
// lifts the refusal; a run of another commit under the tag is barred too.
func FuzzReleaseLedger(f *testing.F) {
	f.Add("v1.4.0", "3f2a9c1d", "v1.4.0", "3f2a9c1d", true)
	f.Add("v1.4.0", "3f2a9c1d", "v1.4.1", "3F2A9C1D77", false)
	f.Add("release/X_1", "abcd", "release/x-1", "dcba", true)
	f.Fuzz(func(t *testing.T, tagA, commitA, tagB, commitB string, refuse bool) {
		if tagA == "" || commitA == "" || tagB == "" || commitB == "" {
			return
		}
		if errs := validation.IsDNS1123Subdomain(ReleaseName("shop", tagA)); len(errs) > 0 {
			t.Fatalf("ReleaseName(%q) = %q: %v", tagA, ReleaseName("shop", tagA), errs)
		}
		first, p := decidedTagRun(conveyorv1.DecisionApprove, false)
		if refuse {
			first, p = decidedTagRun(conveyorv1.DecisionReject, false)
		}
		first.Spec.Git = conveyorv1.GitRef{Tag: tagA, Commit: commitA}
		rel := RecordRelease(first, &p.Status, nil)
		if rel == nil {
			t.Fatal("the tag's first run recorded nothing")
		}
		second, q := decidedTagRun(conveyorv1.DecisionApprove, true)
		second.Name, second.UID, second.Spec.Git = "shop-2", "uid-2", conveyorv1.GitRef{Tag: tagB, Commit: commitB}
		var l Ledger
		if tagB == tagA {
			l.Release = rel
		} else if refuse {
			l.Refused = []conveyorv1.Release{*rel}
		}
		reason, err := ReleaseBar(second, l)
		sameCommit := SameCommit(commitA, commitB)
		switch {
		case refuse && (tagB == tagA || sameCommit):
			if reason != conveyorv1.ReasonReleaseRefused || err == nil {
				t.Fatalf("a run of a refused release (%s@%s after %s@%s) got %q %v", tagB, commitB, tagA, commitA, reason, err)
			}
		case tagB == tagA && !sameCommit:
			if reason != conveyorv1.ReasonTagMoved {
				t.Fatalf("a moved tag (%s: %s then %s) got %q %v", tagA, commitA, commitB, reason, err)
			}
		case err != nil:
			t.Fatalf("barred %s@%s after %s@%s (refused %v): %v", tagB, commitB, tagA, commitA, refuse, err)
		}
		if tagB == tagA {
			if after := RecordRelease(second, &q.Status, rel); refuse && after != nil && after.Status.Verdict != conveyorv1.VerdictRefused {
				t.Fatalf("a later run lifted the refusal: %+v", after.Status)
			}
		}
	})
}
