package engine

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Outcome is what acting on a plan did, for the status to tell.
type Outcome struct {
	// Created are the Jobs created, by JobKey.
	Created map[string]CreatedJob
	// Blocked are the namespaces where Jobs could not be created or the
	// environment locked, with the reason (ReasonNamespaceNotFound,
	// ReasonJobsForbidden, or ReasonJobNameTaken).
	Blocked map[string]string
	// Unlocked are the locks the plan took that could not be taken (their
	// namespace is blocked): their stages did not start, and stay queued.
	Unlocked []LockRequest
}

// CreatedJob is what is known of a Job the moment it was created: when, and
// its UID (recorded: only that Job counts).
type CreatedJob struct {
	Time metav1.Time
	UID  types.UID
}

// Block notes that Jobs cannot be created (or the environment locked) in ns.
func (o *Outcome) Block(ns, reason string) {
	if o.Blocked == nil {
		o.Blocked = map[string]string{}
	}
	o.Blocked[ns] = reason
}

// Record writes into the plan's status what acting on it did: created Jobs
// run; a stage that cannot start in a blocked namespace stalls the run, and
// says why and what to do. It returns why each blocked stage cannot start.
func (p *Plan) Record(o Outcome) []Blocked {
	for _, req := range o.Unlocked {
		p.stayQueued(req)
	}
	for i := range p.Status.Stages {
		ss := &p.Status.Stages[i]
		for j := range ss.Jobs {
			js := &ss.Jobs[j]
			if created, ok := o.Created[JobKey(ss.Name, js.Name)]; ok {
				js.Phase, js.Message, js.StartTime, js.UID = conveyorv1.JobRunning, "", &created.Time, string(created.UID)
			} else if js.Phase == conveyorv1.JobPending && o.Blocked[ss.Namespace] != "" {
				js.Message = BlockedMessage(o.Blocked[ss.Namespace], ss.Namespace)
			}
		}
	}
	var blocked []Blocked
	for ns, reason := range o.Blocked {
		msg := fmt.Sprintf("stage %s cannot start: %s", p.Status.CurrentStage, BlockedMessage(reason, ns))
		p.Health, p.Reason, p.Message = Stalled, reason, msg
		blocked = append(blocked, Blocked{Reason: reason, Message: msg})
	}
	return blocked
}

// Blocked is why a stage cannot start: a condition reason and a message.
type Blocked struct{ Reason, Message string }

// Error makes a Blocked an error: the reconcile is retried with backoff.
func (b Blocked) Error() string { return b.Message }

// BlockedMessage says why Jobs cannot be created in a namespace, and what to do.
func BlockedMessage(reason, ns string) string {
	switch reason {
	case conveyorv1.ReasonJobsForbidden:
		return fmt.Sprintf("Conveyor may not create Jobs in namespace %s: bind the ClusterRole conveyor-job-runner to the manager there", ns)
	case conveyorv1.ReasonJobNameTaken:
		return fmt.Sprintf("a Job Conveyor did not make for this run holds the name of the stage's Job in namespace %s (see the JobIgnored Event): delete it and the stage starts", ns)
	}
	return fmt.Sprintf("namespace %s does not exist", ns)
}

// stayQueued keeps a stage queued for its environment: its lock could not be
// taken, so its Jobs were not created.
func (p *Plan) stayQueued(req LockRequest) {
	for i := range p.Status.Stages {
		ss := &p.Status.Stages[i]
		if ss.Name != req.Stage {
			continue
		}
		ss.Phase, ss.HeldBy = conveyorv1.StageQueued, ""
		ss.Message = fmt.Sprintf("queued for environment %s", req.Environment)
		for j := range ss.Jobs {
			ss.Jobs[j] = conveyorv1.JobStatus{Name: ss.Jobs[j].Name, Namespace: ss.Namespace, Phase: conveyorv1.JobPending}
		}
		p.Status.Phase, p.Health, p.Reason = conveyorv1.RunQueued, Progressing, conveyorv1.ReasonQueued
		p.Message = fmt.Sprintf("stage %s: %s", ss.Name, ss.Message)
		p.Requeue(QueuedRecheck)
	}
}
