package engine

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// JobObservation is what was seen of one Job.
type JobObservation struct {
	// Name and Namespace of the batch/v1 Job.
	Name, Namespace string
	// Phase is Running, Succeeded or Failed.
	Phase conveyorv1.JobPhase
	// Reason and Message come from the Job's terminal condition.
	Reason, Message string
	// StartTime and CompletionTime come from the Job's status.
	StartTime, CompletionTime *metav1.Time
	// Attempts is how many pods the Job started; FailedAttempts how many failed.
	Attempts, FailedAttempts int32
}

// ApprovalFact is what was seen of one Approval of the run.
type ApprovalFact struct {
	Name     string
	Stage    string
	Decision conveyorv1.ApprovalDecision
	// Approver identifies the person who created the Approval, as the API
	// server authenticated them; empty when not recorded, and then each
	// Approval counts as its own approver.
	Approver string
	Created  metav1.Time
}

// approverKey is who counts as one approver.
func (a ApprovalFact) approverKey() string {
	if a.Approver != "" {
		return "user:" + a.Approver
	}
	return "approval:" + a.Name
}

// Facts is everything a decision needs: the run (spec and last status), its
// pipeline snapshot, the Jobs and Approvals that exist, and the time.
type Facts struct {
	Run *conveyorv1.PipelineRun
	// Jobs are keyed by JobKey(stage, job).
	Jobs map[string]JobObservation
	// Approvals are those naming the run.
	Approvals []ApprovalFact
	// Environments are what is known of the locks of the environments the
	// run's stages are ready to deploy to, keyed by environment; a stage
	// ready for an environment not listed here is queued and asks for it.
	Environments map[string]EnvironmentFact
	Now          metav1.Time
}

// JobKey keys a job of a stage in Facts.Jobs.
func JobKey(stage, job string) string { return stage + "/" + job }

// JobToCreate is a Job the plan wants to exist.
type JobToCreate struct {
	Stage     conveyorv1.Stage
	Job       conveyorv1.JobSpec
	Name      string
	Namespace string
}

// Plan is the decision: the run's status as it should read and the Jobs to create.
type Plan struct {
	Status conveyorv1.PipelineRunStatus
	// Reason and Message explain the run's phase; they go into the conditions.
	Reason, Message string
	Create          []JobToCreate
	// Delete are running Jobs to stop (the run was cancelled or timed out).
	Delete []JobObservation
	// Acquire are the environment locks the run asks for: a stage is ready
	// to deploy there. Decide again with what was learnt in Facts.Environments.
	Acquire []LockRequest
	// RequeueAfter is when a deadline (a stage's wait, the run's timeout)
	// passes; 0 when none is pending.
	RequeueAfter time.Duration
}

// LockRequest asks for an environment's lock for a stage.
type LockRequest struct{ Stage, Environment string }

// Requeue keeps the earliest of the plan's pending deadline and d.
func (p *Plan) Requeue(d time.Duration) {
	if d <= 0 {
		d = time.Second
	}
	if p.RequeueAfter == 0 || d < p.RequeueAfter {
		p.RequeueAfter = d
	}
}

// stopReason says why a run stops before its stages end: cancelled, or past
// its Pipeline's timeout; "" when it goes on.
func stopReason(run *conveyorv1.PipelineRun, now metav1.Time, p *Plan) (reason, message string) {
	if run.Spec.Cancelled {
		return conveyorv1.ReasonCancelled, "cancelled (spec.cancelled)"
	}
	if spec := run.Status.PipelineSpec; spec != nil && spec.Timeout != nil && run.Status.StartTime != nil {
		deadline := run.Status.StartTime.Add(spec.Timeout.Duration)
		if !now.Time.Before(deadline) {
			return conveyorv1.ReasonTimeout, fmt.Sprintf("run timed out: it took longer than the Pipeline's timeout of %s", spec.Timeout.Duration)
		}
		p.Requeue(deadline.Sub(now.Time))
	}
	return "", ""
}

// stoppedRun is a run that ended by cancel, timeout or expiry: nothing about
// it changes any more (its stopped Jobs are gone, and must not be recreated).
func stoppedRun(run *conveyorv1.PipelineRun) (Plan, bool) {
	if !run.Status.Phase.Finished() {
		return Plan{}, false
	}
	ready := meta.FindStatusCondition(run.Status.Conditions, conveyorv1.ConditionReady)
	if ready == nil {
		return Plan{}, false
	}
	switch ready.Reason {
	case conveyorv1.ReasonCancelled, conveyorv1.ReasonTimeout, conveyorv1.ReasonExpired, conveyorv1.ReasonSuperseded:
	default:
		return Plan{}, false
	}
	p := Plan{Status: *run.Status.DeepCopy(), Reason: ready.Reason, Message: ready.Message}
	p.Status.Conditions = nil
	return p, true
}

// Decide computes the run's status and the Jobs to create. The run must carry a
// pipeline snapshot. Finished jobs and decided approval stages recorded in the
// last status stay as they were (a deleted Job or Approval undoes nothing);
// everything else is read from the Jobs and Approvals observed.
func Decide(f Facts) Plan {
	run := f.Run
	if p, ok := stoppedRun(run); ok {
		return p
	}
	prev := map[string]*conveyorv1.StageStatus{}
	for i := range run.Status.Stages {
		prev[run.Status.Stages[i].Name] = &run.Status.Stages[i]
	}
	byStage := map[string][]ApprovalFact{}
	approvals := append([]ApprovalFact(nil), f.Approvals...)
	sort.SliceStable(approvals, func(i, j int) bool {
		if !approvals[i].Created.Equal(&approvals[j].Created) {
			return approvals[i].Created.Before(&approvals[j].Created)
		}
		return approvals[i].Name < approvals[j].Name
	})
	for _, a := range approvals {
		byStage[a.Stage] = append(byStage[a.Stage], a)
	}

	p := Plan{}
	st := &p.Status
	st.Ref = RefString(run.Spec.Git)
	st.PipelineSpec = run.Status.PipelineSpec
	st.PipelineGeneration = run.Status.PipelineGeneration
	st.StartTime = orNow(run.Status.StartTime, f.Now)

	stages := RunStages(run.Status.PipelineSpec, run.Spec.Git)
	stop, stopMessage := stopReason(run, f.Now, &p)
	runPhase := conveyorv1.RunSucceeded
	blocked := false
	for i := range stages {
		stage := &stages[i]
		old := prev[stage.Name]
		if old == nil {
			old = &conveyorv1.StageStatus{}
		}
		var ss conveyorv1.StageStatus
		var create []JobToCreate
		acquire := false
		switch {
		case blocked:
			ss = pendingStage(run, stage)
		case old.ReusedFrom != "":
			ss = *old // a rerun's result of the run it reruns
		case IsGate(stage):
			ss = decideGate(stage, old, gateApprovals(run, stage, byStage[stage.Name]), f.Now)
		default:
			ss, create, acquire = decideJobs(run, stage, old, byStage[stage.Name], f)
		}
		if acquire && stop == "" {
			p.Acquire = append(p.Acquire, LockRequest{Stage: stage.Name, Environment: stage.Environment})
		}
		if !blocked && ss.Phase == conveyorv1.StageWaiting && stage.WaitTimeout != nil && ss.StartTime != nil && stop == "" {
			deadline := ss.StartTime.Add(stage.WaitTimeout.Duration)
			if f.Now.Time.Before(deadline) {
				p.Requeue(deadline.Sub(f.Now.Time))
			} else {
				ss.Phase, ss.CompletionTime = conveyorv1.StageExpired, &f.Now
				ss.Message = fmt.Sprintf("expired: no decision within its waitTimeout of %s, so not approved", stage.WaitTimeout.Duration)
			}
		}
		if !blocked && stop != "" && (ss.Phase == conveyorv1.StageRunning || ss.Phase == conveyorv1.StageWaiting || ss.Phase == conveyorv1.StageQueued) {
			create = nil
			p.Delete = append(p.Delete, stopStage(&ss, stop, stopMessage, f)...)
		}
		p.Create = append(p.Create, create...)
		st.Stages = append(st.Stages, ss)
		if blocked {
			continue
		}
		switch ss.Phase {
		case conveyorv1.StageSucceeded:
			continue
		case conveyorv1.StageRunning:
			runPhase, p.Reason = conveyorv1.RunRunning, conveyorv1.ReasonProgressing
		case conveyorv1.StageWaiting:
			runPhase, p.Reason = conveyorv1.RunWaiting, conveyorv1.ReasonWaitingForTrigger
			if IsGate(stage) {
				p.Reason = conveyorv1.ReasonWaitingForApproval
			}
		case conveyorv1.StageFailed:
			runPhase, p.Reason = conveyorv1.RunFailed, conveyorv1.ReasonFailed
		case conveyorv1.StageRejected:
			runPhase, p.Reason = conveyorv1.RunRejected, conveyorv1.ReasonRejected
		case conveyorv1.StageExpired:
			runPhase, p.Reason = conveyorv1.RunExpired, conveyorv1.ReasonExpired
		case conveyorv1.StageQueued:
			runPhase, p.Reason = conveyorv1.RunQueued, conveyorv1.ReasonQueued
		case conveyorv1.StageCancelled:
			runPhase, p.Reason = conveyorv1.RunCancelled, conveyorv1.ReasonCancelled
			if stop == "" {
				// Cancelled with no cancel or timeout: superseded in its environment's queue.
				p.Reason = conveyorv1.ReasonSuperseded
			}
		}
		if stop == conveyorv1.ReasonTimeout && ss.Phase == conveyorv1.StageFailed {
			p.Reason = conveyorv1.ReasonTimeout
		}
		st.CurrentStage = stage.Name
		p.Message = fmt.Sprintf("stage %s: %s", stage.Name, ss.Message)
		blocked = true
	}
	st.Phase = runPhase
	if runPhase == conveyorv1.RunSucceeded {
		p.Reason = conveyorv1.ReasonSucceeded
		p.Message = fmt.Sprintf("all %d stages succeeded", len(stages))
		if len(stages) > 0 {
			st.CurrentStage = stages[len(stages)-1].Name
		}
	}
	if runPhase.Finished() {
		st.CompletionTime = orNow(run.Status.CompletionTime, f.Now)
	}
	return p
}

// stopStage ends a running or waiting stage of a run that stops: Cancelled
// when cancelled, Failed when timed out; its unfinished jobs become Cancelled.
// It returns the Jobs to delete.
func stopStage(ss *conveyorv1.StageStatus, reason, message string, f Facts) []JobObservation {
	var del []JobObservation
	for i := range ss.Jobs {
		js := &ss.Jobs[i]
		if js.Phase == conveyorv1.JobSucceeded || js.Phase == conveyorv1.JobFailed {
			continue
		}
		if obs, ok := f.Jobs[JobKey(ss.Name, js.Name)]; ok {
			del = append(del, obs)
		} else if js.JobName != "" {
			// Created by an earlier reconcile, maybe not in the cache yet:
			// deleted by name (a Job that does not exist is no error).
			del = append(del, JobObservation{Name: js.JobName, Namespace: js.Namespace})
		}
		js.Phase, js.Reason, js.Message, js.CompletionTime = conveyorv1.JobCancelled, reason, "Job deleted: "+message, &f.Now
	}
	ss.Phase, ss.Message, ss.CompletionTime = conveyorv1.StageCancelled, message, &f.Now
	if reason == conveyorv1.ReasonTimeout {
		ss.Phase = conveyorv1.StageFailed
	}
	return del
}

func orNow(t *metav1.Time, now metav1.Time) *metav1.Time {
	if t != nil {
		return t
	}
	n := now
	return &n
}

// pendingStage is a stage the run has not reached.
func pendingStage(run *conveyorv1.PipelineRun, stage *conveyorv1.Stage) conveyorv1.StageStatus {
	ss := conveyorv1.StageStatus{Name: stage.Name, Phase: conveyorv1.StagePending, Message: "waiting for the stages before it"}
	if !IsGate(stage) {
		ss.Namespace = StageNamespace(run.Namespace, stage)
		for _, j := range stage.Jobs {
			ss.Jobs = append(ss.Jobs, conveyorv1.JobStatus{Name: j.Name, Namespace: ss.Namespace, Phase: conveyorv1.JobPending})
		}
	}
	return ss
}

// gateApprovals drops the decisions of the run's own requester on its gate
// unless the Pipeline allows them. Admission refuses those already; this keeps
// the rule when an Approval got in some other way.
func gateApprovals(run *conveyorv1.PipelineRun, stage *conveyorv1.Stage, approvals []ApprovalFact) []ApprovalFact {
	if stage.Approval.AllowRunRequester || run.Spec.Requester == nil || run.Spec.Requester.Username == "" {
		return approvals
	}
	var out []ApprovalFact
	for _, a := range approvals {
		if a.Approver != run.Spec.Requester.Username {
			out = append(out, a)
		}
	}
	return out
}

// decideGate decides an approval stage: one Reject refuses it, `required`
// Approves from distinct approvers pass it, anything less keeps it waiting. A
// decided gate stays decided.
func decideGate(stage *conveyorv1.Stage, old *conveyorv1.StageStatus, approvals []ApprovalFact, now metav1.Time) conveyorv1.StageStatus {
	if old.Phase.Finished() {
		return *old
	}
	ss := conveyorv1.StageStatus{Name: stage.Name, StartTime: orNow(old.StartTime, now)}
	required := int(stage.Approval.Required)
	if required < 1 {
		required = 1
	}
	seen := map[string]bool{}
	var approves []conveyorv1.Decision
	for _, a := range approvals {
		d := conveyorv1.Decision{Approval: a.Name, Decision: a.Decision, Approver: a.Approver}
		if a.Decision == conveyorv1.DecisionReject {
			ss.Phase = conveyorv1.StageRejected
			ss.Decisions = []conveyorv1.Decision{d}
			ss.CompletionTime = &now
			ss.Message = "refused by " + who(a)
			return ss
		}
		if seen[a.approverKey()] {
			continue
		}
		seen[a.approverKey()] = true
		approves = append(approves, d)
	}
	if len(approves) >= required {
		ss.Phase = conveyorv1.StageSucceeded
		ss.Decisions = approves[:required]
		ss.CompletionTime = &now
		ss.Message = fmt.Sprintf("approved by %s", decisionsBy(ss.Decisions))
		return ss
	}
	ss.Phase = conveyorv1.StageWaiting
	ss.Decisions = approves
	ss.Message = fmt.Sprintf("waiting for %d more approval(s) from groups %s", required-len(approves), strings.Join(stage.Approval.Groups, ", "))
	return ss
}

// decideJobs decides a job stage: a manual stage waits for an Approve; a
// stage with an environment waits for that environment's lock (and asks for
// it: the last result); then every job runs as a Job; a failed Job fails the
// stage.
func decideJobs(run *conveyorv1.PipelineRun, stage *conveyorv1.Stage, old *conveyorv1.StageStatus, approvals []ApprovalFact, f Facts) (conveyorv1.StageStatus, []JobToCreate, bool) {
	ns := StageNamespace(run.Namespace, stage)
	ss := conveyorv1.StageStatus{Name: stage.Name, Namespace: ns, StartTime: old.StartTime, Decisions: old.Decisions}

	started := old.Phase == conveyorv1.StageRunning || old.Phase.Finished()
	for _, j := range stage.Jobs {
		if _, ok := f.Jobs[JobKey(stage.Name, j.Name)]; ok {
			started = true
		}
	}
	if IsManual(stage) && len(ss.Decisions) == 0 {
		for _, a := range approvals {
			if a.Decision == conveyorv1.DecisionApprove {
				ss.Decisions = []conveyorv1.Decision{{Approval: a.Name, Decision: a.Decision, Approver: a.Approver}}
				break
			}
		}
		if len(ss.Decisions) == 0 && !started {
			ss.Phase = conveyorv1.StageWaiting
			ss.StartTime = orNow(old.StartTime, f.Now)
			ss.Message = "waiting for a trigger from groups " + strings.Join(stage.TriggerGroups, ", ")
			return ss, nil, false
		}
	}
	if stage.Environment != "" && !started {
		if qs, queued, acquire := queueStage(stage, old, ss, f); queued {
			return qs, nil, acquire
		}
	}
	if old.Phase == conveyorv1.StageWaiting || old.Phase == "" || old.Phase == conveyorv1.StagePending || old.Phase == conveyorv1.StageQueued {
		// The stage starts now: its start time is when its Jobs were first asked for.
		ss.StartTime = &f.Now
	}
	ss.StartTime = orNow(ss.StartTime, f.Now)

	oldJobs := map[string]conveyorv1.JobStatus{}
	for _, js := range old.Jobs {
		oldJobs[js.Name] = js
	}
	var create []JobToCreate
	var failed, running []string
	for _, j := range stage.Jobs {
		name := JobName(run.Namespace, run.Name, stage.Name, j.Name, ns)
		js := conveyorv1.JobStatus{Name: j.Name, JobName: name, Namespace: ns}
		obs, seen := f.Jobs[JobKey(stage.Name, j.Name)]
		switch {
		case oldJobs[j.Name].Phase == conveyorv1.JobSucceeded || oldJobs[j.Name].Phase == conveyorv1.JobFailed:
			js = oldJobs[j.Name]
		case oldJobs[j.Name].Phase == conveyorv1.JobCancelled:
			js = oldJobs[j.Name]
		case seen:
			js.Phase, js.Reason, js.Message = obs.Phase, obs.Reason, obs.Message
			js.StartTime, js.CompletionTime = obs.StartTime, obs.CompletionTime
			js.Attempts, js.FailedAttempts = obs.Attempts, obs.FailedAttempts
			if js.Phase == conveyorv1.JobRunning && js.FailedAttempts > 0 {
				js.Message = fmt.Sprintf("attempt %d of %d (%d failed)", js.Attempts, 1+retries(&j), js.FailedAttempts)
			}
		default:
			js.Phase = conveyorv1.JobPending
			js.Message = "creating Job"
			create = append(create, JobToCreate{Stage: *stage, Job: j, Name: name, Namespace: ns})
		}
		ss.Jobs = append(ss.Jobs, js)
		switch js.Phase {
		case conveyorv1.JobFailed, conveyorv1.JobCancelled:
			msg := j.Name
			if js.Reason != "" {
				msg += ": " + js.Reason
			}
			if js.Message != "" {
				msg += ": " + js.Message
			}
			failed = append(failed, msg)
		case conveyorv1.JobSucceeded:
		default:
			running = append(running, j.Name)
		}
	}
	switch {
	case len(failed) > 0:
		ss.Phase = conveyorv1.StageFailed
		ss.Message = "job " + strings.Join(failed, "; job ")
		ss.CompletionTime = orNow(old.CompletionTime, f.Now)
	case len(running) == 0:
		ss.Phase = conveyorv1.StageSucceeded
		ss.Message = fmt.Sprintf("%d job(s) succeeded", len(stage.Jobs))
		ss.CompletionTime = orNow(old.CompletionTime, f.Now)
	default:
		ss.Phase = conveyorv1.StageRunning
		ss.Message = "running jobs " + strings.Join(running, ", ")
		if len(ss.Decisions) > 0 {
			ss.Message += ", triggered by " + decisionsBy(ss.Decisions)
		}
	}
	return ss, create, false
}

// retries is the job's retries, 0 when unset.
func retries(j *conveyorv1.JobSpec) int32 {
	if j.Retries == nil {
		return 0
	}
	return *j.Retries
}

func who(a ApprovalFact) string {
	if a.Approver != "" {
		return a.Approver + " (Approval " + a.Name + ")"
	}
	return "Approval " + a.Name
}

func decisionsBy(ds []conveyorv1.Decision) string {
	var out []string
	for _, d := range ds {
		out = append(out, who(ApprovalFact{Name: d.Approval, Approver: d.Approver}))
	}
	return strings.Join(out, ", ")
}
