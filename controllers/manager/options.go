package manager

import (
	"fmt"
	"unique"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Scheme holds the kinds the manager reads and writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(conveyorv1.AddToScheme(s))
	return s
}

// slimJob keeps of a cached Job only what the reconcilers read: its name,
// our labels and annotation, its creation time, and its status counts, times
// and terminal condition. The pod template, the Job controller's bookkeeping
// and the conditions that led there are most of a Job's size.
func slimJob(obj any) (any, error) {
	job, ok := obj.(*batchv1.Job)
	if !ok {
		return obj, nil
	}
	slim := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{
		Name: job.Name, Namespace: intern(job.Namespace), UID: job.UID, ResourceVersion: job.ResourceVersion,
		Generation: job.Generation, CreationTimestamp: job.CreationTimestamp, DeletionTimestamp: job.DeletionTimestamp,
		Labels: map[string]string{
			conveyorv1.LabelRunUID: job.Labels[conveyorv1.LabelRunUID],
			conveyorv1.LabelStage:  intern(job.Labels[conveyorv1.LabelStage]),
			conveyorv1.LabelJob:    intern(job.Labels[conveyorv1.LabelJob]),
		},
		Annotations: map[string]string{conveyorv1.AnnotationRun: job.Annotations[conveyorv1.AnnotationRun]},
	}}
	slim.Status = batchv1.JobStatus{StartTime: job.Status.StartTime, CompletionTime: job.Status.CompletionTime,
		Active: job.Status.Active, Succeeded: job.Status.Succeeded, Failed: job.Status.Failed}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue || (c.Type != batchv1.JobComplete && c.Type != batchv1.JobFailed) {
			continue
		}
		if c.Type == batchv1.JobComplete {
			c.Message = ""
		}
		c.LastProbeTime = metav1.Time{}
		slim.Status.Conditions = append(slim.Status.Conditions, c)
	}
	return slim, nil
}

// intern returns one shared copy of strings many cached objects repeat
// (namespaces, stage and job names).
func intern(s string) string { return unique.Make(s).Value() }

// slimFinishedRun keeps of a finished run, in the cache, what is read of it
// once it finished: its phase and times, and each stage's phase and decisions
// (the Approval controller reads them). A finished run is never
// decided again, and status patches are diffs against what was read, so the
// stored status keeps everything dropped here.
func slimFinishedRun(obj any) (any, error) {
	run, ok := obj.(*conveyorv1.PipelineRun)
	if !ok {
		return obj, nil
	}
	run.ManagedFields = nil
	if !run.Status.Phase.Finished() {
		return run, nil
	}
	run.Status.PipelineSpec = nil
	// Its conditions, resolved parameters and its requester's groups are
	// for people (and a rerun), read from the API server; the requester's
	// name is kept.
	run.Status.Conditions = nil
	run.Status.Params = nil
	if r := run.Spec.Requester; r != nil {
		run.Spec.Requester = &conveyorv1.UserInfo{Username: intern(r.Username)}
	}
	for i, f := range run.Finalizers {
		run.Finalizers[i] = intern(f)
	}
	run.Status.CurrentStage = intern(run.Status.CurrentStage)
	// A new array the length of the stages: the decoder's grew by doubling,
	// and each element is large.
	stages := make([]conveyorv1.StageStatus, len(run.Status.Stages))
	for i, ss := range run.Status.Stages {
		for j := range ss.Decisions {
			d := &ss.Decisions[j]
			d.Decision, d.Approver = conveyorv1.ApprovalDecision(intern(string(d.Decision))), intern(d.Approver)
		}
		stages[i] = conveyorv1.StageStatus{Name: intern(ss.Name), Phase: ss.Phase, Decisions: ss.Decisions}
	}
	run.Status.Stages = stages
	return run, nil
}

// slimApproval keeps of a cached Approval's recorded approver the username,
// the only part the reconcilers read (groups are checked at admission), but
// for an override of a freeze window: a deploy checks its approver's groups
// against the Environment's overrideGroups as they read when it starts.
func slimApproval(obj any) (any, error) {
	a, ok := obj.(*conveyorv1.Approval)
	if !ok {
		return obj, nil
	}
	a.ManagedFields = nil
	if a.Spec.Approver != nil && !a.Spec.OverrideFreeze {
		a.Spec.Approver = &conveyorv1.UserInfo{Username: intern(a.Spec.Approver.Username)}
	}
	a.Spec.Stage = intern(a.Spec.Stage)
	return a, nil
}

// Config is what main's flags (or a test) choose for the manager.
type Config struct {
	// MetricsAddr is where metrics are served; "0" turns them off.
	MetricsAddr string
	// MetricsSecure serves metrics over HTTPS to callers the API server
	// authenticates (TokenReview) and authorizes (SubjectAccessReview: get on
	// the non-resource URL /metrics, as conveyor-metrics-reader grants).
	MetricsSecure bool
	// ProbeAddr is where /healthz and /readyz are served; "0" turns them off.
	ProbeAddr string
	// PprofAddr is where Go's /debug/pprof is served; "" or "0" turns it off.
	PprofAddr string
	// LeaderElect makes replicas elect one leader.
	LeaderElect bool
	// LeaderElectionNamespace holds the lease; the manager's own namespace when empty.
	LeaderElectionNamespace string
	// LeaderElectionID names the lease; DefaultLeaderElectionID when
	// empty. Each shard needs its own.
	LeaderElectionID string
	// WebhookHost, WebhookPort and WebhookCertDir configure the admission
	// webhook server (tls.crt and tls.key in WebhookCertDir).
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
	// Shard, when not nil, limits the manager to the runs whose labels it
	// matches (conveyor.dev/shard, see --watch-label-selector), and to
	// their Jobs and Approvals: the cache holds only those.
	Shard labels.Selector
}

// ParseShard parses a --watch-label-selector; "" is nil (every run).
func ParseShard(selector string) (labels.Selector, error) {
	if selector == "" {
		return nil, nil
	}
	s, err := labels.Parse(selector)
	if err != nil {
		return nil, fmt.Errorf("--watch-label-selector %q: %w", selector, err)
	}
	return s, nil
}

// DefaultLeaderElectionID is the leader election Lease of a manager not told
// another; the manager's Role may update this one by name.
const DefaultLeaderElectionID = "conveyor.conveyor.dev"

// leaderElectionID is the lease the configuration names, or the default.
func leaderElectionID(c Config) string {
	if c.LeaderElectionID == "" {
		return DefaultLeaderElectionID
	}
	return c.LeaderElectionID
}

// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsOptions serves metrics in the open only when MetricsSecure is off
// (a manager run locally, the bench).
func metricsOptions(c Config) metricsserver.Options {
	o := metricsserver.Options{BindAddress: c.MetricsAddr}
	if c.MetricsSecure {
		o.SecureServing = true
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return o
}

// Field selectors of the cache: a Job's status.succeeded count, and an
// Approval's status.settled (a selectable field of its CRD).
const (
	jobSucceededField    = "status.successful"
	approvalSettledField = "status.settled"
)

// Options are the manager's options. Its cache holds only the Jobs
// Conveyor created (by label) that have not succeeded, not every Job of the
// cluster.
func Options(c Config) ctrl.Options {
	ours, err := labels.NewRequirement(conveyorv1.LabelRunUID, selection.Exists, nil)
	utilruntime.Must(err)
	jobs, runs := labels.NewSelector().Add(*ours), labels.Everything()
	if c.Shard != nil {
		reqs, _ := c.Shard.Requirements()
		jobs, runs = jobs.Add(reqs...), c.Shard
	}
	return ctrl.Options{
		Scheme:                  Scheme(),
		Metrics:                 metricsOptions(c),
		HealthProbeBindAddress:  c.ProbeAddr,
		PprofBindAddress:        c.PprofAddr,
		LeaderElection:          c.LeaderElect,
		LeaderElectionID:        leaderElectionID(c),
		LeaderElectionNamespace: c.LeaderElectionNamespace,
		WebhookServer:           webhook.NewServer(webhook.Options{Host: c.WebhookHost, Port: c.WebhookPort, CertDir: c.WebhookCertDir}),
		Cache: cache.Options{
			// Nothing reads managedFields: drop them from every cached object.
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				// Only Jobs that have not succeeded: a run records a Job's
				// success in its status the moment it sees it, and never reads
				// that Job again, so the Jobs of finished runs cost no memory.
				// A Job leaving the cache this way reaches the run as a delete
				// event; the run reads it from the API server, from its watch cache at
				// the version of that event (pipelinerun observeJobs).
				&batchv1.Job{}: {Label: jobs, Field: fields.OneTermEqualSelector(jobSucceededField, "0"), Transform: slimJob},
				// A shard's runs only. Pipelines, Releases and Environments
				// are few and every shard reads them all (the push receiver
				// looks up any Pipeline; a refused release stops its runs).
				&conveyorv1.PipelineRun{}: {Label: runs, Transform: slimFinishedRun},
				// Only Approvals whose verdict can still change: a settled one
				// is never read again (its run recorded it, or never will).
				&conveyorv1.Approval{}: {Label: runs, Field: fields.OneTermNotEqualSelector(approvalSettledField, "true"), Transform: slimApproval},
			},
		},
	}
}
