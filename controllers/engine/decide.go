package engine

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// JobObservation is what was seen of one Job.
type JobObservation struct {
	// Name, Namespace and UID of the batch/v1 Job.
	Name, Namespace string
	UID             types.UID
	// Phase is Running, Succeeded or Failed.
	Phase conveyorv1.JobPhase
	// Reason and Message come from the Job's terminal condition.
	Reason, Message string
	// StartTime and CompletionTime come from the Job's status.
	StartTime, CompletionTime *metav1.Time
	// Attempts is how many pods the Job started; FailedAttempts how many failed.
	Attempts, FailedAttempts int32
	// ResultsRead says the results of a succeeded Job that declares some
	// were read: ResultsMessage is its pod's termination message ("" when no
	// succeeded pod was found).
	ResultsRead    bool
	ResultsMessage string
}

// ApprovalFact is what was seen of one Approval of the run.
type ApprovalFact struct {
	Name     string
	Stage    string
	Decision conveyorv1.ApprovalDecision
	// Approver identifies the person who created the Approval, as the API
	// server authenticated them; empty when not recorded, and then each
	// Approval counts as its own approver (when unrecorded ones are trusted).
	Approver string
	// RunUID is the run the Approval was given for, recorded at admission;
	// empty when not recorded.
	RunUID  types.UID
	Comment string
	// Groups are the approver's groups as recorded at admission.
	Groups []string
	// OverrideFreeze: the Approval deploys its stage during a freeze window.
	OverrideFreeze bool
	Created        metav1.Time
	// ValuesDigest is the digest of the run's values the Approval approved
	// (recorded at admission); it counts only while the run's are the same.
	ValuesDigest string
}

// approverKey is who counts as one approver.
func (a ApprovalFact) approverKey() string {
	if a.Approver != "" {
		return "user:" + a.Approver
	}
	return "approval:" + a.Name
}

// decision is the Approval as a stage records it.
func (a ApprovalFact) decision() conveyorv1.Decision {
	return conveyorv1.Decision{Approval: a.Name, Decision: a.Decision, Approver: a.Approver, Comment: a.Comment, OverrideFreeze: a.OverrideFreeze}
}

// Facts is everything a decision needs: the run (spec and last status), its
// pipeline snapshot (or, before it has one, its Pipeline and the run it
// reruns), the Jobs and Approvals that exist, its environments' locks, and
// the time.
type Facts struct {
	Run *conveyorv1.PipelineRun
	// Pipeline is the run's Pipeline, read while the run has no snapshot
	// yet; nil when it does not exist.
	Pipeline *conveyorv1.Pipeline
	// RerunSource is the run that spec.rerunOf names, read while the run
	// has no snapshot yet; nil when it does not exist.
	RerunSource *conveyorv1.PipelineRun
	// Locks are the environments' locks observed for the stages ready to
	// deploy (see LocksWanted), keyed by environment; QueueVerdict turns
	// them into Environments.
	Locks map[string]Lock
	// Blocked are the environments whose lock could not be read, with the
	// reason (ReasonNamespaceNotFound or ReasonJobsForbidden): their stages
	// stay queued, and the run says why.
	Blocked map[string]string
	// Jobs are keyed by JobKey(stage, job).
	Jobs map[string]JobObservation
	// Approvals are those naming the run. One without a recorded approver
	// counts only when TrustUnrecordedApprovers is set.
	Approvals []ApprovalFact
	// TrustUnrecordedApprovers counts Approvals that carry no approver
	// recorded at admission (the webhooks were not registered): local use only.
	TrustUnrecordedApprovers bool
	// Ledger is what the release ledger says of a tag run: a refused release
	// or a moved tag stops it, before it starts or in flight.
	Ledger Ledger
	// Policy is every Environment and the labels of the run's namespace:
	// a deploy stage starts only as its Environment allows.
	Policy Policy
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
	Stage conveyorv1.Stage
	// Job is the job with its references to parameters and results replaced.
	Job       conveyorv1.JobSpec
	Name      string
	Namespace string
	// Values are the run's parameters and earlier results as environment
	// variables (CONVEYOR_PARAM_*, CONVEYOR_RESULT_*).
	Values []corev1.EnvVar
}

// Plan is the decision: the run's status as it should read and the Jobs to create.
type Plan struct {
	Status conveyorv1.PipelineRunStatus
	// Unchanged: the run finished, and its status stays as it is.
	Unchanged bool
	// Health, Reason and Message explain the run's phase; they go into the conditions.
	Health          Health
	Reason, Message string
	// Terminal is set when the run can never start (a ref its Pipeline does
	// not allow, a rerun of a run that cannot be rerun): not retried.
	Terminal error
	// Take are the environment locks to take before the Jobs of their stage
	// are created: the environment is free and the run is first in line.
	Take   []LockRequest
	Create []JobToCreate
	// Delete are running Jobs to stop (the run was cancelled or timed out).
	Delete []JobObservation
	// Acquire are the environment locks the run asks about: a stage is ready
	// to deploy there and nothing is known of its lock (see LocksWanted).
	Acquire []LockRequest
	// Ignored are Jobs that carry the run's labels but are not the ones
	// Conveyor made for it (another namespace or name, or another UID than
	// the one recorded): they never start, end or fail a stage.
	Ignored []JobObservation
	// RequeueAfter is when a deadline (a stage's wait, the run's timeout)
	// passes; 0 when none is pending.
	RequeueAfter time.Duration
}

// QueuedRecheck brings queued runs back even when no event does.
const QueuedRecheck = 15 * time.Second

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
	case conveyorv1.ReasonCancelled, conveyorv1.ReasonTimeout, conveyorv1.ReasonExpired, conveyorv1.ReasonSuperseded,
		conveyorv1.ReasonReleaseRefused, conveyorv1.ReasonTagMoved:
	default:
		return Plan{}, false
	}
	p := Plan{Status: *run.Status.DeepCopy(), Health: RunHealth(run.Status.Phase), Reason: ready.Reason, Message: ready.Message}
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
	own, ignored := ownJobs(f)
	f.Jobs = own
	d := decider{f: f, prev: map[string]*conveyorv1.StageStatus{}, byStage: approvalsByStage(f.Approvals, run.UID, f.TrustUnrecordedApprovers)}
	for i := range run.Status.Stages {
		d.prev[run.Status.Stages[i].Name] = &run.Status.Stages[i]
	}
	st := &d.p.Status
	st.Ref = RefString(run.Spec.Git)
	st.PipelineSpec = run.Status.PipelineSpec
	st.PipelineGeneration = run.Status.PipelineGeneration
	st.Params = run.Status.Params
	st.StartTime = orNow(run.Status.StartTime, f.Now)
	d.stop, d.stopMessage = stopReason(run, f.Now, &d.p)
	if reason, err := ReleaseBar(run, f.Ledger); d.stop == "" && err != nil {
		d.stop, d.stopMessage = reason, err.Error()
	}
	d.p.Ignored = ignored

	stages := RunStages(run.Status.PipelineSpec, run.Spec.Git)
	runPhase := conveyorv1.RunSucceeded
	current := -1 // the first stage that has not succeeded: where the run stands
	for i := range stages {
		ss := d.decideStage(&stages[i], current >= 0)
		st.Stages = append(st.Stages, ss)
		if current >= 0 || ss.Phase == conveyorv1.StageSucceeded {
			continue
		}
		current = i
		runPhase, d.p.Reason = runPhaseOf(&stages[i], ss.Phase, d.stop)
		st.CurrentStage = stages[i].Name
		d.p.Message = fmt.Sprintf("stage %s: %s", stages[i].Name, ss.Message)
	}
	return d.finish(stages, runPhase)
}

// decider decides a run's stages in order.
type decider struct {
	f                 Facts
	p                 Plan
	prev              map[string]*conveyorv1.StageStatus
	byStage           map[string][]ApprovalFact
	stop, stopMessage string
}

// decideStage decides one stage: pending while an earlier stage has not
// succeeded; else reused, or decided as a gate or a job stage, expired past
// its waitTimeout, stopped when the run stops. The plan gathers its Jobs to
// create and delete and its locks.
func (d *decider) decideStage(stage *conveyorv1.Stage, later bool) conveyorv1.StageStatus {
	f, run := d.f, d.f.Run
	old := d.prev[stage.Name]
	if old == nil {
		old = &conveyorv1.StageStatus{}
	}
	var ss conveyorv1.StageStatus
	var create []JobToCreate
	acquire := false
	switch {
	case later:
		return pendingStage(run, stage)
	case old.ReusedFrom != "":
		return *old // a rerun's result of the run it reruns
	}
	stale := d.dropStale(stage.Name)
	switch {
	case IsGate(stage):
		ss = decideGate(stage, old, gateApprovals(run, stage, d.byStage[stage.Name]), f.Now)
	default:
		ss, create, acquire = d.decideJobs(stage, old)
	}
	if ss.Phase == conveyorv1.StageWaiting && len(stale) > 0 {
		ss.Message += fmt.Sprintf("; Approval %s approved other values than the run's now: decide again", strings.Join(stale, ", "))
	}
	if acquire && d.stop == "" {
		d.p.Acquire = append(d.p.Acquire, LockRequest{Stage: stage.Name, Environment: stage.Environment})
	}
	if fact, _ := environmentFact(f, stage); len(create) > 0 && fact.Take {
		d.p.Take = append(d.p.Take, LockRequest{Stage: stage.Name, Environment: stage.Environment})
	}
	if ss.Phase == conveyorv1.StageWaiting && stage.WaitTimeout != nil && ss.StartTime != nil && d.stop == "" {
		deadline := ss.StartTime.Add(stage.WaitTimeout.Duration)
		if f.Now.Time.Before(deadline) {
			d.p.Requeue(deadline.Sub(f.Now.Time))
		} else {
			ss.Phase, ss.CompletionTime = conveyorv1.StageExpired, &f.Now
			ss.Message = fmt.Sprintf("expired: no decision within its waitTimeout of %s, so not approved", stage.WaitTimeout.Duration)
		}
	}
	if d.stop != "" && (ss.Phase == conveyorv1.StageRunning || ss.Phase == conveyorv1.StageWaiting || ss.Phase == conveyorv1.StageQueued ||
		ss.Phase == conveyorv1.StageFrozen || ss.Phase == conveyorv1.StageBlocked) {
		create = nil
		d.p.Take = nil
		d.p.Delete = append(d.p.Delete, stopStage(&ss, d.stop, d.stopMessage, f)...)
	}
	d.p.Create = append(d.p.Create, create...)
	return ss
}

// dropStale leaves out of a stage's Approvals the Approves made for other
// values than the run has before the stage now (its parameters and the
// results of the stages before it): an approval covers exactly what ships.
// It returns the names of those left out. A Reject always counts.
func (d *decider) dropStale(stage string) []string {
	if len(d.byStage[stage]) == 0 {
		return nil // most reconciles: no digest to compute
	}
	digest := ValuesDigest(Vars(d.p.Status.Params, d.p.Status.Stages))
	var kept []ApprovalFact
	var stale []string
	for _, a := range d.byStage[stage] {
		if a.Decision == conveyorv1.DecisionApprove && a.ValuesDigest != digest {
			stale = append(stale, a.Name)
			continue
		}
		kept = append(kept, a)
	}
	d.byStage[stage] = kept
	return stale
}

// runPhaseOf is the run's phase and reason while stage, the first that has
// not succeeded, is in phase.
func runPhaseOf(stage *conveyorv1.Stage, phase conveyorv1.StagePhase, stop string) (conveyorv1.RunPhase, string) {
	switch phase {
	case conveyorv1.StageWaiting:
		if IsGate(stage) {
			return conveyorv1.RunWaiting, conveyorv1.ReasonWaitingForApproval
		}
		return conveyorv1.RunWaiting, conveyorv1.ReasonWaitingForTrigger
	case conveyorv1.StageFailed:
		if stop == conveyorv1.ReasonTimeout {
			return conveyorv1.RunFailed, conveyorv1.ReasonTimeout
		}
		return conveyorv1.RunFailed, conveyorv1.ReasonFailed
	case conveyorv1.StageRejected:
		return conveyorv1.RunRejected, conveyorv1.ReasonRejected
	case conveyorv1.StageExpired:
		return conveyorv1.RunExpired, conveyorv1.ReasonExpired
	case conveyorv1.StageQueued:
		return conveyorv1.RunQueued, conveyorv1.ReasonQueued
	case conveyorv1.StageFrozen:
		return conveyorv1.RunWaiting, conveyorv1.ReasonFrozen
	case conveyorv1.StageBlocked:
		return conveyorv1.RunWaiting, conveyorv1.ReasonEnvironmentPolicy
	case conveyorv1.StageCancelled:
		switch stop {
		case "":
			// Cancelled with no cancel or timeout: superseded in its environment's queue.
			return conveyorv1.RunCancelled, conveyorv1.ReasonSuperseded
		case conveyorv1.ReasonReleaseRefused, conveyorv1.ReasonTagMoved:
			return endOf(stop), stop
		}
		return conveyorv1.RunCancelled, conveyorv1.ReasonCancelled
	default: // Running, and Pending (never the first unfinished stage)
		return conveyorv1.RunRunning, conveyorv1.ReasonProgressing
	}
}

// finish completes the plan once every stage is decided.
func (d *decider) finish(stages []conveyorv1.Stage, runPhase conveyorv1.RunPhase) Plan {
	st := &d.p.Status
	st.Phase = runPhase
	if runPhase == conveyorv1.RunSucceeded {
		d.p.Reason = conveyorv1.ReasonSucceeded
		d.p.Message = fmt.Sprintf("all %d stages succeeded", len(stages))
		if len(stages) > 0 {
			st.CurrentStage = stages[len(stages)-1].Name
		}
	}
	if runPhase.Finished() {
		st.CompletionTime = orNow(d.f.Run.Status.CompletionTime, d.f.Now)
	}
	if runPhase == conveyorv1.RunQueued || d.p.Reason == conveyorv1.ReasonEnvironmentPolicy {
		// Events bring a queued run back when its environment frees; this
		// is in case one is missed. A Blocked run is looked at again too:
		// the labels of its namespace are not watched.
		d.p.Requeue(QueuedRecheck)
	}
	d.p.Health = RunHealth(runPhase)
	return d.p
}

// ownJobs keeps of the Jobs observed those Conveyor made for the run (see
// OwnJob). A Job anyone could make with the run's labels and annotation
// elsewhere, under its name after the real one was deleted, or under its name
// before the stage was ready, is returned apart, to be told and ignored.
func ownJobs(f Facts) (map[string]JobObservation, []JobObservation) {
	own := map[string]JobObservation{}
	var ignored []JobObservation
	keys := make([]string, 0, len(f.Jobs))
	for key := range f.Jobs {
		keys = append(keys, key)
	}
	sort.Strings(keys)
	for _, key := range keys {
		if obs := f.Jobs[key]; OwnJob(f, key, obs) {
			own[key] = obs
		} else {
			ignored = append(ignored, obs)
		}
	}
	return own, ignored
}

// OwnJob reports whether an observed Job is the one Conveyor made for the
// run's job key: in the stage's namespace, under the job's deterministic
// name, and with the UID recorded when it was created. Before a UID is
// recorded (a manager stopped between the create and the status write), the
// Job must have been created once the stage was ready: after the run started
// and the stage before it finished, after the trigger of a manual stage, and
// after the run took the lock of the stage's environment. A Job someone made
// under the name ahead of time, to start the stage without its trigger or
// lock, is not the run's.
func OwnJob(f Facts, key string, obs JobObservation) bool {
	run := f.Run
	stageName, jobName, _ := strings.Cut(key, "/")
	stages := RunStages(run.Status.PipelineSpec, run.Spec.Git)
	i := slices.IndexFunc(stages, func(s conveyorv1.Stage) bool { return s.Name == stageName })
	if i < 0 {
		return false
	}
	stage := &stages[i]
	ns := StageNamespace(run.Namespace, stage)
	if obs.Namespace != ns || obs.Name != JobName(run.Namespace, run.Name, stage.Name, jobName, ns) {
		return false
	}
	if uid := recordedUID(run, stageName, jobName); uid != "" {
		return obs.UID == types.UID(uid)
	}
	since, ready := readySince(f, stages, i)
	return ready && (obs.StartTime == nil || !obs.StartTime.Time.Before(since))
}

// recordedUID is the UID the run's status records for a job, "" when none.
func recordedUID(run *conveyorv1.PipelineRun, stage, job string) string {
	for _, ss := range run.Status.Stages {
		if ss.Name != stage {
			continue
		}
		for _, js := range ss.Jobs {
			if js.Name == job {
				return js.UID
			}
		}
	}
	return ""
}

// readySince is the earliest the Jobs of stages[i] can have been made by
// Conveyor, to the second (creation times are whole seconds); ready is false
// while the stage can have none: a manual stage without a trigger that
// counts, an environment stage whose lock the run is not known to hold.
func readySince(f Facts, stages []conveyorv1.Stage, i int) (time.Time, bool) {
	run, stage := f.Run, &stages[i]
	var since time.Time
	later := func(t *metav1.Time) {
		if t != nil && t.Time.After(since) {
			since = t.Time
		}
	}
	later(run.Status.StartTime)
	if i > 0 {
		prev := stages[i-1]
		for _, ss := range run.Status.Stages {
			if ss.Name == prev.Name {
				later(ss.CompletionTime)
			}
		}
		for _, j := range prev.Jobs {
			if obs, ok := f.Jobs[JobKey(prev.Name, j.Name)]; ok {
				later(obs.CompletionTime)
			}
		}
	}
	if IsManual(stage) {
		given := firstApprove(approvalsByStage(f.Approvals, run.UID, f.TrustUnrecordedApprovers)[stage.Name])
		if given == nil {
			return since, false
		}
		later(&given.Created)
	}
	if stage.Environment != "" {
		if fact, ok := environmentFact(f, stage); !ok || !fact.Held {
			return since, false
		}
		if l := f.Locks[stage.Environment]; l.Environment != nil && Holds(l.Environment, run.UID, stage.Name) && l.Environment.Status.HeldSince != nil {
			later(l.Environment.Status.HeldSince)
		}
	}
	return since.Truncate(time.Second), true
}

// approvalsByStage groups the Approvals that count by stage, oldest first
// (then by name): those recorded at admission for this run (an earlier run
// of the same name gives the new one nothing). One without an approver and
// run recorded counts only when trusted: who decided, and for what, comes
// from admission, never from the client (fail closed).
func approvalsByStage(facts []ApprovalFact, run types.UID, trustUnrecorded bool) map[string][]ApprovalFact {
	var approvals []ApprovalFact
	for _, a := range facts {
		if countsFor(a.Approver, a.RunUID, run, trustUnrecorded) == "" {
			approvals = append(approvals, a)
		}
	}
	sort.SliceStable(approvals, func(i, j int) bool {
		if !approvals[i].Created.Equal(&approvals[j].Created) {
			return approvals[i].Created.Before(&approvals[j].Created)
		}
		return approvals[i].Name < approvals[j].Name
	})
	byStage := map[string][]ApprovalFact{}
	for _, a := range approvals {
		byStage[a.Stage] = append(byStage[a.Stage], a)
	}
	return byStage
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

// gateApprovals drops the decisions the approval rules refuse on a gate
// (separation of duties). Admission refuses those already; this keeps the
// rule when an Approval got in some other way.
func gateApprovals(run *conveyorv1.PipelineRun, stage *conveyorv1.Stage, approvals []ApprovalFact) []ApprovalFact {
	var out []ApprovalFact
	for _, a := range approvals {
		if !SelfApproval(run, stage, a.Approver) {
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
		d := a.decision()
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
func (d *decider) decideJobs(stage *conveyorv1.Stage, old *conveyorv1.StageStatus) (conveyorv1.StageStatus, []JobToCreate, bool) {
	run, f, approvals := d.f.Run, d.f, d.byStage[stage.Name]
	ns := StageNamespace(run.Namespace, stage)
	ss := conveyorv1.StageStatus{Name: stage.Name, Namespace: ns, StartTime: old.StartTime, Decisions: old.Decisions}

	started := old.Phase == conveyorv1.StageRunning || old.Phase.Finished()
	for _, j := range stage.Jobs {
		if _, ok := f.Jobs[JobKey(stage.Name, j.Name)]; ok {
			started = true
		}
	}
	if IsManual(stage) && len(ss.Decisions) == 0 {
		ss.Decisions = trigger(approvals)
		if len(ss.Decisions) == 0 && !started {
			ss.Phase = conveyorv1.StageWaiting
			ss.StartTime = orNow(old.StartTime, f.Now)
			ss.Message = "waiting for a trigger from groups " + strings.Join(stage.TriggerGroups, ", ")
			return ss, nil, false
		}
	}
	if stage.Environment != "" && !started {
		gs, held := d.guardDeploy(stage, old, ss)
		if held {
			return gs, nil, false
		}
		ss = gs
		if qs, queued, acquire := queueStage(stage, old, ss, f); queued {
			return qs, nil, acquire
		}
	}
	if old.Phase == conveyorv1.StageWaiting || old.Phase == "" || old.Phase == conveyorv1.StagePending || old.Phase == conveyorv1.StageQueued {
		// The stage starts now: its start time is when its Jobs were first asked for.
		ss.StartTime = &f.Now
	}
	ss.StartTime = orNow(ss.StartTime, f.Now)
	create := jobStatuses(run, stage, old, &ss, f, d.p.Status.Params, d.p.Status.Stages)
	summarizeJobs(stage, old, &ss, f.Now)
	return ss, create, false
}

// trigger is the first Approve among a manual stage's Approvals, as its decision.
func trigger(approvals []ApprovalFact) []conveyorv1.Decision {
	if a := firstApprove(approvals); a != nil {
		return []conveyorv1.Decision{a.decision()}
	}
	return nil
}

// firstApprove is the first Approve among approvals, nil when none.
func firstApprove(approvals []ApprovalFact) *ApprovalFact {
	for i := range approvals {
		if approvals[i].Decision == conveyorv1.DecisionApprove {
			return &approvals[i]
		}
	}
	return nil
}

// jobStatuses fills in the status of each job of a started stage: as
// recorded once finished (a deleted Job undoes nothing), else as its Job is
// observed, with the results a succeeded one wrote; a job without a Job is
// to be created, with the run's parameters and the results of the stages
// before (earlier) in its spec and environment.
func jobStatuses(run *conveyorv1.PipelineRun, stage *conveyorv1.Stage, old *conveyorv1.StageStatus, ss *conveyorv1.StageStatus, f Facts,
	params []conveyorv1.Param, earlier []conveyorv1.StageStatus) []JobToCreate {
	oldJobs := map[string]conveyorv1.JobStatus{}
	for _, js := range old.Jobs {
		oldJobs[js.Name] = js
	}
	var create []JobToCreate
	var vars map[string]string // the run's values, read once a Job is to be created
	for _, j := range stage.Jobs {
		name := JobName(run.Namespace, run.Name, stage.Name, j.Name, ss.Namespace)
		js := conveyorv1.JobStatus{Name: j.Name, JobName: name, Namespace: ss.Namespace}
		obs, seen := f.Jobs[JobKey(stage.Name, j.Name)]
		switch was := oldJobs[j.Name].Phase; {
		case was == conveyorv1.JobSucceeded || was == conveyorv1.JobFailed || was == conveyorv1.JobCancelled:
			js = oldJobs[j.Name]
		case seen:
			js.UID = string(obs.UID)
			js.Phase, js.Reason, js.Message = obs.Phase, obs.Reason, obs.Message
			js.StartTime, js.CompletionTime = obs.StartTime, obs.CompletionTime
			js.Attempts, js.FailedAttempts = obs.Attempts, obs.FailedAttempts
			if js.Phase == conveyorv1.JobRunning && js.FailedAttempts > 0 {
				js.Message = fmt.Sprintf("attempt %d of %d (%d failed)", js.Attempts, 1+retries(&j), js.FailedAttempts)
			}
			if js.Phase == conveyorv1.JobSucceeded && len(j.Results) > 0 {
				readResults(&js, &j, obs)
			}
		default:
			if vars == nil {
				vars = Vars(params, earlier)
			}
			expanded, err := ExpandJob(j, vars)
			if err != nil {
				js.Phase, js.Reason, js.Message, js.CompletionTime = conveyorv1.JobFailed, conveyorv1.ReasonInvalidSpec, err.Error(), &f.Now
				break
			}
			js.Phase = conveyorv1.JobPending
			js.Message = "creating Job"
			create = append(create, JobToCreate{Stage: *stage, Job: expanded, Name: name, Namespace: ss.Namespace, Values: ValueEnv(vars, &j)})
		}
		ss.Jobs = append(ss.Jobs, js)
	}
	return create
}

// resultsNote tells the results a stage's jobs wrote, each value cut short:
// the stage's message, and so its Event and the graph, show them.
func resultsNote(jobs []conveyorv1.JobStatus) string {
	var parts []string
	for _, js := range jobs {
		for _, r := range js.Results {
			v := r.Value
			if len(v) > 72 {
				v = v[:69] + "..."
			}
			parts = append(parts, js.Name+"."+r.Name+"="+v)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "; results " + strings.Join(parts, ", ")
}

// readResults records the results a succeeded job wrote; one that wrote
// none of a declared result fails (reason ResultMissing), and one whose
// pod was not read yet stays Running.
func readResults(js *conveyorv1.JobStatus, j *conveyorv1.JobSpec, obs JobObservation) {
	if !obs.ResultsRead {
		js.Phase, js.Message, js.CompletionTime = conveyorv1.JobRunning, "reading the results the job wrote", nil
		return
	}
	results, err := ParseResults(j.Results, obs.ResultsMessage)
	js.Results = results
	if err != nil {
		js.Phase, js.Reason, js.Message = conveyorv1.JobFailed, conveyorv1.ReasonResultMissing, err.Error()
	}
}

// summarizeJobs sets a started stage's phase from its jobs: Failed when one
// failed (or was cancelled), Succeeded when all succeeded, else Running.
func summarizeJobs(stage *conveyorv1.Stage, old *conveyorv1.StageStatus, ss *conveyorv1.StageStatus, now metav1.Time) {
	var failed, running []string
	for _, js := range ss.Jobs {
		switch js.Phase {
		case conveyorv1.JobFailed, conveyorv1.JobCancelled:
			msg := js.Name
			if js.Reason != "" {
				msg += ": " + js.Reason
			}
			if js.Message != "" {
				msg += ": " + js.Message
			}
			failed = append(failed, msg)
		case conveyorv1.JobSucceeded:
		default:
			running = append(running, js.Name)
		}
	}
	switch {
	case len(failed) > 0:
		ss.Phase = conveyorv1.StageFailed
		ss.Message = "job " + strings.Join(failed, "; job ")
		ss.CompletionTime = orNow(old.CompletionTime, now)
	case len(running) == 0:
		ss.Phase = conveyorv1.StageSucceeded
		ss.Message = fmt.Sprintf("%d job(s) succeeded", len(stage.Jobs)) + resultsNote(ss.Jobs)
		ss.CompletionTime = orNow(old.CompletionTime, now)
	default:
		ss.Phase = conveyorv1.StageRunning
		ss.Message = "running jobs " + strings.Join(running, ", ")
		if len(ss.Decisions) > 0 {
			ss.Message += ", triggered by " + decisionsBy(ss.Decisions)
		}
	}
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
