package pipelinerun

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/index"
)

// Conveyor's metrics, served on the manager's metrics endpoint with
// controller-runtime's own. They count transitions the reconciler records in a
// run's status, once each: a restarted manager does not count them again.
var (
	runsStarted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "conveyor_pipelineruns_started_total",
		Help: "PipelineRuns that took their Pipeline's snapshot and started.",
	})
	runsFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_pipelineruns_finished_total",
		Help: "PipelineRuns that finished, by result (Succeeded, Failed, Rejected).",
	}, []string{"result"})
	stageDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "conveyor_stage_duration_seconds",
		Help:    "Time from a stage's start (or its trigger, for a manual stage) to its end, by stage and result.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 s to about 2 h
	}, []string{"stage", "result"})
	approvalWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "conveyor_approval_wait_seconds",
		Help:    "Time a manual or approval stage waited for people, from the start of its wait to the decision that ended it.",
		Buckets: prometheus.ExponentialBuckets(10, 2, 14), // 10 s to about 45 h
	}, []string{"stage"})
	environmentQueueWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "conveyor_environment_queue_wait_seconds",
		Help:    "Time a stage waited for its environment, in use by another run's deploy, by environment.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14), // 1 s to about 2 h
	}, []string{"environment"})
	lockHandovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_environment_lock_handovers_total",
		Help: "Environment locks handed by the deploy that ended to the run queued next, by environment (the other handoffs are taken by the next run itself).",
	}, []string{"environment"})
	jobsCreated = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "conveyor_jobs_created_total",
		Help: "batch/v1 Jobs created for the stages of runs.",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(runsStarted, runsFinished, stageDuration, approvalWait, environmentQueueWait, lockHandovers, jobsCreated, queuedDeploys)
}

// queuedDeploys reports how many stages are queued for each environment, as
// the manager's cache has the runs when Prometheus scrapes. Only the leader
// reports it: replicas share one cluster's state.
var queuedDeploys = &queuedCollector{
	desc: prometheus.NewDesc("conveyor_environment_queued_deploys",
		"Stages queued for an environment another run is deploying to (one deploy at a time per environment), by environment.",
		[]string{"environment"}, nil),
	frozen: prometheus.NewDesc("conveyor_environment_frozen_deploys",
		"Deploy stages waiting for a freeze window of their environment to close, by environment.",
		[]string{"environment"}, nil),
	seen: map[string]bool{},
}

type queuedCollector struct {
	desc    *prometheus.Desc
	frozen  *prometheus.Desc
	mu      sync.Mutex
	reader  client.Reader
	elected <-chan struct{}
	// seen are the environments reported once: they read 0 when none is queued.
	seen map[string]bool
}

// use makes the collector read runs from a manager's cache.
func (c *queuedCollector) use(reader client.Reader, elected <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reader, c.elected = reader, elected
}

func (c *queuedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc; ch <- c.frozen }

func (c *queuedCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.reader == nil {
		return
	}
	select {
	case <-c.elected:
	default:
		return
	}
	// The runs the gauges count, by index: a scrape costs the queued and
	// frozen runs, not every finished run the manager keeps.
	ctx := context.Background()
	queued, held := &conveyorv1.PipelineRunList{}, &conveyorv1.PipelineRunList{}
	if err := c.reader.List(ctx, queued, client.MatchingFields{index.RunGauged: index.Queued}, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	if err := c.reader.List(ctx, held, client.MatchingFields{index.RunGauged: index.Frozen}, client.UnsafeDisableDeepCopy); err != nil {
		return
	}
	counts, frozen := map[string]int{}, map[string]int{}
	for i := range queued.Items {
		if env := engine.QueuedEnvironment(&queued.Items[i]); env != "" {
			counts[env]++
			c.seen[env] = true
		}
	}
	for i := range held.Items {
		for _, ss := range held.Items[i].Status.Stages { // unfinished runs only: the index has no other
			if ss.Phase == conveyorv1.StageFrozen {
				frozen[ss.Namespace]++
				c.seen[ss.Namespace] = true
			}
		}
	}
	for env := range c.seen {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[env]), env)
		ch <- prometheus.MustNewConstMetric(c.frozen, prometheus.GaugeValue, float64(frozen[env]), env)
	}
}
