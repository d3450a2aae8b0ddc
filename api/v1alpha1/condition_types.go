package v1alpha1

// Condition types, following kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) so that
// kubectl wait, Argo CD and Flux read the health of every Conveyor object alike.
const (
	// ConditionReady is True when the object has reached its desired state: a
	// usable Pipeline, a PipelineRun that succeeded, an Approval taken into account.
	ConditionReady = "Ready"

	// ConditionReconciling is True while the controller is making progress towards
	// the desired state (a run with stages in flight, an approval not yet used).
	ConditionReconciling = "Reconciling"

	// ConditionStalled is True when no progress is possible without a person:
	// an invalid definition, a failed or refused run, a missing target namespace.
	ConditionStalled = "Stalled"
)

// Condition reasons. Events use the same CamelCase words.
const (
	// ReasonValid: the Pipeline definition is usable.
	ReasonValid = "Valid"
	// ReasonInvalidSpec: the definition cannot be used; the message says why.
	ReasonInvalidSpec = "InvalidSpec"

	// ReasonPipelineNotFound: the run's Pipeline does not exist (yet); the run
	// starts when it appears.
	ReasonPipelineNotFound = "PipelineNotFound"
	// ReasonRefNotAllowed: the run's branch or tag matches none of the Pipeline's patterns.
	ReasonRefNotAllowed = "RefNotAllowed"
	// ReasonInvalidParams: the run's params do not match its Pipeline's.
	ReasonInvalidParams = "InvalidParams"
	// ReasonResultMissing: a job succeeded without writing a result it declares.
	ReasonResultMissing = "ResultMissing"
	// ReasonProgressing: a stage of the run is running.
	ReasonProgressing = "Progressing"
	// ReasonWaitingForTrigger: a manual stage waits for an Approval from its trigger groups.
	ReasonWaitingForTrigger = "WaitingForTrigger"
	// ReasonWaitingForApproval: an approval stage waits for its approvers' decision.
	ReasonWaitingForApproval = "WaitingForApproval"
	// ReasonNamespaceNotFound: a stage's environment namespace does not exist.
	ReasonNamespaceNotFound = "NamespaceNotFound"
	// ReasonJobsForbidden: the manager may not create Jobs in a stage's namespace
	// (the ClusterRole conveyor-job-runner is not bound to it there).
	ReasonJobsForbidden = "JobsForbidden"
	// ReasonSucceeded: every stage of the run succeeded.
	ReasonSucceeded = "Succeeded"
	// ReasonFailed: a Job failed, which failed its stage and the run.
	ReasonFailed = "Failed"
	// ReasonRejected: an approval stage was refused ("not approve"); the release stops for good.
	ReasonRejected = "Rejected"
	// ReasonExpired: a stage waited for its people longer than its waitTimeout.
	ReasonExpired = "Expired"
	// ReasonCancelled: spec.cancelled stopped the run.
	ReasonCancelled = "Cancelled"
	// ReasonQueued: a stage waits for its environment, in use by another run.
	ReasonQueued = "Queued"
	// ReasonSuperseded: a newer run of the same Pipeline (environmentQueue:
	// NewestFirst) superseded the run's queued deploy.
	ReasonSuperseded = "Superseded"
	// ReasonInvalidRerun: spec.rerunOf names a run that cannot be rerun (missing,
	// not finished, succeeded, another Pipeline, ref or commit).
	ReasonInvalidRerun = "InvalidRerun"
	// ReasonReleaseRefused: the run's release (its tag, or its commit under
	// another tag) was refused in the release ledger: a refusal is final.
	ReasonReleaseRefused = "ReleaseRefused"
	// ReasonTagMoved: the run names another commit than its tag's Release does.
	ReasonTagMoved = "TagMoved"
	// ReasonJobNameTaken: a Job Conveyor did not make for the run holds the
	// name of one of the stage's Jobs; the stage starts once it is deleted.
	ReasonJobNameTaken = "JobNameTaken"
	// ReasonFrozen: a deploy stage waits for a freeze window of its
	// Environment to close.
	ReasonFrozen = "Frozen"
	// ReasonEnvironmentPolicy: a deploy stage breaks its Environment's policy
	// (or its namespace has no Environment): the message names the rule.
	ReasonEnvironmentPolicy = "EnvironmentPolicy"
	// ReasonTimeout: the run took longer than its Pipeline's timeout.
	ReasonTimeout = "Timeout"

	// ReasonAccepted: the Approval was taken into account by its run.
	ReasonAccepted = "Accepted"
	// ReasonRunNotFound: the Approval names a PipelineRun that does not exist.
	ReasonRunNotFound = "RunNotFound"
	// ReasonStageNotFound: the Approval names a stage that is not in the run's pipeline.
	ReasonStageNotFound = "StageNotFound"
	// ReasonStageNotInRun: the stage exists but does not apply to the run's ref
	// (a tags-only stage in a branch run, for example).
	ReasonStageNotInRun = "StageNotInRun"
	// ReasonStageNotWaiting: the stage has not been reached yet; the Approval is
	// taken into account once it is.
	ReasonStageNotWaiting = "StageNotWaiting"
	// ReasonStageNotManual: the stage runs by itself and takes no Approval.
	ReasonStageNotManual = "StageNotManual"
	// ReasonStageAlreadyDecided: the stage was triggered or decided by other Approvals.
	ReasonStageAlreadyDecided = "StageAlreadyDecided"
	// ReasonRejectNotAllowed: Reject is a decision for approval stages only.
	ReasonRejectNotAllowed = "RejectNotAllowed"
	// ReasonDuplicateApprover: the approver already approved this stage; only
	// distinct approvers count towards required.
	ReasonDuplicateApprover = "DuplicateApprover"
	// ReasonNotInGroups: the user is in none of the groups that may trigger or
	// decide the stage (refused at admission).
	ReasonNotInGroups = "NotInGroups"
	// ReasonSelfApproval: the run's requester may not decide its own approval
	// stage (separation of duties) unless the stage allows it.
	ReasonSelfApproval = "SelfApproval"
	// ReasonApproverNotRecorded: the Approval carries no approver (or run)
	// recorded by Conveyor's admission webhook (it got in while the webhook was not
	// registered): it counts for nothing unless the manager runs with
	// --insecure-trust-unrecorded-approvers.
	ReasonApproverNotRecorded = "ApproverNotRecorded"
	// ReasonRunReplaced: the Approval was given for an earlier run of the same
	// name, deleted since; it never counts for the run that now has the name.
	ReasonRunReplaced = "RunReplaced"
	// ReasonRunFinished: the run had finished before the stage was reached.
	ReasonRunFinished = "RunFinished"
)

// Event reasons that are not condition reasons.
const (
	// EventStageSucceeded is recorded when a stage that recorded results
	// succeeded: it names them. Other successes are in the run's status only.
	EventStageSucceeded = "StageSucceeded"
	// EventStageFailed is recorded when a Job of a stage failed.
	EventStageFailed = "StageFailed"
	// EventStageWaiting is recorded when a stage starts waiting for a person.
	EventStageWaiting = "StageWaiting"
	// EventJobIgnored is recorded for a Job that carries a run's labels but
	// is not one Conveyor made for it (another namespace, name or UID): it
	// never starts, ends or fails a stage.
	EventJobIgnored = "JobIgnored"
	// EventJobDeleted is recorded for each Job a cancelled or timed-out run stops.
	EventJobDeleted = "JobDeleted"
	// EventHistoryPruned is recorded on a Pipeline for each old run deleted by its history limits.
	EventHistoryPruned = "HistoryPruned"
	// EventStageReused is recorded for each stage a rerun reuses from the run it reruns.
	EventStageReused = "StageReused"
)
