package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PipelineReference names a Pipeline in the run's namespace.
type PipelineReference struct {
	// name of the Pipeline.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// GitRef is the commit a run builds and the branch or tag it came from.
// Branch and tag names follow git's rules for ref names (git
// check-ref-format) and, stricter, use only letters, digits and . _ / + -:
// they reach jobs as environment variables, where a shell character would be
// a hazard.
// +kubebuilder:validation:XValidation:rule="has(self.branch) != has(self.tag)",message="exactly one of branch or tag must be set"
// +kubebuilder:validation:XValidation:rule="!has(self.tag) || has(self.commit)",message="a tag run names its commit (spec.git.commit): a tag is a release, and its approval binds to one commit"
// +kubebuilder:validation:XValidation:rule="((has(self.branch) ? [self.branch] : []) + (has(self.tag) ? [self.tag] : [])).all(r, !r.contains('..') && !r.contains('//') && !r.contains('/.') && !r.endsWith('.') && !r.endsWith('/') && !r.endsWith('.lock') && !r.contains('.lock/'))",message="not a valid git ref name: no '..', '//', component starting with '.', trailing '.' or '/', or component ending in '.lock' (git check-ref-format)"
type GitRef struct {
	// branch the run builds, e.g. feature_login. Exactly one of branch and tag is set.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._/+-]*$`
	Branch string `json:"branch,omitempty"`

	// tag the run builds, e.g. v1.4.0. Exactly one of branch and tag is set;
	// a tag run names its commit.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9][A-Za-z0-9._/+-]*$`
	Tag string `json:"tag,omitempty"`

	// commit is the commit SHA (abbreviated or full) the run builds; required
	// for a tag run.
	// +optional
	// +kubebuilder:validation:MinLength=4
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[0-9a-fA-F]+$`
	Commit string `json:"commit,omitempty"`
}

// PipelineRunSpec says which Pipeline to run for which git ref. It cannot change
// once the run exists.
// +kubebuilder:validation:XValidation:rule="self.pipelineRef == oldSelf.pipelineRef && self.git == oldSelf.git && has(self.trigger) == has(oldSelf.trigger) && (!has(self.trigger) || self.trigger == oldSelf.trigger) && has(self.requester) == has(oldSelf.requester) && (!has(self.requester) || self.requester == oldSelf.requester) && has(self.rerunOf) == has(oldSelf.rerunOf) && (!has(self.rerunOf) || self.rerunOf == oldSelf.rerunOf) && has(self.params) == has(oldSelf.params) && (!has(self.params) || self.params == oldSelf.params)",message="spec is immutable but for cancelled: create a new PipelineRun instead"
// +kubebuilder:validation:XValidation:rule="!has(oldSelf.cancelled) || !oldSelf.cancelled || (has(self.cancelled) && self.cancelled)",message="a cancelled run stays cancelled"
type PipelineRunSpec struct {
	// pipelineRef names the Pipeline to run, in the run's namespace.
	// +required
	PipelineRef PipelineReference `json:"pipelineRef"`

	// git is the ref and commit to run for.
	// +required
	Git GitRef `json:"git"`

	// trigger says which git event started the run, when the push receiver
	// created it. It is information only: it grants nothing.
	// +optional
	Trigger *Trigger `json:"trigger,omitempty"`

	// rerunOf names a finished run, in the same namespace, of the same
	// Pipeline for the same git ref and commit, that failed, expired or was
	// cancelled (a rejected release stays rejected). The new
	// run reuses the results of its stages that succeeded, in order, up to the
	// first that failed or never ran, and starts there; the old run stays as
	// history. An approval stage's decision is reused only when the stage says
	// approval.carryOverToReruns; a stage whose definition changed since runs again.
	// +optional
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	RerunOf string `json:"rerunOf,omitempty"`

	// cancelled: true stops the run: its running Jobs are deleted (with their
	// pods), a waiting stage never starts, and the run ends as Cancelled. The
	// only change a run's spec accepts.
	// +optional
	Cancelled bool `json:"cancelled,omitempty"`

	// params are the run's values of its Pipeline's params. Conveyor's
	// admission webhook refuses a parameter the Pipeline does not declare, a
	// missing one without a default and a value outside the declared enum.
	// +optional
	// +kubebuilder:validation:MaxItems=32
	// +listType=map
	// +listMapKey=name
	Params []Param `json:"params,omitempty"`

	// requester is who created the run, as the API server authenticated them.
	// Conveyor's admission webhook writes it on create; whatever a client puts
	// here is replaced.
	// +optional
	Requester *UserInfo `json:"requester,omitempty"`
}

// Param is a parameter's value.
type Param struct {
	// name is the parameter's name, as its Pipeline declares it.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// value is the parameter's value, taken literally: $(...) in it is not
	// substituted.
	// +required
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// Result is a value a job wrote.
type Result struct {
	// name is the result's name, as its job declares it.
	// +required
	// +kubebuilder:validation:MaxLength=63
	Name string `json:"name"`

	// value is what the job wrote.
	// +required
	// +kubebuilder:validation:MaxLength=4096
	Value string `json:"value"`
}

// Trigger is the git event that started a run.
type Trigger struct {
	// provider sent the event: gitlab or github.
	// +optional
	// +kubebuilder:validation:MaxLength=32
	Provider string `json:"provider,omitempty"`

	// event is the provider's event type (Push Hook, Tag Push Hook, push).
	// +optional
	// +kubebuilder:validation:MaxLength=64
	Event string `json:"event,omitempty"`

	// delivery is the provider's ID of the delivery.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	Delivery string `json:"delivery,omitempty"`

	// pusher is who pushed, as the provider says: not an identity Conveyor trusts.
	// +optional
	// +kubebuilder:validation:MaxLength=256
	Pusher string `json:"pusher,omitempty"`

	// commitTime is when the pushed commit was made, as the provider's event
	// says (the commit's timestamp): where the delivery metrics' lead time
	// starts.
	// +optional
	CommitTime *metav1.Time `json:"commitTime,omitempty"`
}

// RunPhase is where a PipelineRun stands as a whole.
// +kubebuilder:validation:Enum=Pending;Running;Waiting;Queued;Succeeded;Failed;Rejected;Expired;Cancelled
type RunPhase string

const (
	// RunPending: the run has not started a stage (its Pipeline may be missing).
	RunPending RunPhase = "Pending"
	// RunRunning: a stage's Jobs are running.
	RunRunning RunPhase = "Running"
	// RunWaiting: a manual or approval stage waits for a person, or a
	// deploy stage for its Environment (Frozen, Blocked).
	RunWaiting RunPhase = "Waiting"
	// RunQueued: a stage waits for its environment, which another run's
	// stage is deploying to.
	RunQueued RunPhase = "Queued"
	// RunSucceeded: every stage succeeded.
	RunSucceeded RunPhase = "Succeeded"
	// RunFailed: a Job failed, or the run cannot be used (ref not allowed).
	RunFailed RunPhase = "Failed"
	// RunRejected: an approval stage was refused; nothing after it ever runs.
	RunRejected RunPhase = "Rejected"
	// RunExpired: a manual or approval stage waited longer than its
	// waitTimeout; not approved, and nothing after it runs.
	RunExpired RunPhase = "Expired"
	// RunCancelled: spec.cancelled stopped the run, or a newer run superseded
	// its queued deploy (environmentQueue: NewestFirst).
	RunCancelled RunPhase = "Cancelled"
)

// Finished reports whether the phase is final.
func (p RunPhase) Finished() bool {
	return p == RunSucceeded || p == RunFailed || p == RunRejected || p == RunExpired || p == RunCancelled
}

// StagePhase is where one stage of a run stands.
// +kubebuilder:validation:Enum=Pending;Running;Waiting;Frozen;Blocked;Queued;Succeeded;Failed;Rejected;Expired;Cancelled
type StagePhase string

const (
	// StagePending: the stages before it have not finished.
	StagePending StagePhase = "Pending"
	// StageRunning: its Jobs run.
	StageRunning StagePhase = "Running"
	// StageWaiting: it waits for a trigger (manual) or a decision (approval).
	StageWaiting StagePhase = "Waiting"
	// StageFrozen: a deploy stage that may start waits for a freeze window
	// of its Environment to close (or for an override).
	StageFrozen StagePhase = "Frozen"
	// StageBlocked: a deploy stage that may start breaks its Environment's
	// policy as it reads now (the message names the rule); it starts once
	// the policy or the facts allow it.
	StageBlocked StagePhase = "Blocked"
	// StageQueued: it may start but its environment is in use by another
	// run's stage (one deploy at a time per environment); heldBy says whose.
	StageQueued StagePhase = "Queued"
	// StageSucceeded: all its Jobs succeeded, or it was approved.
	StageSucceeded StagePhase = "Succeeded"
	// StageFailed: one of its Jobs failed.
	StageFailed StagePhase = "Failed"
	// StageRejected: its approvers refused.
	StageRejected StagePhase = "Rejected"
	// StageExpired: it waited for its people longer than its waitTimeout.
	StageExpired StagePhase = "Expired"
	// StageCancelled: the run was cancelled while the stage ran, waited or
	// was queued, or a newer run superseded it in its environment's queue.
	StageCancelled StagePhase = "Cancelled"
)

// Finished reports whether the phase is final.
func (p StagePhase) Finished() bool {
	return p == StageSucceeded || p == StageFailed || p == StageRejected || p == StageExpired || p == StageCancelled
}

// Started reports whether the stage is past waiting for people: queued for
// its environment, running or finished.
func (p StagePhase) Started() bool {
	return p == StageQueued || p == StageRunning || p.Finished()
}

// JobPhase is where one job of a stage stands.
// +kubebuilder:validation:Enum=Pending;Running;Succeeded;Failed;Cancelled
type JobPhase string

const (
	// JobPending: the Job has not been created yet.
	JobPending JobPhase = "Pending"
	// JobRunning: the Job exists and has not finished.
	JobRunning JobPhase = "Running"
	// JobSucceeded: the Job is Complete.
	JobSucceeded JobPhase = "Succeeded"
	// JobFailed: the Job Failed.
	JobFailed JobPhase = "Failed"
	// JobCancelled: the run was cancelled or timed out before the Job finished; the Job was deleted.
	JobCancelled JobPhase = "Cancelled"
)

// JobStatus is the state of one job of a stage.
type JobStatus struct {
	// name is the job's name in the Pipeline.
	Name string `json:"name"`

	// jobName is the name of the batch/v1 Job.
	// +optional
	JobName string `json:"jobName,omitempty"`

	// namespace the Job runs in.
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// uid of the batch/v1 Job Conveyor created, recorded when it created it:
	// only that Job counts for the job, not one of the same name made by
	// someone else after it was deleted.
	// +optional
	// +kubebuilder:validation:MaxLength=128
	UID string `json:"uid,omitempty"`

	// phase of the job.
	Phase JobPhase `json:"phase"`

	// reason is the Job's condition reason when it finished (e.g. BackoffLimitExceeded).
	// +optional
	Reason string `json:"reason,omitempty"`

	// message explains the phase.
	// +optional
	Message string `json:"message,omitempty"`

	// startTime is when the Job started.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the Job finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// attempts is how many pods the Job has started (1 + retries used).
	// +optional
	Attempts int32 `json:"attempts,omitempty"`

	// failedAttempts is how many of those pods failed.
	// +optional
	FailedAttempts int32 `json:"failedAttempts,omitempty"`

	// results are what the job wrote, read from its pod when it succeeded.
	// +optional
	// +listType=map
	// +listMapKey=name
	Results []Result `json:"results,omitempty"`
}

// Decision is an Approval taken into account by a stage.
type Decision struct {
	// approval is the name of the Approval.
	Approval string `json:"approval"`

	// decision it carried.
	Decision ApprovalDecision `json:"decision"`

	// approver is who created the Approval, as the API server authenticated them
	// (empty until identity is recorded at admission).
	// +optional
	Approver string `json:"approver,omitempty"`

	// comment the approver gave.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	Comment string `json:"comment,omitempty"`

	// overrideFreeze: the Approval deployed the stage during a freeze window.
	// +optional
	OverrideFreeze bool `json:"overrideFreeze,omitempty"`
}

// StageStatus is the state of one stage of a run.
type StageStatus struct {
	// name of the stage.
	Name string `json:"name"`

	// phase of the stage.
	Phase StagePhase `json:"phase"`

	// namespace the stage's Jobs run in.
	// +optional
	Namespace string `json:"namespace,omitempty"`

	// message explains the phase: for whom a stage waits, why it failed.
	// +optional
	Message string `json:"message,omitempty"`

	// startTime is when the stage started running or waiting.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the stage finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// decisions are the Approvals that triggered or decided the stage.
	// +optional
	// +listType=atomic
	Decisions []Decision `json:"decisions,omitempty"`

	// heldBy is the run ("namespace/name") deploying to the stage's
	// environment while this stage is queued for it.
	// +optional
	HeldBy string `json:"heldBy,omitempty"`

	// reusedFrom names the run (spec.rerunOf) whose result this stage
	// reuses: it did not run again in this run.
	// +optional
	ReusedFrom string `json:"reusedFrom,omitempty"`

	// jobs are the stage's jobs.
	// +optional
	// +listType=atomic
	Jobs []JobStatus `json:"jobs,omitempty"`
}

// PipelineRunStatus is where a run stands, reconstructed from its Jobs and Approvals.
type PipelineRunStatus struct {
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// conditions: Ready (True once the run succeeded), Reconciling (stages in
	// flight or waiting), Stalled (failed, refused, or blocked on a missing object).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`

	// phase of the run as a whole.
	// +optional
	Phase RunPhase `json:"phase,omitempty"`

	// ref is the run's git ref as "branch/<name>" or "tag/<name>".
	// +optional
	Ref string `json:"ref,omitempty"`

	// currentStage is the stage running or waiting, or the one that ended the run.
	// +optional
	CurrentStage string `json:"currentStage,omitempty"`

	// startTime is when the run started its first stage.
	// +optional
	StartTime *metav1.Time `json:"startTime,omitempty"`

	// completionTime is when the run finished.
	// +optional
	CompletionTime *metav1.Time `json:"completionTime,omitempty"`

	// pipelineGeneration is the generation of the Pipeline that was snapshotted.
	// +optional
	PipelineGeneration int64 `json:"pipelineGeneration,omitempty"`

	// params are the values the run's jobs receive: the ones given and the
	// defaults of the others, fixed when the run starts.
	// +optional
	// +listType=map
	// +listMapKey=name
	Params []Param `json:"params,omitempty"`

	// pipelineSpec is the snapshot of the Pipeline's spec taken when the run
	// started; edits to the Pipeline do not change a run in flight. It was
	// validated as the Pipeline's spec, and only the manager writes status:
	// the API server keeps it without a schema, so the run's ten or so status
	// writes do not check it again each time (docs/performance.md).
	// +optional
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +kubebuilder:pruning:PreserveUnknownFields
	PipelineSpec *PipelineSpec `json:"pipelineSpec,omitempty"`

	// stages are the stages that apply to the run's ref, in order.
	// +optional
	// +listType=atomic
	Stages []StageStatus `json:"stages,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=conveyor
// +kubebuilder:printcolumn:name="Pipeline",type=string,JSONPath=`.spec.pipelineRef.name`
// +kubebuilder:printcolumn:name="Ref",type=string,JSONPath=`.status.ref`
// +kubebuilder:printcolumn:name="Stage",type=string,JSONPath=`.status.currentStage`
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Requester",type=string,priority=1,JSONPath=`.spec.requester.username`
// +kubebuilder:printcolumn:name="Message",type=string,priority=1,JSONPath=`.status.conditions[?(@.type=="Ready")].message`

// PipelineRun is one run of a Pipeline for a branch or tag.
type PipelineRun struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec says what to run.
	// +required
	Spec PipelineRunSpec `json:"spec"`

	// status says where the run stands.
	// +optional
	Status PipelineRunStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// PipelineRunList is a list of PipelineRuns.
type PipelineRunList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []PipelineRun `json:"items"`
}

func init() {
	SchemeBuilder.Register(&PipelineRun{}, &PipelineRunList{})
}
