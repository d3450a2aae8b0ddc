package engine

import (
	"fmt"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Ledger is what the release ledger says about a tag run: the Release of its
// Pipeline and tag (nil before the tag's first run started), and the refused
// Releases of the Pipeline that name the run's commit under another tag.
type Ledger struct {
	Release *conveyorv1.Release
	Refused []conveyorv1.Release
}

// maxReleaseDecisions bounds status.decisions; the first refusal is always kept.
const maxReleaseDecisions = 32

// ReleaseName is the name of the Release of a Pipeline's tag:
// "<pipeline>-<tag>-<hash>", the tag lower-cased with other characters than
// letters, digits, '.' and '-' made '-' (a valid object name), and a hash of
// the Pipeline and tag that keeps apart tags alike once lower-cased.
func ReleaseName(pipeline, tag string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(tag) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			b.WriteRune(r)
		} else {
			b.WriteRune('-')
		}
	}
	// Each dot-separated part of the name starts and ends with a letter or digit.
	var parts []string
	for _, part := range strings.Split(b.String(), ".") {
		if part = strings.Trim(part, "-"); part != "" {
			parts = append(parts, part)
		}
	}
	prefix := strings.Trim(pipeline+"-"+strings.Join(parts, "."), "-.")
	if len(prefix) > 200 {
		prefix = strings.TrimRight(prefix[:200], "-.")
	}
	return prefix + "-" + shortHash(pipeline+"\x00"+tag, 8)
}

// SameCommit reports whether two SHAs, full or abbreviated, name the same
// commit: one is a prefix of the other (case aside).
func SameCommit(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if a == "" || b == "" {
		return false
	}
	return strings.HasPrefix(a, b) || strings.HasPrefix(b, a)
}

// ReleaseBar says why a tag run may not run as its release: the release was
// refused (by another run than this one), the tag moved to another commit, or
// the commit was refused under another tag. It returns the condition reason
// and an error that names who refused and when; nil for branch runs and for
// runs the ledger allows.
func ReleaseBar(run *conveyorv1.PipelineRun, l Ledger) (string, error) {
	git := run.Spec.Git
	if git.Tag == "" {
		return "", nil
	}
	if rel := l.Release; rel != nil {
		if d := refusal(rel); d != nil && d.RunUID != string(run.UID) {
			return conveyorv1.ReasonReleaseRefused, fmt.Errorf("release %s of Pipeline %s (commit %s) was refused by %s at %s in run %s, stage %s%s: a refusal is final; tag a new release",
				rel.Spec.Tag, rel.Spec.PipelineRef.Name, rel.Spec.Commit, by(d), d.Time.UTC().Format(time.RFC3339), d.Run, d.Stage, quoted(d.Comment))
		}
		if !SameCommit(rel.Spec.Commit, git.Commit) {
			return conveyorv1.ReasonTagMoved, fmt.Errorf("the tag moved: release %s of Pipeline %s names commit %s (since %s), this run names %s; a tag names one commit: tag a new release",
				rel.Spec.Tag, rel.Spec.PipelineRef.Name, rel.Spec.Commit, rel.CreationTimestamp.UTC().Format(time.RFC3339), git.Commit)
		}
	}
	for i := range l.Refused {
		rel := &l.Refused[i]
		d := refusal(rel)
		if d == nil || rel.Spec.Tag == git.Tag || d.RunUID == string(run.UID) || !SameCommit(rel.Spec.Commit, git.Commit) {
			continue
		}
		return conveyorv1.ReasonReleaseRefused, fmt.Errorf("commit %s was refused as release %s of Pipeline %s by %s at %s%s: a refused commit does not ship under another tag",
			rel.Spec.Commit, rel.Spec.Tag, rel.Spec.PipelineRef.Name, by(d), d.Time.UTC().Format(time.RFC3339), quoted(d.Comment))
	}
	return "", nil
}

// refusal is the release's first refusal, nil when it has none.
func refusal(rel *conveyorv1.Release) *conveyorv1.ReleaseDecision {
	if i := refusalIndex(&rel.Status); i >= 0 {
		return &rel.Status.Decisions[i]
	}
	return nil
}

func by(d *conveyorv1.ReleaseDecision) string {
	if len(d.By) == 0 {
		return "an unrecorded approver"
	}
	return strings.Join(d.By, ", ")
}

func quoted(comment string) string {
	if comment == "" {
		return ""
	}
	return fmt.Sprintf(" (%q)", comment)
}

// RecordRelease is the Release of a tag run as it should read once the run's
// status reads st: created (naming the run's commit) when the run has started
// and none exists, with the run's decided approval stages and succeeded
// deploy stages added. Stages a rerun reused were recorded by the run they
// come from. It returns nil when there is nothing to write: a branch run, a
// run not started, one whose commit the Release does not name (it is
// refused), or nothing new.
func RecordRelease(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus, rel *conveyorv1.Release) *conveyorv1.Release {
	git := run.Spec.Git
	if git.Tag == "" || st.PipelineSpec == nil {
		return nil
	}
	var out *conveyorv1.Release
	if rel == nil {
		out = &conveyorv1.Release{
			ObjectMeta: metav1.ObjectMeta{
				Name: ReleaseName(run.Spec.PipelineRef.Name, git.Tag), Namespace: run.Namespace,
				Labels: map[string]string{conveyorv1.LabelPipeline: run.Spec.PipelineRef.Name, conveyorv1.LabelManagedBy: conveyorv1.ManagedByValue},
			},
			Spec:   conveyorv1.ReleaseSpec{PipelineRef: run.Spec.PipelineRef, Tag: git.Tag, Commit: git.Commit},
			Status: conveyorv1.ReleaseStatus{Verdict: conveyorv1.VerdictPending},
		}
	} else {
		if !SameCommit(rel.Spec.Commit, git.Commit) {
			return nil
		}
		out = rel.DeepCopy()
	}
	stages := map[string]*conveyorv1.Stage{}
	for _, s := range RunStages(st.PipelineSpec, git) {
		stages[s.Name] = &s
	}
	for i := range st.Stages {
		ss := &st.Stages[i]
		stage := stages[ss.Name]
		if stage == nil || ss.ReusedFrom != "" || ss.CompletionTime == nil {
			continue
		}
		switch {
		case IsGate(stage) && (ss.Phase == conveyorv1.StageSucceeded || ss.Phase == conveyorv1.StageRejected):
			addDecision(&out.Status, releaseDecision(run, ss))
		case stage.Environment != "" && len(stage.Jobs) > 0 && ss.Phase == conveyorv1.StageSucceeded:
			reached(&out.Status, conveyorv1.ReleaseEnvironment{Name: stage.Environment, Stage: ss.Name, Run: run.Name, TriggeredBy: triggeredBy(ss), Time: *ss.CompletionTime})
		}
	}
	settleVerdict(&out.Status)
	if rel != nil && equality.Semantic.DeepEqual(rel.Status, out.Status) {
		return nil
	}
	return out
}

func releaseDecision(run *conveyorv1.PipelineRun, ss *conveyorv1.StageStatus) conveyorv1.ReleaseDecision {
	d := conveyorv1.ReleaseDecision{Verdict: conveyorv1.VerdictApproved, Stage: ss.Name, Run: run.Name, RunUID: string(run.UID), Time: *ss.CompletionTime}
	if ss.Phase == conveyorv1.StageRejected {
		d.Verdict = conveyorv1.VerdictRefused
	}
	for _, dec := range ss.Decisions {
		if dec.Approver != "" {
			d.By = append(d.By, dec.Approver)
		}
		if d.Comment == "" {
			d.Comment = dec.Comment
		}
	}
	return d
}

// addDecision adds d unless its run and stage are there already, keeping the
// last decisions within the bound and the first refusal always.
func addDecision(st *conveyorv1.ReleaseStatus, d conveyorv1.ReleaseDecision) {
	for _, old := range st.Decisions {
		if old.RunUID == d.RunUID && old.Stage == d.Stage {
			return
		}
	}
	st.Decisions = append(st.Decisions, d)
	for len(st.Decisions) > maxReleaseDecisions {
		drop := 0
		if refusalIndex(st) == 0 {
			drop = 1 // the first refusal stays
		}
		st.Decisions = append(st.Decisions[:drop], st.Decisions[drop+1:]...)
	}
}

// refusalIndex is the index of the first refusal in the decisions, -1 when none.
func refusalIndex(st *conveyorv1.ReleaseStatus) int {
	for i, d := range st.Decisions {
		if d.Verdict == conveyorv1.VerdictRefused {
			return i
		}
	}
	return -1
}

// reached records the latest successful deploy to an environment.
func reached(st *conveyorv1.ReleaseStatus, e conveyorv1.ReleaseEnvironment) {
	for i := range st.Environments {
		if st.Environments[i].Name != e.Name {
			continue
		}
		if st.Environments[i].Time.Before(&e.Time) {
			st.Environments[i] = e
		}
		return
	}
	st.Environments = append(st.Environments, e)
}

// triggeredBy is who triggered a manual stage, "" for others.
func triggeredBy(ss *conveyorv1.StageStatus) string {
	if len(ss.Decisions) == 0 {
		return ""
	}
	return ss.Decisions[0].Approver
}

// settleVerdict derives the verdict from the decisions: the first refusal
// outranks everything, else the latest approval; and the environment reached
// last.
func settleVerdict(st *conveyorv1.ReleaseStatus) {
	st.Verdict, st.DecidedBy, st.DecidedAt = conveyorv1.VerdictPending, "", nil
	var verdict *conveyorv1.ReleaseDecision
	if i := refusalIndex(st); i >= 0 {
		verdict = &st.Decisions[i]
	} else if n := len(st.Decisions); n > 0 {
		verdict = &st.Decisions[n-1]
	}
	if verdict != nil {
		t := verdict.Time
		st.Verdict, st.DecidedBy, st.DecidedAt = verdict.Verdict, strings.Join(verdict.By, ","), &t
	}
	st.LastEnvironment = ""
	var last *metav1.Time
	for i := range st.Environments {
		if last == nil || last.Before(&st.Environments[i].Time) {
			last, st.LastEnvironment = &st.Environments[i].Time, st.Environments[i].Name
		}
	}
}
