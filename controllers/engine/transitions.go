package engine

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Transition is one change between a run's last status and the next that a
// person may want told (an Event) or counted (a metric).
type Transition struct {
	// Key names the transition of the run, the same each time it is
	// computed: a reconcile that reads a stale run computes it again, and it
	// is told once.
	Key string
	// Event is what `kubectl describe` shows of it; nil when nothing is told.
	Event *Event
	// Kind says what changed; Prev and Next are the stage before and after
	// (for stage transitions), Phase the run's end (for RunEnded).
	Kind       TransitionKind
	Prev, Next conveyorv1.StageStatus
	Phase      conveyorv1.RunPhase
}

// TransitionKind says what a Transition is.
type TransitionKind int

const (
	// RunStarted: the run took its Pipeline's snapshot.
	RunStarted TransitionKind = iota
	// StageReused: a rerun took over a stage's result from the run it reruns.
	StageReused
	// DecisionAccepted: a stage took an Approval into account.
	DecisionAccepted
	// StageChanged: a stage's phase changed.
	StageChanged
	// RunEnded: the run finished.
	RunEnded
)

// Event is an Event to record on the run.
type Event struct {
	Type, Reason, Action, Message string
}

// stageEvents tells, by the phase a stage enters, the Event that says so.
// Events are kept to what a person acts on or looks for in `kubectl
// describe`: a stage waiting for someone, held (queued, frozen, blocked),
// ended any way but success, and the run's end. A stage starting or
// succeeding is in the run's status (and told to event sinks and the git
// provider), not written as an Event: on a busy cluster those writes were
// most of the API server's work per run. The exception is a stage that
// recorded results: its Succeeded Event names them.
var stageEvents = map[conveyorv1.StagePhase]struct {
	typ, reason, action, format string
}{
	conveyorv1.StageWaiting:   {corev1.EventTypeNormal, conveyorv1.EventStageWaiting, "WaitStage", "Stage %s is %s"},
	conveyorv1.StageQueued:    {corev1.EventTypeNormal, conveyorv1.ReasonQueued, "QueueStage", "Stage %s %s"},
	conveyorv1.StageFrozen:    {corev1.EventTypeNormal, conveyorv1.ReasonFrozen, "FreezeStage", "Stage %s %s"},
	conveyorv1.StageBlocked:   {corev1.EventTypeWarning, conveyorv1.ReasonEnvironmentPolicy, "BlockStage", "Stage %s %s"},
	conveyorv1.StageSucceeded: {corev1.EventTypeNormal, conveyorv1.EventStageSucceeded, "FinishStage", "Stage %s succeeded: %s"},
	conveyorv1.StageFailed:    {corev1.EventTypeWarning, conveyorv1.EventStageFailed, "FinishStage", "Stage %s failed: %s"},
	conveyorv1.StageRejected:  {corev1.EventTypeWarning, conveyorv1.ReasonRejected, "FinishStage", "Stage %s %s"},
	conveyorv1.StageExpired:   {corev1.EventTypeWarning, conveyorv1.ReasonExpired, "FinishStage", "Stage %s %s"},
	conveyorv1.StageCancelled: {corev1.EventTypeNormal, conveyorv1.ReasonCancelled, "FinishStage", "Stage %s cancelled: %s"},
}

// Transitions lists what changed from the run's last status to the plan's:
// its start (and the stages a rerun reuses), each decision taken into
// account, each stage's phase, and its end.
func Transitions(old *conveyorv1.PipelineRunStatus, p *Plan) []Transition {
	next := &p.Status
	var out []Transition
	if old.PipelineSpec == nil && next.PipelineSpec != nil {
		out = append(out, Transition{Key: "run/started", Kind: RunStarted})
		for _, ss := range next.Stages {
			if ss.ReusedFrom != "" {
				out = append(out, Transition{Key: "run/reused/" + ss.Name, Kind: StageReused, Next: ss, Event: &Event{corev1.EventTypeNormal, conveyorv1.EventStageReused, "ReuseStage",
					fmt.Sprintf("Stage %s reuses the result of run %s (%s): it does not run again", ss.Name, ss.ReusedFrom, strings.ToLower(string(ss.Phase)))}})
			}
		}
	}
	was := map[string]conveyorv1.StageStatus{}
	for _, s := range old.Stages {
		was[s.Name] = s
	}
	for _, s := range next.Stages {
		if s.ReusedFrom == "" { // a reused stage is told as reused
			out = append(out, stageTransitions(was[s.Name], s)...)
		}
	}
	if next.Phase != old.Phase && next.Phase.Finished() {
		out = append(out, Transition{Key: "run/" + string(next.Phase), Kind: RunEnded, Phase: next.Phase, Event: runEnd(p)})
	}
	return out
}

// stageTransitions are a stage's new decisions and its change of phase.
func stageTransitions(prev, s conveyorv1.StageStatus) []Transition {
	var out []Transition
	known := map[string]bool{}
	for _, d := range prev.Decisions {
		known[d.Approval] = true
	}
	for _, d := range s.Decisions {
		if !known[d.Approval] {
			// Told in the stage's status and on the Approval; no Event.
			out = append(out, Transition{Key: s.Name + "/decision/" + d.Approval, Kind: DecisionAccepted, Prev: prev, Next: s})
		}
	}
	if prev.Phase == s.Phase {
		return out
	}
	t := Transition{Key: s.Name + "/" + string(s.Phase), Kind: StageChanged, Prev: prev, Next: s}
	if e, ok := stageEvents[s.Phase]; ok && (s.Phase != conveyorv1.StageSucceeded || hasResults(s)) {
		t.Event = &Event{e.typ, e.reason, e.action, fmt.Sprintf(e.format, s.Name, s.Message)}
	}
	return append(out, t)
}

// hasResults tells whether any job of the stage recorded a result.
func hasResults(s conveyorv1.StageStatus) bool {
	for _, j := range s.Jobs {
		if len(j.Results) > 0 {
			return true
		}
	}
	return false
}

// runEnd is the Event of a run's end: a run that could never start says
// why; any other says how it ended.
func runEnd(p *Plan) *Event {
	if p.Terminal != nil {
		return &Event{corev1.EventTypeWarning, p.Reason, "Validate", p.Message}
	}
	typ := corev1.EventTypeWarning
	if p.Status.Phase == conveyorv1.RunSucceeded || p.Status.Phase == conveyorv1.RunCancelled {
		typ = corev1.EventTypeNormal
	}
	return &Event{typ, string(p.Status.Phase), "FinishRun", "Run " + strings.ToLower(string(p.Status.Phase))}
}
