package cli

import (
	"fmt"
	"strings"
	"time"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// RunView is what a person looks at for one run: the terminal graph and the
// dashboard both draw it, so they say the same thing.
type RunView struct {
	Namespace    string      `json:"namespace"`
	Name         string      `json:"name"`
	Pipeline     string      `json:"pipeline"`
	Ref          string      `json:"ref"`
	Commit       string      `json:"commit,omitempty"`
	Phase        string      `json:"phase"`
	Symbol       string      `json:"symbol"`
	CurrentStage string      `json:"currentStage,omitempty"`
	Requester    string      `json:"requester,omitempty"`
	RerunOf      string      `json:"rerunOf,omitempty"`
	Message      string      `json:"message,omitempty"`
	Created      time.Time   `json:"created"`
	Finished     bool        `json:"finished"`
	Cancelled    bool        `json:"cancelled,omitempty"`
	Stages       []StageView `json:"stages"`
	// Actions a person may ask for on the run as a whole: cancel, rerun.
	Actions []string `json:"actions,omitempty"`
}

// StageView is one column of the graph.
type StageView struct {
	Name string `json:"name"`
	// Kind is auto, manual or approval.
	Kind        string         `json:"kind"`
	Environment string         `json:"environment,omitempty"`
	Namespace   string         `json:"namespace,omitempty"`
	Phase       string         `json:"phase"`
	Symbol      string         `json:"symbol"`
	Message     string         `json:"message,omitempty"`
	HeldBy      string         `json:"heldBy,omitempty"`
	ReusedFrom  string         `json:"reusedFrom,omitempty"`
	Decisions   []DecisionView `json:"decisions,omitempty"`
	Jobs        []JobView      `json:"jobs"`
	// Actions a person may ask for on the stage: trigger, approve, reject,
	// override. The API server still decides whether this person may.
	Actions []string `json:"actions,omitempty"`
}

// DecisionView is an Approval a stage took into account.
type DecisionView struct {
	Approval string `json:"approval"`
	Decision string `json:"decision"`
	Approver string `json:"approver"`
	Comment  string `json:"comment,omitempty"`
	// OverrideFreeze: the decision deployed the stage during a freeze window.
	OverrideFreeze bool `json:"overrideFreeze,omitempty"`
}

// JobView is one job of a stage.
type JobView struct {
	Name      string `json:"name"`
	Phase     string `json:"phase"`
	Symbol    string `json:"symbol"`
	Namespace string `json:"namespace,omitempty"`
	JobName   string `json:"jobName,omitempty"`
	Attempts  int32  `json:"attempts,omitempty"`
	Message   string `json:"message,omitempty"`
	// Results are what the job wrote, as NAME=VALUE.
	Results []string `json:"results,omitempty"`
}

// symbols mark a phase in the graph; colours add to them on a terminal and
// in the dashboard, never replace them.
var symbols = map[string]string{
	"Pending":   "○",
	"Running":   "●",
	"Waiting":   "◆",
	"Frozen":    "❄",
	"Blocked":   "⊘",
	"Queued":    "…",
	"Succeeded": "✔",
	"Failed":    "✘",
	"Rejected":  "✘",
	"Expired":   "✘",
	"Cancelled": "⊘",
}

func symbol(phase string) string {
	if s, ok := symbols[phase]; ok {
		return s
	}
	return "?"
}

// View turns a run, and its Pipeline when the run has not snapshotted one yet
// (pipeline may be nil), into what the graph draws.
func View(run *conveyorv1.PipelineRun, pipeline *conveyorv1.Pipeline) RunView {
	v := RunView{
		Namespace: run.Namespace, Name: run.Name, Pipeline: run.Spec.PipelineRef.Name,
		Ref: run.Status.Ref, Commit: run.Spec.Git.Commit, Phase: string(run.Status.Phase),
		CurrentStage: run.Status.CurrentStage, RerunOf: run.Spec.RerunOf,
		Created: run.CreationTimestamp.Time, Finished: run.Status.Phase.Finished(), Cancelled: run.Spec.Cancelled,
	}
	if v.Ref == "" {
		if run.Spec.Git.Tag != "" {
			v.Ref = "tag/" + run.Spec.Git.Tag
		} else {
			v.Ref = "branch/" + run.Spec.Git.Branch
		}
	}
	if v.Phase == "" {
		v.Phase = string(conveyorv1.RunPending)
	}
	v.Symbol = symbol(v.Phase)
	if run.Spec.Requester != nil {
		v.Requester = run.Spec.Requester.Username
	}
	for _, c := range run.Status.Conditions {
		if c.Type == "Ready" {
			v.Message = c.Message
		}
	}
	spec := run.Status.PipelineSpec
	if spec == nil && pipeline != nil {
		spec = &pipeline.Spec
	}
	defs := map[string]conveyorv1.Stage{}
	if spec != nil {
		for _, s := range spec.Stages {
			defs[s.Name] = s
		}
	}
	switch {
	case len(run.Status.Stages) > 0:
		for _, ss := range run.Status.Stages {
			v.Stages = append(v.Stages, stageView(defs[ss.Name], ss))
		}
	case spec != nil:
		// Not started yet: every stage of the Pipeline, pending (the run
		// decides which apply to its ref when it starts).
		for _, s := range spec.Stages {
			v.Stages = append(v.Stages, stageView(s, conveyorv1.StageStatus{Name: s.Name, Phase: conveyorv1.StagePending}))
		}
	}
	switch {
	case !v.Finished && !run.Spec.Cancelled:
		v.Actions = []string{"cancel"}
	case run.Status.Phase == conveyorv1.RunFailed || run.Status.Phase == conveyorv1.RunExpired || run.Status.Phase == conveyorv1.RunCancelled:
		v.Actions = []string{"rerun"}
	}
	return v
}

func stageView(def conveyorv1.Stage, ss conveyorv1.StageStatus) StageView {
	sv := StageView{
		Name: ss.Name, Kind: "auto", Environment: def.Environment, Namespace: ss.Namespace,
		Phase: string(ss.Phase), Message: ss.Message, HeldBy: ss.HeldBy, ReusedFrom: ss.ReusedFrom,
	}
	switch {
	case def.Approval != nil:
		sv.Kind = "approval"
	case def.When == conveyorv1.WhenManual:
		sv.Kind = "manual"
	}
	if sv.Phase == "" {
		sv.Phase = string(conveyorv1.StagePending)
	}
	sv.Symbol = symbol(sv.Phase)
	for _, d := range ss.Decisions {
		sv.Decisions = append(sv.Decisions, DecisionView{Approval: d.Approval, Decision: string(d.Decision), Approver: d.Approver, Comment: d.Comment, OverrideFreeze: d.OverrideFreeze})
	}
	seen := map[string]bool{}
	for _, j := range ss.Jobs {
		seen[j.Name] = true
		jv := JobView{Name: j.Name, Phase: string(j.Phase), Symbol: symbol(string(j.Phase)),
			Namespace: j.Namespace, JobName: j.JobName, Attempts: j.Attempts, Message: j.Message}
		for _, r := range j.Results {
			v := []rune(r.Value)
			if len(v) > 60 {
				v = append(v[:57], []rune("...")...)
			}
			jv.Results = append(jv.Results, r.Name+"="+string(v))
		}
		sv.Jobs = append(sv.Jobs, jv)
	}
	for _, j := range def.Jobs {
		if !seen[j.Name] {
			sv.Jobs = append(sv.Jobs, JobView{Name: j.Name, Phase: string(conveyorv1.JobPending), Symbol: symbol(string(conveyorv1.JobPending))})
		}
	}
	switch conveyorv1.StagePhase(sv.Phase) {
	case conveyorv1.StageWaiting:
		if sv.Kind == "approval" {
			sv.Actions = []string{"approve", "reject"}
		} else {
			sv.Actions = []string{"trigger"}
		}
	case conveyorv1.StageFrozen:
		sv.Actions = []string{"override"}
	}
	return sv
}

// Notes are the lines under a stage's jobs: who decided it, what it waits
// for, where it deployed.
func (s StageView) Notes() []string {
	var notes []string
	for _, d := range s.Decisions {
		verb := "approved by "
		switch {
		case d.OverrideFreeze:
			verb = "freeze overridden by "
		case s.Kind == "manual":
			verb = "triggered by "
		case d.Decision == string(conveyorv1.DecisionReject):
			verb = "rejected by "
		}
		who := d.Approver
		if who == "" {
			who = "(unrecorded)"
		}
		n := verb + who
		if d.Comment != "" {
			n += fmt.Sprintf(": %q", d.Comment)
		}
		notes = append(notes, n)
	}
	if s.Environment != "" {
		notes = append(notes, "env "+s.Environment)
	}
	if s.ReusedFrom != "" {
		notes = append(notes, "reused from "+s.ReusedFrom)
	}
	if s.HeldBy != "" {
		notes = append(notes, "held by "+s.HeldBy)
	}
	switch conveyorv1.StagePhase(s.Phase) {
	case conveyorv1.StageSucceeded, conveyorv1.StagePending, conveyorv1.StageRunning:
	default:
		if m := strings.TrimSpace(s.Message); m != "" {
			notes = append(notes, m)
		}
	}
	return notes
}
