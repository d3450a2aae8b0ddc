package v1alpha1

// Labels, annotations and finalizers Conveyor puts on the objects it creates
// (Jobs and their pods) and on PipelineRuns. They are part
// of the API: selectors, RBAC-scoped tools and dashboards read them.
// (An environment's lock is its Environment's status: see EnvironmentStatus.
// Until 2026-12-03 it was a Lease named conveyor-environment in the
// environment's namespace, which Conveyor no longer reads or writes.)
const (
	// LabelRunUID selects every Job of a run, in any namespace.
	LabelRunUID = "conveyor.dev/run-uid"
	// LabelStage is the stage's name on a Job and its pods.
	LabelStage = "conveyor.dev/stage"
	// LabelJob is the job's name within the stage, on a Job and its pods.
	LabelJob = "conveyor.dev/job"
	// LabelPipeline is the Pipeline's name on a Release.
	LabelPipeline = "conveyor.dev/pipeline"
	// LabelPush is a hash of the ref and commit on the runs the push receiver
	// creates: it finds its own run when another squats its name.
	LabelPush = "conveyor.dev/push"
	// LabelShard names the manager shard that handles a run: set on a
	// Pipeline by its author, copied onto each new run by the admission
	// webhook, and from the run onto its Approvals and Jobs. A manager
	// started with --watch-label-selector handles only the runs (and their
	// Approvals and Jobs) the selector matches. It cannot change once set.
	LabelShard = "conveyor.dev/shard"
	// LabelManagedBy marks objects Conveyor manages.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	// ManagedByValue is the value of LabelManagedBy.
	ManagedByValue = "conveyor"

	// AnnotationRun is "<namespace>/<name>" of the run that owns a Job.
	AnnotationRun = "conveyor.dev/run"
	// AnnotationPipeline is the name of the run's Pipeline, on a Job and its pods.
	AnnotationPipeline = "conveyor.dev/pipeline"

	// CleanupFinalizer keeps a run until its Jobs in environment namespaces,
	// which owner references cannot reach, are deleted.
	CleanupFinalizer = "conveyor.dev/environment-jobs"
)
