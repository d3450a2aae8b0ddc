package engine

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/util/validation/field"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// CheckRerun says why run cannot rerun source (its spec.rerunOf), nil when it
// can, as a field error of spec.rerunOf: source must exist, be finished without succeeding and without being
// rejected (a refusal stops a release for good), and be of the same Pipeline
// for the same ref and commit.
func CheckRerun(run, source *conveyorv1.PipelineRun) *field.Error {
	name := run.Spec.RerunOf
	invalid := func(format string, args ...any) *field.Error {
		return field.Invalid(field.NewPath("spec", "rerunOf"), name, fmt.Sprintf(format, args...))
	}
	switch {
	case source == nil:
		return invalid("PipelineRun %s does not exist in namespace %s", name, run.Namespace)
	case !source.Status.Phase.Finished():
		phase := source.Status.Phase
		if phase == "" {
			phase = conveyorv1.RunPending
		}
		return invalid("PipelineRun %s has not finished (it is %s): wait for it or cancel it first", name, phase)
	case source.Status.Phase == conveyorv1.RunSucceeded:
		return invalid("PipelineRun %s succeeded: there is nothing to rerun; start a new run instead", name)
	case source.Status.Phase == conveyorv1.RunRejected:
		return invalid("PipelineRun %s was rejected at stage %s: a refusal stops that release for good", name, source.Status.CurrentStage)
	case source.Spec.PipelineRef.Name != run.Spec.PipelineRef.Name:
		return invalid("PipelineRun %s ran Pipeline %s, not %s", name, source.Spec.PipelineRef.Name, run.Spec.PipelineRef.Name)
	case source.Spec.Git != run.Spec.Git:
		return invalid("PipelineRun %s ran %s at commit %q; a rerun runs the same ref and commit, and this one is %s at commit %q",
			name, RefString(source.Spec.Git), source.Spec.Git.Commit, RefString(run.Spec.Git), run.Spec.Git.Commit)
	case !equality.Semantic.DeepEqual(paramMap(source.Spec.Params), paramMap(run.Spec.Params)):
		return invalid("PipelineRun %s ran with other params (%s); a rerun gives the same params, and this one gives %s: start a new run to change them",
			name, paramList(source.Spec.Params), paramList(run.Spec.Params))
	}
	return nil
}

// ReusedStages are the stages a rerun takes over from the run it reruns: its
// stages, in order, that succeeded with the same definition as in spec, up
// to the first that did not. An approval stage is taken over only when it
// says carryOverToReruns, and none of its decisions is the rerun's own
// requester's (separation of duties holds across reruns). Each is marked
// with the run it came from.
func ReusedStages(source, run *conveyorv1.PipelineRun, spec *conveyorv1.PipelineSpec) []conveyorv1.StageStatus {
	if source.Status.PipelineSpec == nil {
		return nil
	}
	was := map[string]*conveyorv1.Stage{}
	for i := range source.Status.PipelineSpec.Stages {
		was[source.Status.PipelineSpec.Stages[i].Name] = &source.Status.PipelineSpec.Stages[i]
	}
	done := map[string]*conveyorv1.StageStatus{}
	for i := range source.Status.Stages {
		done[source.Status.Stages[i].Name] = &source.Status.Stages[i]
	}
	var out []conveyorv1.StageStatus
	for _, stage := range RunStages(spec, run.Spec.Git) {
		old, ss := was[stage.Name], done[stage.Name]
		if old == nil || ss == nil || ss.Phase != conveyorv1.StageSucceeded || !equality.Semantic.DeepEqual(*old, stage) {
			break
		}
		if IsGate(&stage) && (!stage.Approval.CarryOverToReruns || decidedBy(ss, run, &stage)) {
			break
		}
		reused := *ss.DeepCopy()
		if reused.ReusedFrom == "" {
			reused.ReusedFrom = source.Name
		}
		out = append(out, reused)
	}
	return out
}

// decidedBy reports whether a gate's decisions include one the run's
// requester may not give on it (separation of duties).
func decidedBy(ss *conveyorv1.StageStatus, run *conveyorv1.PipelineRun, stage *conveyorv1.Stage) bool {
	for _, d := range ss.Decisions {
		if SelfApproval(run, stage, d.Approver) {
			return true
		}
	}
	return false
}

func paramMap(ps []conveyorv1.Param) map[string]string {
	m := map[string]string{}
	for _, p := range ps {
		m[p.Name] = p.Value
	}
	return m
}

func paramList(ps []conveyorv1.Param) string {
	if len(ps) == 0 {
		return "none"
	}
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Name + "=" + strconv.Quote(p.Value)
	}
	return strings.Join(out, ", ")
}
