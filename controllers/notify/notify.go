// Package notify sends a CloudEvent for each transition of a run (started,
// a stage waiting for a person, queued, frozen, succeeded, failed, rejected,
// cancelled, an approval taken into account) to HTTP sinks. Each sink has a
// bounded queue and a sender of its own: a reconcile only enqueues, never
// waits; a full queue drops the event and counts it; a failed delivery is
// retried with exponential backoff, then counted as failed.
package notify

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Options configure a Notifier.
type Options struct {
	// Sinks are the URLs events are POSTed to (CloudEvents HTTP binding,
	// binary mode), cluster-wide.
	Sinks []string
	// QueueSize bounds each sink's queue; 1000 when 0.
	QueueSize int
	// Attempts is how many times a delivery is tried; 5 when 0.
	Attempts int
	// Backoff is the wait before the first retry, doubled each time up to
	// MaxBackoff; 500ms and 30s when 0.
	Backoff, MaxBackoff time.Duration
	// Timeout bounds one attempt; 10s when 0.
	Timeout time.Duration
	// Log receives what could not be delivered.
	Log logr.Logger
}

// Notifier delivers events to its sinks. Its zero value and nil drop
// everything: the manager runs without sinks unless given some.
type Notifier struct {
	opts  Options
	sinks []*sink
}

type sink struct {
	url, label string
	queue      chan cloudevents.Event
	client     cloudevents.Client
}

// New makes a Notifier for the sinks; Start sends.
func New(opts Options) (*Notifier, error) {
	if opts.QueueSize <= 0 {
		opts.QueueSize = 1000
	}
	if opts.Attempts <= 0 {
		opts.Attempts = 5
	}
	if opts.Backoff <= 0 {
		opts.Backoff = 500 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 30 * time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	n := &Notifier{opts: opts}
	for _, raw := range opts.Sinks {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("event sink %q: want an http or https URL", raw)
		}
		c, err := cloudevents.NewClientHTTP(cehttp.WithTarget(raw))
		if err != nil {
			return nil, fmt.Errorf("event sink %q: %w", raw, err)
		}
		// The label names the sink without its query (which may hold a token).
		n.sinks = append(n.sinks, &sink{url: raw, label: u.Scheme + "://" + u.Host + u.Path, queue: make(chan cloudevents.Event, opts.QueueSize), client: c})
	}
	return n, nil
}

// Enqueue queues the event for every sink, without waiting: a sink whose
// queue is full drops it (conveyor_cloudevents_total{result="dropped"}).
func (n *Notifier) Enqueue(e cloudevents.Event) {
	if n == nil {
		return
	}
	for _, s := range n.sinks {
		select {
		case s.queue <- e:
			queued.WithLabelValues(s.label).Set(float64(len(s.queue)))
		default:
			sent.WithLabelValues(s.label, "dropped").Inc()
			n.opts.Log.Info("Event sink queue full: event dropped", "sink", s.label, "type", e.Type(), "id", e.ID())
		}
	}
}

// Start sends queued events until ctx ends (a manager.Runnable). Events
// still queued then are not sent.
func (n *Notifier) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, s := range n.sinks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case e := <-s.queue:
					queued.WithLabelValues(s.label).Set(float64(len(s.queue)))
					n.deliver(ctx, s, e)
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// NeedLeaderElection: events come from the reconcilers, which run on the leader.
func (n *Notifier) NeedLeaderElection() bool { return true }

// deliver sends one event to one sink, retrying with exponential backoff
// while the sink does not answer or answers 5xx, 408 or 429.
func (n *Notifier) deliver(ctx context.Context, s *sink, e cloudevents.Event) {
	wait := n.opts.Backoff
	var last error
	for attempt := 1; attempt <= n.opts.Attempts; attempt++ {
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, n.opts.Timeout)
		res := s.client.Send(actx, e)
		cancel()
		latency.WithLabelValues(s.label).Observe(time.Since(start).Seconds())
		if cloudevents.IsACK(res) {
			sent.WithLabelValues(s.label, "delivered").Inc()
			return
		}
		last = res
		if !retryable(res) || attempt == n.opts.Attempts {
			break
		}
		retries.WithLabelValues(s.label).Inc()
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, n.opts.MaxBackoff)
	}
	sent.WithLabelValues(s.label, "failed").Inc()
	n.opts.Log.Info("Event not delivered", "sink", s.label, "type", e.Type(), "id", e.ID(), "error", last.Error())
}

// retryable: no answer, or an answer that says try later.
func retryable(res error) bool {
	var r *cehttp.Result
	if !errors.As(res, &r) {
		return true
	}
	return r.StatusCode >= 500 || r.StatusCode == 408 || r.StatusCode == 429
}

var (
	sent = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_cloudevents_total",
		Help: "CloudEvents by sink and result: delivered, failed (after every attempt), dropped (the sink's queue was full).",
	}, []string{"sink", "result"})
	retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "conveyor_cloudevents_retries_total",
		Help: "Deliveries of CloudEvents tried again after a sink did not answer or answered 5xx, 408 or 429.",
	}, []string{"sink"})
	queued = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "conveyor_cloudevents_queued",
		Help: "CloudEvents waiting in a sink's queue.",
	}, []string{"sink"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "conveyor_cloudevents_attempt_seconds",
		Help:    "Time of one delivery attempt to a sink.",
		Buckets: prometheus.ExponentialBuckets(0.005, 4, 8),
	}, []string{"sink"})
)

func init() { metrics.Registry.MustRegister(sent, retries, queued, latency) }

// typePrefix starts every event type Conveyor sends.
const typePrefix = "dev.conveyor."

// eventType is typePrefix + kind + "." + what, lower case, + ".v1".
func eventType(kind, what string) string {
	return typePrefix + kind + "." + strings.ToLower(what) + ".v1"
}
