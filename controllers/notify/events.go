package notify

import (
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// Data is the JSON body of every event Conveyor sends.
type Data struct {
	Namespace string `json:"namespace"`
	Run       string `json:"run"`
	RunUID    string `json:"runUID"`
	Pipeline  string `json:"pipeline"`
	Ref       string `json:"ref"`
	Commit    string `json:"commit,omitempty"`
	Requester string `json:"requester,omitempty"`
	// Phase is the run's phase (run events) or the stage's (stage events).
	Phase   string `json:"phase,omitempty"`
	Stage   string `json:"stage,omitempty"`
	Message string `json:"message,omitempty"`
	// WaitingFor are the groups whose members may act on a waiting stage:
	// the approval stage's groups, or the manual stage's triggerGroups.
	WaitingFor []string `json:"waitingFor,omitempty"`
	// Decision is the Approval a stage took into account.
	Decision *conveyorv1.Decision `json:"decision,omitempty"`
}

// FromTransition is the CloudEvent that tells a transition of the run; false
// when the transition is not told (a stage reused by a rerun, or becoming
// Pending). Its id is the
// run's UID and the transition's key, the same each time the transition is
// computed: a sink may see it twice (a manager restarted) and tell by the id.
func FromTransition(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus, t engine.Transition, now time.Time) (cloudevents.Event, bool) {
	d := Data{Namespace: run.Namespace, Run: run.Name, RunUID: string(run.UID), Pipeline: run.Spec.PipelineRef.Name,
		Ref: st.Ref, Commit: run.Spec.Git.Commit}
	if run.Spec.Requester != nil {
		d.Requester = run.Spec.Requester.Username
	}
	var typ, subject string
	switch t.Kind {
	case engine.RunStarted:
		typ, d.Phase = eventType("run", "started"), string(st.Phase)
	case engine.RunEnded:
		typ, d.Phase, d.Stage = eventType("run", string(t.Phase)), string(t.Phase), st.CurrentStage
		if t.Event != nil {
			d.Message = t.Event.Message
		}
	case engine.StageChanged:
		if t.Next.Phase == conveyorv1.StagePending {
			return cloudevents.Event{}, false // every stage, when the run starts: nothing to tell
		}
		what := string(t.Next.Phase)
		if t.Next.Phase == conveyorv1.StageRunning {
			what = "started"
		}
		typ, subject = eventType("stage", what), t.Next.Name
		d.Stage, d.Phase, d.Message = t.Next.Name, string(t.Next.Phase), t.Next.Message
		if t.Next.Phase == conveyorv1.StageWaiting {
			d.WaitingFor = waitingFor(st, t.Next.Name)
		}
	case engine.DecisionAccepted:
		typ, subject, d.Stage = eventType("approval", "accepted"), t.Next.Name, t.Next.Name
		for i := range t.Next.Decisions {
			if strings.HasSuffix(t.Key, "/decision/"+t.Next.Decisions[i].Approval) {
				d.Decision = &t.Next.Decisions[i]
			}
		}
	default:
		return cloudevents.Event{}, false
	}
	e := cloudevents.NewEvent()
	e.SetID(string(run.UID) + "/" + t.Key)
	e.SetSource("/apis/conveyor.dev/v1alpha1/namespaces/" + run.Namespace + "/pipelineruns/" + run.Name)
	e.SetType(typ)
	if subject != "" {
		e.SetSubject(subject)
	}
	e.SetTime(now)
	_ = e.SetData(cloudevents.ApplicationJSON, d)
	return e, true
}

// waitingFor are the groups that may act on a waiting stage.
func waitingFor(st *conveyorv1.PipelineRunStatus, stage string) []string {
	if st.PipelineSpec == nil {
		return nil
	}
	for _, s := range st.PipelineSpec.Stages {
		if s.Name != stage {
			continue
		}
		if s.Approval != nil {
			return s.Approval.Groups
		}
		return s.TriggerGroups
	}
	return nil
}
