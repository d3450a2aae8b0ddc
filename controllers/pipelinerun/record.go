package pipelinerun

import (
	corev1 "k8s.io/api/core/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/gitstatus"
	"github.com/conveyor-dev/conveyor/controllers/notify"
)

// tell records, once each, the Events and metrics of the transitions from the
// run's last status to the plan's (engine.Transitions), and a Warning for
// each stage that cannot start in a blocked namespace.
func (r *Reconciler) tell(run *conveyorv1.PipelineRun, plan *engine.Plan, blocked []engine.Blocked) {
	for _, t := range engine.Transitions(&run.Status, plan) {
		if t.Kind == engine.StageChanged {
			r.observeStage(run, t.Prev, t.Next)
			r.observeDeploy(run, t.Next)
		}
		if !r.told.first(run.UID, t.Key) {
			continue
		}
		switch t.Kind {
		case engine.RunStarted:
			runsStarted.Inc()
		case engine.RunEnded:
			runsFinished.WithLabelValues(string(t.Phase)).Inc()
		}
		if t.Event != nil {
			r.Recorder.Eventf(run, nil, t.Event.Type, t.Event.Reason, t.Event.Action, "%s", t.Event.Message)
		}
		if r.Notifier.Wants(plan.Status.PipelineSpec) {
			if e, ok := notify.FromTransition(run, &plan.Status, t, r.Now().Time); ok {
				r.Notifier.Enqueue(e, run, plan.Status.PipelineSpec)
			}
		}
		if s, ok := gitstatus.FromTransition(run, &plan.Status, t); ok {
			r.Reporter.Enqueue(s)
		}
	}
	for _, j := range plan.Ignored {
		if r.told.first(run.UID, "ignored/"+string(j.UID)) {
			r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, conveyorv1.EventJobIgnored, "ObserveJob",
				"Ignored Job %s/%s: it carries this run's labels but Conveyor did not make it for this run", j.Namespace, j.Name)
		}
	}
	for _, b := range blocked {
		r.Recorder.Eventf(run, nil, corev1.EventTypeWarning, b.Reason, "CreateJob", "%s", b.Message)
	}
}

// observeStage records a stage's wait for its environment or for people when
// it ends, and its duration when it finishes, each once: a stale read of the
// run may show the same wait ending as another transition.
func (r *Reconciler) observeStage(run *conveyorv1.PipelineRun, prev, next conveyorv1.StageStatus) {
	end := next.StartTime
	if next.Phase.Finished() && next.CompletionTime != nil {
		end = next.CompletionTime
	}
	if prev.Phase == conveyorv1.StageQueued && next.Phase != conveyorv1.StageQueued && prev.StartTime != nil && end != nil && r.told.first(run.UID, next.Name+"/queued") {
		environmentQueueWait.WithLabelValues(prev.Namespace).Observe(end.Sub(prev.StartTime.Time).Seconds())
	}
	if prev.Phase == conveyorv1.StageWaiting && prev.StartTime != nil && end != nil && r.told.first(run.UID, next.Name+"/waited") {
		approvalWait.WithLabelValues(next.Name).Observe(end.Sub(prev.StartTime.Time).Seconds())
	}
	if next.Phase.Finished() && next.StartTime != nil && next.CompletionTime != nil && r.told.first(run.UID, next.Name+"/finished") {
		stageDuration.WithLabelValues(next.Name, string(next.Phase)).Observe(next.CompletionTime.Sub(next.StartTime.Time).Seconds())
	}
}
