package controllers

import (
	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/runstate"
)

// Scheme holds the kinds the manager reads and writes.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(conveyorv1.AddToScheme(s))
	return s
}

// slimJob keeps of a cached Job what the reconcilers read (metadata and
// status): its pod template is most of its size and nothing reads it.
func slimJob(obj any) (any, error) {
	job, ok := obj.(*batchv1.Job)
	if !ok {
		return obj, nil
	}
	job.ManagedFields = nil
	job.Spec = batchv1.JobSpec{}
	return job, nil
}

// slimFinishedRun drops the pipeline snapshot of finished runs from the
// cache: nothing decides anything for them any more, and the snapshot is most
// of a run's size. Status patches are diffs, so the stored snapshot stays.
func slimFinishedRun(obj any) (any, error) {
	run, ok := obj.(*conveyorv1.PipelineRun)
	if !ok {
		return obj, nil
	}
	run.ManagedFields = nil
	if run.Status.Phase.Finished() {
		run.Status.PipelineSpec = nil
	}
	return run, nil
}

// ManagerConfig is what main's flags (or a test) choose for the manager.
type ManagerConfig struct {
	// MetricsAddr is where metrics are served; "0" turns them off.
	MetricsAddr string
	// ProbeAddr is where /healthz and /readyz are served; "0" turns them off.
	ProbeAddr string
	// LeaderElect makes replicas elect one leader.
	LeaderElect bool
	// LeaderElectionNamespace holds the lease; the manager's own namespace when empty.
	LeaderElectionNamespace string
	// WebhookHost, WebhookPort and WebhookCertDir configure the admission
	// webhook server (tls.crt and tls.key in WebhookCertDir).
	WebhookHost    string
	WebhookPort    int
	WebhookCertDir string
}

// ManagerOptions are the manager's options. Its cache holds only the Jobs
// Conveyor created (by label), not every Job of the cluster.
func ManagerOptions(c ManagerConfig) ctrl.Options {
	ours, err := labels.NewRequirement(runstate.LabelRunUID, selection.Exists, nil)
	utilruntime.Must(err)
	return ctrl.Options{
		Scheme:                  Scheme(),
		Metrics:                 metricsserver.Options{BindAddress: c.MetricsAddr},
		HealthProbeBindAddress:  c.ProbeAddr,
		LeaderElection:          c.LeaderElect,
		LeaderElectionID:        "conveyor.conveyor.dev",
		LeaderElectionNamespace: c.LeaderElectionNamespace,
		WebhookServer:           webhook.NewServer(webhook.Options{Host: c.WebhookHost, Port: c.WebhookPort, CertDir: c.WebhookCertDir}),
		Cache: cache.Options{
			// Nothing reads managedFields: drop them from every cached object.
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				&batchv1.Job{}:            {Label: labels.NewSelector().Add(*ours), Transform: slimJob},
				&conveyorv1.PipelineRun{}: {Transform: slimFinishedRun},
			},
		},
	}
}
