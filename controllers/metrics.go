package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
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
	jobsCreated = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "conveyor_jobs_created_total",
		Help: "batch/v1 Jobs created for the stages of runs.",
	})
)

func init() {
	ctrlmetrics.Registry.MustRegister(runsStarted, runsFinished, stageDuration, approvalWait, jobsCreated)
}
