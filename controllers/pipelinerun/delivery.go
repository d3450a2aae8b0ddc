package pipelinerun

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// The delivery measures teams report (DORA), per environment: how often it
// is deployed to and with what result (change failure rate is their ratio),
// how long a change takes to get there, and how long a failed deploy takes
// to be followed by a successful one (time to restore).
var (
	deployments = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_deployments_total",
		Help: "Deploy stages (stages with an environment) that ended, by environment and result (Succeeded, Failed).",
	}, []string{"environment", "result"})
	leadTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "conveyor_deploy_lead_time_seconds",
		Help:    "Time from the pushed commit (its time in the push event, for runs the push receiver started) or else from the run's creation, to its successful deploy, by environment.",
		Buckets: prometheus.ExponentialBuckets(60, 2, 14), // 1 min to about 11 days
	}, []string{"environment"})
	timeToRestore = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "conveyor_deploy_time_to_restore_seconds",
		Help:    "Time from a failed deploy to the next successful deploy of the same environment, by environment (measured by the manager that saw both).",
		Buckets: prometheus.ExponentialBuckets(60, 2, 14),
	}, []string{"environment"})
)

func init() { ctrlmetrics.Registry.MustRegister(deployments, leadTime, timeToRestore) }

// failures are, per environment, when its oldest deploy failure not yet
// followed by a success ended (in memory: a restarted manager starts afresh).
var failures = struct {
	sync.Mutex
	since map[string]time.Time
}{since: map[string]time.Time{}}

// observeDeploy counts a deploy stage that ended, once. A deploy that
// starts makes its environment's series exist at zero, so that the first
// deploy (and the first failure) of an environment is an increase that
// Prometheus's increase() and rate() see, not a series born at 1.
func (r *Reconciler) observeDeploy(run *conveyorv1.PipelineRun, next conveyorv1.StageStatus) {
	env := deployEnvironment(run, next.Name)
	if env != "" && next.Phase == conveyorv1.StageRunning {
		for _, result := range []conveyorv1.StagePhase{conveyorv1.StageSucceeded, conveyorv1.StageFailed} {
			deployments.WithLabelValues(env, string(result))
		}
		leadTime.WithLabelValues(env)
		timeToRestore.WithLabelValues(env)
		return
	}
	if env == "" || next.CompletionTime == nil || (next.Phase != conveyorv1.StageSucceeded && next.Phase != conveyorv1.StageFailed) ||
		!r.told.first(run.UID, next.Name+"/deployed") {
		return
	}
	deployments.WithLabelValues(env, string(next.Phase)).Inc()
	end := next.CompletionTime.Time
	failures.Lock()
	defer failures.Unlock()
	if next.Phase == conveyorv1.StageFailed {
		if _, open := failures.since[env]; !open {
			failures.since[env] = end
		}
		return
	}
	leadTime.WithLabelValues(env).Observe(end.Sub(leadStart(run, end)).Seconds())
	if since, open := failures.since[env]; open {
		timeToRestore.WithLabelValues(env).Observe(end.Sub(since).Seconds())
		delete(failures.since, env)
	}
}

// deployEnvironment is the environment a stage of the run deploys to, "" when none.
func deployEnvironment(run *conveyorv1.PipelineRun, stage string) string {
	if run.Status.PipelineSpec == nil {
		return ""
	}
	for _, s := range run.Status.PipelineSpec.Stages {
		if s.Name == stage {
			return s.Environment
		}
	}
	return ""
}

// leadStart is where a deploy's lead time starts: the pushed commit's time
// when the push receiver recorded it (and it is not after the deploy), else
// the run's creation.
func leadStart(run *conveyorv1.PipelineRun, end time.Time) time.Time {
	if t := run.Spec.Trigger; t != nil && t.CommitTime != nil && !t.CommitTime.After(end) {
		return t.CommitTime.Time
	}
	return run.CreationTimestamp.Time
}
