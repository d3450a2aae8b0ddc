package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/outbound"
)

// recorder is a sink: a real HTTP server that keeps what it received and
// answers as told.
type recorder struct {
	mu       sync.Mutex
	requests []*http.Request
	bodies   []string
	answer   func(n int) int // status for the n-th request (1-based)
	// hold, when set, keeps each answer until it is closed.
	hold chan struct{}
	srv  *httptest.Server
}

func newRecorder(t *testing.T, answer func(n int) int) *recorder {
	r := &recorder{answer: answer}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.requests = append(r.requests, req)
		r.bodies = append(r.bodies, string(body))
		n := len(r.requests)
		r.mu.Unlock()
		if r.hold != nil {
			<-r.hold
		}
		w.WriteHeader(r.answer(n))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.requests)
}

func ok(int) int { return http.StatusAccepted }

func start(t *testing.T, opts Options) *Notifier {
	t.Helper()
	opts.Delivery.Log = logr.Discard()
	n, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = n.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testRun() (*conveyorv1.PipelineRun, *conveyorv1.PipelineRunStatus) {
	run := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop-ci", Name: "shop-tag-v1-4-0-x7k2p", UID: "uid-1"},
		Spec: conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: "shop"},
			Git: conveyorv1.GitRef{Tag: "v1.4.0", Commit: "3f2a9c1"}, Requester: &conveyorv1.UserInfo{Username: "rita"}},
	}
	st := &conveyorv1.PipelineRunStatus{Ref: "tag/v1.4.0", Phase: conveyorv1.RunWaiting, CurrentStage: "approve",
		PipelineSpec: &conveyorv1.PipelineSpec{Stages: []conveyorv1.Stage{
			{Name: "approve", Approval: &conveyorv1.ApprovalGate{Groups: []string{"release-engineers"}, Required: 1}}}}}
	return run, st
}

// TestBinaryModeDelivery: an event reaches the sink in the CloudEvents HTTP
// binding's binary mode: ce-* headers for the attributes, the data as the
// JSON body, who may act on a waiting stage included.
func TestBinaryModeDelivery(t *testing.T) {
	sinkSrv := newRecorder(t, ok)
	n := start(t, Options{Sinks: []string{sinkSrv.srv.URL + "/events?token=s3cret"}})
	run, st := testRun()
	e, told := FromTransition(run, st, engine.Transition{Key: "approve/Waiting", Kind: engine.StageChanged,
		Next: conveyorv1.StageStatus{Name: "approve", Phase: conveyorv1.StageWaiting, Message: "waits for 1 approval from release-engineers"}},
		time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC))
	if !told {
		t.Fatal("a waiting stage is not told")
	}
	n.Enqueue(e, nil, nil)
	waitFor(t, "the delivery", func() bool { return sinkSrv.count() == 1 })
	req, body := sinkSrv.requests[0], sinkSrv.bodies[0]
	want := map[string]string{
		"Ce-Specversion": "1.0",
		"Ce-Id":          "uid-1/approve/Waiting",
		"Ce-Type":        "dev.conveyor.stage.waiting.v1",
		"Ce-Source":      "/apis/conveyor.dev/v1alpha1/namespaces/shop-ci/pipelineruns/shop-tag-v1-4-0-x7k2p",
		"Ce-Subject":     "approve",
		"Ce-Time":        "2026-12-02T04:00:00Z",
		"Content-Type":   "application/json",
	}
	for h, v := range want {
		if got := req.Header.Get(h); got != v {
			t.Errorf("header %s = %q, want %q", h, got, v)
		}
	}
	if req.Method != http.MethodPost || req.URL.Query().Get("token") != "s3cret" {
		t.Errorf("request %s %s", req.Method, req.URL)
	}
	var d Data
	if err := json.Unmarshal([]byte(body), &d); err != nil {
		t.Fatalf("body %q: %v", body, err)
	}
	if d.Run != run.Name || d.Stage != "approve" || d.Phase != "Waiting" || d.Requester != "rita" || d.Commit != "3f2a9c1" ||
		len(d.WaitingFor) != 1 || d.WaitingFor[0] != "release-engineers" {
		t.Errorf("data %+v", d)
	}
	label := sinkSrv.srv.URL + "/events"
	if got := testutil.ToFloat64(sent.WithLabelValues(label, "delivered")); got != 1 {
		t.Errorf("delivered counter for %s = %v (the label leaves out the query)", label, got)
	}
}

// TestRetriesThenDelivers: a sink answering 500 twice gets the event on the
// third attempt; a 400 is not retried; a sink that is down fails after every
// attempt; all of it counted.
func TestRetriesThenDelivers(t *testing.T) {
	flaky := newRecorder(t, func(n int) int {
		if n <= 2 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	bad := newRecorder(t, func(int) int { return http.StatusBadRequest })
	down := httptest.NewServer(http.NotFoundHandler())
	downURL := down.URL + "/down"
	down.Close()
	n := start(t, Options{Sinks: []string{flaky.srv.URL + "/flaky", bad.srv.URL + "/bad", downURL}, Delivery: Delivery{Attempts: 3, Backoff: 10 * time.Millisecond}})
	run, st := testRun()
	e, _ := FromTransition(run, st, engine.Transition{Key: "run/started", Kind: engine.RunStarted}, time.Now())
	n.Enqueue(e, nil, nil)
	waitFor(t, "three attempts at the flaky sink", func() bool { return flaky.count() == 3 })
	waitFor(t, "the down sink to give up", func() bool { return testutil.ToFloat64(sent.WithLabelValues(downURL, "failed")) == 1 })
	waitFor(t, "the bad sink to give up", func() bool { return testutil.ToFloat64(sent.WithLabelValues(bad.srv.URL+"/bad", "failed")) == 1 })
	if got := testutil.ToFloat64(sent.WithLabelValues(flaky.srv.URL+"/flaky", "delivered")); got != 1 {
		t.Errorf("flaky sink delivered %v", got)
	}
	if got := testutil.ToFloat64(retries.WithLabelValues(flaky.srv.URL + "/flaky")); got != 2 {
		t.Errorf("flaky sink retried %v times, want 2", got)
	}
	if bad.count() != 1 {
		t.Errorf("a 400 was tried %d times, want once", bad.count())
	}
	if got := testutil.ToFloat64(retries.WithLabelValues(downURL)); got != 2 {
		t.Errorf("down sink retried %v times, want 2", got)
	}
}

// TestSlowSinkNeverBlocks: with a sink that answers slowly, Enqueue returns
// at once; past the queue's bound events are dropped and counted, and every
// event that was queued is delivered.
func TestSlowSinkNeverBlocks(t *testing.T) {
	slow := newRecorder(t, ok)
	slow.hold = make(chan struct{})
	label := slow.srv.URL + "/slow"
	n := start(t, Options{Sinks: []string{label}, Delivery: Delivery{QueueSize: 3}})
	run, st := testRun()
	event := func(i int) {
		e, _ := FromTransition(run, st, engine.Transition{Key: fmt.Sprintf("s%d/Running", i), Kind: engine.StageChanged,
			Next: conveyorv1.StageStatus{Name: fmt.Sprintf("s%d", i), Phase: conveyorv1.StageRunning}}, time.Now())
		n.Enqueue(e, nil, nil)
	}
	// The first event is in flight, and the sink holds it: Enqueue must not
	// wait for it (were it to, these calls would never return).
	event(0)
	waitFor(t, "the first event at the sink", func() bool { return slow.count() == 1 })
	for i := 1; i < 10; i++ {
		event(i)
	}
	if dropped := testutil.ToFloat64(sent.WithLabelValues(label, "dropped")); dropped != 6 {
		t.Errorf("dropped %v of the 9 events enqueued behind one in flight with a queue of 3, want 6", dropped)
	}
	close(slow.hold)
	waitFor(t, "the queued events", func() bool { return testutil.ToFloat64(sent.WithLabelValues(label, "delivered")) == 4 })
}

func TestBadSinkRefused(t *testing.T) {
	for _, u := range []string{"ftp://x/y", "not a url", "http://"} {
		if _, err := New(Options{Sinks: []string{u}}); err == nil {
			t.Errorf("sink %q accepted", u)
		}
	}
}

// TestEventTypes: what each transition is told as.
func TestEventTypes(t *testing.T) {
	run, st := testRun()
	for _, tc := range []struct {
		t    engine.Transition
		want string
	}{
		{engine.Transition{Key: "run/started", Kind: engine.RunStarted}, "dev.conveyor.run.started.v1"},
		{engine.Transition{Key: "run/Rejected", Kind: engine.RunEnded, Phase: conveyorv1.RunRejected}, "dev.conveyor.run.rejected.v1"},
		{engine.Transition{Key: "run/Cancelled", Kind: engine.RunEnded, Phase: conveyorv1.RunCancelled}, "dev.conveyor.run.cancelled.v1"},
		{engine.Transition{Key: "production/Frozen", Kind: engine.StageChanged, Next: conveyorv1.StageStatus{Name: "production", Phase: conveyorv1.StageFrozen}}, "dev.conveyor.stage.frozen.v1"},
		{engine.Transition{Key: "production/Queued", Kind: engine.StageChanged, Next: conveyorv1.StageStatus{Name: "production", Phase: conveyorv1.StageQueued}}, "dev.conveyor.stage.queued.v1"},
		{engine.Transition{Key: "build/Running", Kind: engine.StageChanged, Next: conveyorv1.StageStatus{Name: "build", Phase: conveyorv1.StageRunning}}, "dev.conveyor.stage.started.v1"},
		{engine.Transition{Key: "approve/decision/a1", Kind: engine.DecisionAccepted, Next: conveyorv1.StageStatus{Name: "approve",
			Decisions: []conveyorv1.Decision{{Approval: "a1", Decision: conveyorv1.DecisionApprove, Approver: "rob"}}}}, "dev.conveyor.approval.accepted.v1"},
	} {
		e, ok := FromTransition(run, st, tc.t, time.Now())
		if !ok || e.Type() != tc.want {
			t.Errorf("%s: %q %v, want %q", tc.t.Key, e.Type(), ok, tc.want)
		}
		if err := e.Validate(); err != nil {
			t.Errorf("%s: not a valid CloudEvent: %v", tc.t.Key, err)
		}
	}
	e, _ := FromTransition(run, st, engine.Transition{Key: "approve/decision/a1", Kind: engine.DecisionAccepted, Next: conveyorv1.StageStatus{Name: "approve",
		Decisions: []conveyorv1.Decision{{Approval: "a0"}, {Approval: "a1", Decision: conveyorv1.DecisionApprove, Approver: "rob"}}}}, time.Now())
	var d Data
	if err := e.DataAs(&d); err != nil || d.Decision == nil || d.Decision.Approver != "rob" {
		t.Errorf("the approval event's decision: %+v %v", d.Decision, err)
	}
	if _, ok := FromTransition(run, st, engine.Transition{Key: "run/reused/build", Kind: engine.StageReused}, time.Now()); ok {
		t.Error("a reused stage is told as an event")
	}
	if _, ok := FromTransition(run, st, engine.Transition{Key: "build/Pending", Kind: engine.StageChanged,
		Next: conveyorv1.StageStatus{Name: "build", Phase: conveyorv1.StagePending}}, time.Now()); ok {
		t.Error("a stage becoming Pending is told as an event")
	}
}

// pipelineRun is testRun with a Pipeline's own sinks in its snapshot.
func pipelineRun(sinks ...conveyorv1.EventSink) (*conveyorv1.PipelineRun, *conveyorv1.PipelineRunStatus) {
	run, st := testRun()
	st.PipelineSpec.Notifications = &conveyorv1.Notifications{Sinks: sinks}
	return run, st
}

func waitingEvent(run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus) cloudevents.Event {
	e, _ := FromTransition(run, st, engine.Transition{Key: "approve/Waiting", Kind: engine.StageChanged,
		Next: conveyorv1.StageStatus{Name: "approve", Phase: conveyorv1.StageWaiting, Message: `waits for 1 approval from release-engineers ("not rita")`}},
		time.Date(2026, 12, 2, 4, 0, 0, 0, time.UTC))
	return e
}

// TestPipelineSinkModes: a Pipeline's sinks get its events in structured
// mode (the whole event as one JSON document), or as the body their
// template makes (a chat message, values escaped); a sink's types filter
// what it gets.
func TestPipelineSinkModes(t *testing.T) {
	structured, chat := newRecorder(t, ok), newRecorder(t, ok)
	guard, err := outbound.Parse([]string{"127.0.0.0/8"})
	if err != nil {
		t.Fatal(err)
	}
	n := start(t, Options{Guard: guard})
	run, st := pipelineRun(
		conveyorv1.EventSink{Name: "bus", URL: structured.srv.URL + "/bus", Mode: conveyorv1.SinkStructured},
		conveyorv1.EventSink{Name: "chat", URL: chat.srv.URL + "/hook", Mode: conveyorv1.SinkTemplate, Types: []string{"stage.waiting"},
			Template: `{"text": {{json (printf "%s of %s waits: %s" .Stage .Run .Message)}}, "who": {{json .WaitingFor}}, "type": {{json .Type}}}`})
	started, _ := FromTransition(run, st, engine.Transition{Key: "run/started", Kind: engine.RunStarted}, time.Now())
	n.Enqueue(started, run, st.PipelineSpec)
	n.Enqueue(waitingEvent(run, st), run, st.PipelineSpec)
	waitFor(t, "both events at the structured sink", func() bool { return structured.count() == 2 })
	waitFor(t, "the waiting stage at the chat", func() bool { return chat.count() == 1 })

	req, body := structured.requests[1], structured.bodies[1]
	if ct := req.Header.Get("Content-Type"); ct != "application/cloudevents+json" {
		t.Errorf("structured mode Content-Type %q", ct)
	}
	if req.Header.Get("Ce-Id") != "" {
		t.Errorf("structured mode sent ce- headers: %v", req.Header)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(body), &ev); err != nil {
		t.Fatalf("structured body %q: %v", body, err)
	}
	for k, v := range map[string]string{"specversion": "1.0", "id": "uid-1/approve/Waiting", "type": "dev.conveyor.stage.waiting.v1",
		"source": "/apis/conveyor.dev/v1alpha1/namespaces/shop-ci/pipelineruns/shop-tag-v1-4-0-x7k2p", "subject": "approve",
		"time": "2026-12-02T04:00:00Z", "datacontenttype": "application/json"} {
		if ev[k] != v {
			t.Errorf("structured event %s = %v, want %q", k, ev[k], v)
		}
	}
	if data, _ := ev["data"].(map[string]any); data["stage"] != "approve" || data["requester"] != "rita" {
		t.Errorf("structured event data %v", ev["data"])
	}

	if ct := chat.requests[0].Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("template mode Content-Type %q", ct)
	}
	var msg struct {
		Text string   `json:"text"`
		Who  []string `json:"who"`
		Type string   `json:"type"`
	}
	if err := json.Unmarshal([]byte(chat.bodies[0]), &msg); err != nil {
		t.Fatalf("chat body %q: %v", chat.bodies[0], err)
	}
	want := `approve of shop-tag-v1-4-0-x7k2p waits: waits for 1 approval from release-engineers ("not rita")`
	if msg.Text != want || len(msg.Who) != 1 || msg.Who[0] != "release-engineers" || msg.Type != "stage.waiting" {
		t.Errorf("chat message %+v, want text %q", msg, want)
	}
	if got := testutil.ToFloat64(sent.WithLabelValues("shop-ci/shop/chat", "delivered")); got != 1 {
		t.Errorf("chat delivered counter %v", got)
	}
}

// TestPipelineSinkGuarded: a Pipeline sink at an address the outbound
// guard refuses (loopback, with no allowlist naming it) is never reached,
// not retried, and counted as refused; an idle sender stops and the next
// event starts it again.
func TestPipelineSinkGuarded(t *testing.T) {
	target := newRecorder(t, ok)
	n := start(t, Options{Idle: 20 * time.Millisecond, Delivery: Delivery{Attempts: 3, Backoff: 10 * time.Millisecond}})
	run, st := pipelineRun(conveyorv1.EventSink{Name: "inside", URL: target.srv.URL + "/admin"})
	run.Spec.PipelineRef.Name = "guarded"
	n.Enqueue(waitingEvent(run, st), run, st.PipelineSpec)
	label := "shop-ci/guarded/inside"
	waitFor(t, "the refusal", func() bool { return testutil.ToFloat64(sent.WithLabelValues(label, "refused")) == 1 })
	if target.count() != 0 || testutil.ToFloat64(retries.WithLabelValues(label)) != 0 {
		t.Errorf("a refused sink was reached %d times, retried %v", target.count(), testutil.ToFloat64(retries.WithLabelValues(label)))
	}
	waitFor(t, "the idle sender to stop", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		return len(n.pipelineSinks) == 0
	})
	n.Enqueue(waitingEvent(run, st), run, st.PipelineSpec)
	waitFor(t, "the second refusal", func() bool { return testutil.ToFloat64(sent.WithLabelValues(label, "refused")) == 2 })
}

func TestCheckTemplate(t *testing.T) {
	for tmpl, want := range map[string]string{
		`{"text": {{json .Message}}}`:            "",
		`{"text": "{{.Message}}"}`:               "not JSON",
		`{"text": {{json .Nope}}}`:               "Nope",
		`{"text": {{json .Message}}`:             "not JSON",
		`{{range .WaitingFor}}`:                  "template",
		`{"blocks": [{"text": {{json .Type}}}]}`: "",
	} {
		err := CheckTemplate(tmpl)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("template %s: %v, want %q", tmpl, err, want)
		}
	}
}

// failingReader answers every Get with its error.
type failingReader struct{ err error }

func (f failingReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return f.err
}
func (f failingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return f.err
}

// TestURLFromSecretErrors: a sink whose URL Secret is not there is refused
// at once; a Secret that could not be read (the API server did not answer)
// is tried again, then counted as failed.
func TestURLFromSecretErrors(t *testing.T) {
	for _, c := range []struct {
		name    string
		err     error
		result  string
		retries float64
	}{
		{"missing", apierrors.NewNotFound(corev1.Resource("secrets"), "chat"), "refused", 0},
		{"unreadable", apierrors.NewServiceUnavailable("etcd is down"), "failed", 2},
	} {
		n := start(t, Options{Secrets: failingReader{c.err}, Delivery: Delivery{Attempts: 3, Backoff: time.Millisecond}})
		run, st := pipelineRun(conveyorv1.EventSink{Name: c.name, URLFrom: &conveyorv1.SecretKeyReference{Name: "chat"}})
		n.Enqueue(waitingEvent(run, st), run, st.PipelineSpec)
		label := "shop-ci/shop/" + c.name
		waitFor(t, c.name+" counted", func() bool { return testutil.ToFloat64(sent.WithLabelValues(label, c.result)) == 1 })
		if got := testutil.ToFloat64(retries.WithLabelValues(label)); got != c.retries {
			t.Errorf("%s Secret: %v retries, want %v", c.name, got, c.retries)
		}
	}
}
