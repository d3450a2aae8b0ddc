// Package notify sends a CloudEvent for each transition of a run (started,
// a stage waiting for a person, queued, frozen, succeeded, failed, rejected,
// cancelled, an approval taken into account) to HTTP sinks. Each sink has a
// bounded queue and a sender of its own: a reconcile only enqueues, never
// waits; a full queue drops the event and counts it; a failed delivery is
// retried with exponential backoff, then counted as failed.
package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/outbound"
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
	// binary mode), cluster-wide. They are the cluster admin's: no guard.
	Sinks []string
	// Guard checks the URLs of Pipelines' own sinks (spec.notifications),
	// at each send and each connection. Nil allows any host but the
	// always-refused addresses.
	Guard *outbound.Guard
	// Secrets reads the Secrets of Pipeline sinks' urlFrom (the manager's
	// API reader: Secrets are not cached). Without it such sinks fail.
	Secrets client.Reader
	// Idle is how long a Pipeline sink's sender waits for events before it
	// stops (started again by the next event); 10m when 0.
	Idle time.Duration
	Delivery
}

// Notifier delivers events to its sinks. Its zero value and nil drop
// everything: the manager runs without sinks unless given some.
type Notifier struct {
	opts Options
	// sinks are the cluster's; pipelineSinks are started on their first
	// event and stop when idle.
	sinks []*sink
	// ce sends CloudEvents to Pipeline sinks (through guarded); http sends
	// their templated bodies.
	ce   cloudevents.Client
	http *http.Client

	mu            sync.Mutex
	ctx           context.Context // set by Start
	wg            sync.WaitGroup
	pipelineSinks map[string]*sink
}

// sink is one queue and its sender.
type sink struct {
	label string
	queue chan delivery
	// client sends cluster sinks' events; nil for a Pipeline sink.
	client cloudevents.Client
}

// delivery is an event on its way to a sink; cfg and namespace are set for
// a Pipeline's sink.
type delivery struct {
	event     cloudevents.Event
	cfg       *conveyorv1.EventSink
	namespace string
}

// New makes a Notifier for the sinks; Start sends.
func New(opts Options) (*Notifier, error) {
	opts.Delivery = opts.Delivery.WithDefaults()
	if opts.Idle <= 0 {
		opts.Idle = 10 * time.Minute
	}
	n := &Notifier{opts: opts, pipelineSinks: map[string]*sink{}, http: opts.Guard.Client(opts.Timeout)}
	ce, err := cloudevents.NewClientHTTP(cehttp.WithClient(*n.http))
	if err != nil {
		return nil, err
	}
	n.ce = ce
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
		n.sinks = append(n.sinks, &sink{label: u.Scheme + "://" + u.Host + u.Path, queue: make(chan delivery, opts.QueueSize), client: c})
	}
	return n, nil
}

// Enqueue queues the event for every cluster sink, and for the sinks of the
// run's Pipeline (its snapshot's spec.notifications) that take its type,
// without waiting: a sink whose queue is full drops it
// (conveyor_cloudevents_total{result="dropped"}).
// run, when not nil, is the run the event tells of, and spec its snapshot.
func (n *Notifier) Enqueue(e cloudevents.Event, run *conveyorv1.PipelineRun, spec *conveyorv1.PipelineSpec) {
	if n == nil {
		return
	}
	for _, s := range n.sinks {
		n.put(s, delivery{event: e})
	}
	if run == nil || spec == nil || spec.Notifications == nil {
		return
	}
	short := ShortType(e.Type())
	for i := range spec.Notifications.Sinks {
		cfg := &spec.Notifications.Sinks[i]
		if len(cfg.Types) > 0 && !slices.Contains(cfg.Types, short) {
			continue
		}
		n.mu.Lock()
		s := n.pipelineSink(run.Namespace + "/" + run.Spec.PipelineRef.Name + "/" + cfg.Name)
		n.put(s, delivery{event: e, cfg: cfg, namespace: run.Namespace})
		n.mu.Unlock()
	}
}

// Wants says whether an event of a run with this snapshot goes anywhere.
func (n *Notifier) Wants(spec *conveyorv1.PipelineSpec) bool {
	return n != nil && (len(n.sinks) > 0 || (spec != nil && spec.Notifications != nil))
}

func (n *Notifier) put(s *sink, d delivery) {
	select {
	case s.queue <- d:
		queued.WithLabelValues(s.label).Set(float64(len(s.queue)))
	default:
		sent.WithLabelValues(s.label, "dropped").Inc()
		n.opts.Log.Info("Event sink queue full: event dropped", "sink", s.label, "type", d.event.Type(), "id", d.event.ID())
	}
}

// pipelineSink is the Pipeline sink named label, made and started when it
// has none; n.mu is held.
func (n *Notifier) pipelineSink(label string) *sink {
	if s, ok := n.pipelineSinks[label]; ok {
		return s
	}
	s := &sink{label: label, queue: make(chan delivery, n.opts.QueueSize)}
	n.pipelineSinks[label] = s
	if n.ctx != nil {
		n.run(n.ctx, s, true)
	}
	return s
}

// Start sends queued events until ctx ends (a manager.Runnable). Events
// still queued then are not sent.
func (n *Notifier) Start(ctx context.Context) error {
	n.mu.Lock()
	n.ctx = ctx
	for _, s := range n.sinks {
		n.run(ctx, s, false)
	}
	for _, s := range n.pipelineSinks {
		n.run(ctx, s, true)
	}
	n.mu.Unlock()
	<-ctx.Done()
	// No sender starts after this: the WaitGroup is not added to while waited on.
	n.mu.Lock()
	n.ctx = nil
	n.mu.Unlock()
	n.wg.Wait()
	return nil
}

// run starts s's sender; a Pipeline sink's stops after Idle without events
// (it is made again by the next one).
func (n *Notifier) run(ctx context.Context, s *sink, idles bool) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		var idle <-chan time.Time
		for {
			if idles {
				idle = time.After(n.opts.Idle)
			}
			select {
			case <-ctx.Done():
				return
			case <-idle:
				n.mu.Lock()
				if len(s.queue) == 0 {
					delete(n.pipelineSinks, s.label)
					queued.DeleteLabelValues(s.label)
					n.mu.Unlock()
					return
				}
				n.mu.Unlock()
			case d := <-s.queue:
				queued.WithLabelValues(s.label).Set(float64(len(s.queue)))
				n.deliver(ctx, s, d)
			}
		}
	}()
}

// NeedLeaderElection: events come from the reconcilers, which run on the leader.
func (n *Notifier) NeedLeaderElection() bool { return true }

// deliver sends one event to one sink, retrying with exponential backoff
// while the sink does not answer or answers 5xx, 408 or 429.
func (n *Notifier) deliver(ctx context.Context, s *sink, d delivery) {
	err := n.opts.Retry(ctx, func() (bool, error) {
		start := time.Now()
		actx, cancel := context.WithTimeout(ctx, n.opts.Timeout)
		defer cancel()
		retry, err := n.attempt(actx, s, d)
		latency.WithLabelValues(s.label).Observe(time.Since(start).Seconds())
		return retry, err
	}, func() { retries.WithLabelValues(s.label).Inc() })
	if err == nil {
		sent.WithLabelValues(s.label, "delivered").Inc()
		return
	}
	if ctx.Err() != nil {
		return
	}
	result := "failed"
	if errors.Is(err, errRefused) {
		result = "refused"
	}
	sent.WithLabelValues(s.label, result).Inc()
	n.opts.Log.Info("Event not delivered", "sink", s.label, "type", d.event.Type(), "id", d.event.ID(), "error", err.Error())
}

// attempt sends once; it says whether a failure is worth another try.
func (n *Notifier) attempt(ctx context.Context, s *sink, d delivery) (bool, error) {
	if d.cfg == nil {
		return ceResult(s.client.Send(ctx, d.event))
	}
	target, err := n.target(ctx, d)
	if err != nil {
		return !errors.Is(err, errRefused), err
	}
	switch d.cfg.Mode {
	case conveyorv1.SinkTemplate:
		return n.postTemplate(ctx, target, d)
	case conveyorv1.SinkStructured:
		ctx = cloudevents.WithEncodingStructured(ctx)
	default:
		ctx = cloudevents.WithEncodingBinary(ctx)
	}
	return ceResult(n.ce.Send(cloudevents.ContextWithTarget(ctx, target), d.event))
}

// errRefused marks a sink URL the outbound guard refuses, or that cannot be
// read: not tried again, counted as result="refused".
var errRefused = errors.New("sink refused")

// target is a Pipeline sink's URL, read from its Secret when it names one,
// and checked by the guard. A Secret that is not there, a key without a
// value and a URL the guard refuses are errRefused; other read errors are
// worth another try.
func (n *Notifier) target(ctx context.Context, d delivery) (string, error) {
	raw := d.cfg.URL
	if ref := d.cfg.URLFrom; ref != nil {
		if n.opts.Secrets == nil {
			return "", fmt.Errorf("%w: urlFrom: the manager reads no Secrets", errRefused)
		}
		var err error
		if raw, err = SecretValue(ctx, n.opts.Secrets, d.namespace, *ref, "url"); err != nil {
			if errors.Is(err, ErrNoValue) || apierrors.IsNotFound(err) {
				return "", fmt.Errorf("%w: urlFrom: %w", errRefused, err)
			}
			return "", fmt.Errorf("urlFrom: %w", err)
		}
	}
	if err := n.opts.Guard.CheckURL(raw); err != nil {
		return "", fmt.Errorf("%w: %w", errRefused, err)
	}
	return raw, nil
}

// postTemplate POSTs the body the sink's template makes of the event.
func (n *Notifier) postTemplate(ctx context.Context, target string, d delivery) (bool, error) {
	body, err := Render(d.cfg.Template, d.event)
	if err != nil {
		return false, fmt.Errorf("%w: %w", errRefused, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("%w: %w", errRefused, err)
	}
	req.Header.Set("Content-Type", "application/json")
	return Do(n.http, req, "sink")
}

// ceResult reads the CloudEvents client's result.
func ceResult(res error) (bool, error) {
	if cloudevents.IsACK(res) {
		return false, nil
	}
	return retryable(res), res
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
		Help: "CloudEvents by sink and result: delivered, failed (after every attempt), dropped (the sink's queue was full), refused (a Pipeline sink's URL the outbound allowlist refuses, or whose Secret or key is not there).",
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
