// Package engine decides what a PipelineRun does next from what was observed
// (its pipeline snapshot, its Jobs, its Approvals), without a client: the
// reconcilers observe and act, the functions here decide, and table tests drive
// them directly.
package engine

import (
	"fmt"
	"path"
	"slices"
	"strings"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// RefKind is "branch" or "tag".
type RefKind string

const (
	// RefBranch is a branch run.
	RefBranch RefKind = "branch"
	// RefTag is a tag run.
	RefTag RefKind = "tag"
)

// Ref returns the kind and name of the run's git ref.
func Ref(git conveyorv1.GitRef) (RefKind, string) {
	if git.Tag != "" {
		return RefTag, git.Tag
	}
	return RefBranch, git.Branch
}

// RefString is the ref as shown in status: "branch/<name>" or "tag/<name>".
func RefString(git conveyorv1.GitRef) string {
	kind, name := Ref(git)
	return string(kind) + "/" + name
}

// ValidatePipeline reports what makes a Pipeline unusable beyond what the CRD
// schema already refuses: glob patterns that do not parse, and references
// ($(params.x), $(stages.s.jobs.j.results.r)) to nothing the runs will have.
func ValidatePipeline(spec *conveyorv1.PipelineSpec) error {
	var bad []string
	for _, p := range append(append([]string{}, spec.Refs.Branches...), spec.Refs.Tags...) {
		if _, err := path.Match(p, ""); err != nil {
			bad = append(bad, fmt.Sprintf("%q", p))
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("invalid ref patterns %s: patterns use Go path.Match syntax (*, ?, [a-z])", strings.Join(bad, ", "))
	}
	return checkReferences(spec).ToAggregate()
}

// RefAllowed reports whether the Pipeline's patterns allow the run's ref. When
// they do not, the error names the allowed patterns.
func RefAllowed(spec *conveyorv1.PipelineSpec, git conveyorv1.GitRef) error {
	kind, name := Ref(git)
	patterns, plural := spec.Refs.Branches, "branches"
	if kind == RefTag {
		patterns, plural = spec.Refs.Tags, "tags"
	}
	for _, p := range patterns {
		if ok, err := path.Match(p, name); err == nil && ok {
			return nil
		}
	}
	if len(patterns) == 0 {
		return fmt.Errorf("%s %q is not allowed: the pipeline runs for no %s", kind, name, plural)
	}
	return fmt.Errorf("%s %q is not allowed: the pipeline runs for %s matching %s", kind, name, plural, strings.Join(patterns, ", "))
}

// StageApplies reports whether a stage belongs to a run of the given ref kind.
func StageApplies(stage *conveyorv1.Stage, kind RefKind) bool {
	switch stage.Refs {
	case conveyorv1.RefsBranches:
		return kind == RefBranch
	case conveyorv1.RefsTags:
		return kind == RefTag
	default:
		return true
	}
}

// RunStages returns the stages of the snapshot that apply to the run's ref, in order.
func RunStages(spec *conveyorv1.PipelineSpec, git conveyorv1.GitRef) []conveyorv1.Stage {
	kind, _ := Ref(git)
	var out []conveyorv1.Stage
	for i := range spec.Stages {
		if StageApplies(&spec.Stages[i], kind) {
			out = append(out, spec.Stages[i])
		}
	}
	return out
}

// IsManual reports whether a job stage waits for a trigger.
func IsManual(stage *conveyorv1.Stage) bool {
	return stage.Approval == nil && stage.When == conveyorv1.WhenManual
}

// IsGate reports whether the stage is an approval stage.
func IsGate(stage *conveyorv1.Stage) bool {
	return stage.Approval != nil
}

// StageNamespace is where a stage's Jobs run: its environment, or the run's namespace.
func StageNamespace(runNamespace string, stage *conveyorv1.Stage) string {
	if stage.Environment != "" {
		return stage.Environment
	}
	return runNamespace
}

// DeploysOutside reports whether the run, in flight, has a stage yet to run
// outside its namespace: the run needs the cleanup finalizer
// (conveyorv1.CleanupFinalizer). A run not started yet is read with a status
// holding only its Pipeline's spec.
func DeploysOutside(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus) bool {
	return !st.Phase.Finished() && !run.Spec.Cancelled && StageAhead(run, st, func(s *conveyorv1.Stage) bool {
		return StageNamespace(run.Namespace, s) != run.Namespace
	})
}

// StageAhead reports whether a stage of the run that applies to its ref and
// has not finished matches.
func StageAhead(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus, match func(*conveyorv1.Stage) bool) bool {
	if st.PipelineSpec == nil {
		return false
	}
	done := map[string]bool{}
	for _, ss := range st.Stages {
		done[ss.Name] = ss.Phase.Finished()
	}
	return slices.ContainsFunc(RunStages(st.PipelineSpec, run.Spec.Git), func(s conveyorv1.Stage) bool {
		return !done[s.Name] && match(&s)
	})
}
