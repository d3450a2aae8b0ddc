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

// Delivery says how deliveries queue and retry.
type Delivery struct {
	// QueueSize bounds a queue; 1000 when 0.
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

// WithDefaults is d with the defaults for what it leaves 0.
func (d Delivery) WithDefaults() Delivery {
	if d.QueueSize <= 0 {
		d.QueueSize = 1000
	}
	if d.Attempts <= 0 {
		d.Attempts = 5
	}
	if d.Backoff <= 0 {
		d.Backoff = 500 * time.Millisecond
	}
	if d.MaxBackoff <= 0 {
		d.MaxBackoff = 30 * time.Second
	}
	if d.Timeout <= 0 {
		d.Timeout = 10 * time.Second
	}
	return d
}

// Retry is Retry with d's attempts and backoff.
func (d Delivery) Retry(ctx context.Context, try func() (retry bool, err error), retried func()) error {
	return Retry(ctx, d.Attempts, d.Backoff, d.MaxBackoff, try, retried)
}

// Options configure a Notifier.
type Options struct {
	// Sinks are the URLs events are POSTed to (CloudEvents HTTP binding,
	// binary mode), cluster-wide.
	Sinks []string
	Delivery
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
	opts.Delivery = opts.Delivery.WithDefaults()
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
	err := n.opts.Retry(ctx, func() (bool, error) {
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, n.opts.Timeout)
		defer cancel()
		res := s.client.Send(actx, e)
		latency.WithLabelValues(s.label).Observe(time.Since(start).Seconds())
		if cloudevents.IsACK(res) {
			return false, nil
		}
		return retryable(res), res
	}, func() { retries.WithLabelValues(s.label).Inc() })
	if err == nil {
		sent.WithLabelValues(s.label, "delivered").Inc()
		return
	}
	if ctx.Err() != nil {
		return
	}
	sent.WithLabelValues(s.label, "failed").Inc()
	n.opts.Log.Info("Event not delivered", "sink", s.label, "type", e.Type(), "id", e.ID(), "error", err.Error())
}

// Retry calls try up to attempts times while it fails and says to retry,
// waiting backoff before the first retry and twice as long each time after,
// up to maxBackoff; retried is called before each retry. It returns try's
// last error (nil once it succeeds), or ctx's when ctx ends while waiting.
func Retry(ctx context.Context, attempts int, backoff, maxBackoff time.Duration, try func() (retry bool, err error), retried func()) error {
	wait := backoff
	for attempt := 1; ; attempt++ {
		again, err := try()
		if err == nil || !again || attempt >= attempts {
			return err
		}
		retried()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, maxBackoff)
	}
}

// retryable: no answer, or an answer that says try later.
func retryable(res error) bool {
	var r *cehttp.Result
	if !errors.As(res, &r) {
		return true
	}
	return RetryableStatus(r.StatusCode)
}

// RetryableStatus says whether an HTTP answer means "try again later":
// 5xx, 408 Request Timeout, 429 Too Many Requests.
func RetryableStatus(code int) bool { return code >= 500 || code == 408 || code == 429 }

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
