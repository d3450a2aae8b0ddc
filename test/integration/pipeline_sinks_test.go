package integration_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/controllers/notify"
)

// chatTemplate is docs/events.md's chat recipe, as a user would paste it.
const chatTemplate = `{"text": {{json (printf "%s/%s: %s %s — %s" .Namespace .Run .Stage .Phase .Message)}}}`

// TestPipelineSinksTellTheTeam: a Pipeline's own sinks get its runs'
// events: a Slack-compatible incoming webhook (its URL in a Secret) gets a
// chat message for each stage waiting for a person and for the run's end,
// made by the documented template; an event bus gets the run's events in
// structured mode.
func TestPipelineSinksTellTheTeam(t *testing.T) {
	var mu sync.Mutex
	var chat, bus []string
	slack := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var msg map[string]any
		if r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &msg) != nil || len(msg) != 1 {
			t.Errorf("the incoming webhook got %s %q", r.Header.Get("Content-Type"), body)
			http.Error(w, "invalid_payload", http.StatusBadRequest)
			return
		}
		mu.Lock()
		chat = append(chat, msg["text"].(string))
		mu.Unlock()
		_, _ = io.WriteString(w, "ok") // what Slack answers
	}))
	defer slack.Close()
	events := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var e struct{ Type string }
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/cloudevents+json" || json.Unmarshal(body, &e) != nil {
			t.Errorf("the event bus got %s %q", r.Header.Get("Content-Type"), body)
		}
		mu.Lock()
		bus = append(bus, e.Type)
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer events.Close()

	ns := newNamespace(t)
	ctx := context.Background()
	if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "team-chat", Namespace: ns},
		Data: map[string][]byte{"url": []byte(slack.URL + "/services/T0/B0/s3cret")}}); err != nil {
		t.Fatal(err)
	}
	startManagerWith(t, func(mgr ctrl.Manager, o *manager.SetupOptions) {
		n, err := notify.New(notify.Options{Guard: testGuard, Secrets: mgr.GetAPIReader(),
			Delivery: notify.Delivery{Attempts: 2, Backoff: 10 * time.Millisecond, Log: logr.Discard()}})
		if err != nil {
			t.Fatal(err)
		}
		if err := mgr.Add(n); err != nil {
			t.Fatal(err)
		}
		o.Notifier = n
	})
	seedPipelineWith(t, ns, func(p *conveyorv1.Pipeline) {
		p.Spec.Notifications = &conveyorv1.Notifications{Sinks: []conveyorv1.EventSink{
			{Name: "chat", URLFrom: &conveyorv1.SecretKeyReference{Name: "team-chat"}, Mode: conveyorv1.SinkTemplate,
				Types: []string{"stage.waiting", "run.succeeded", "run.failed"}, Template: chatTemplate},
			{Name: "bus", URL: events.URL + "/conveyor", Mode: conveyorv1.SinkStructured, Types: []string{"run.started", "run.succeeded"}},
		}}
	})
	run := newRun(t, ns, conveyorv1.GitRef{Tag: "v4.0.0", Commit: "c0ffee1"})
	toApproveGate(t, run)
	throughProduction(t, run)

	NewWithT(t).Eventually(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		g.Expect(chat).To(HaveLen(5))
		g.Expect(bus).To(Equal([]string{"dev.conveyor.run.started.v1", "dev.conveyor.run.succeeded.v1"}))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	mu.Lock()
	defer mu.Unlock()
	prefix := ns + "/" + run.Name + ": "
	for i, stage := range []string{"staging", "pre-production", "approve", "production"} {
		if !strings.HasPrefix(chat[i], prefix+stage+" Waiting — ") {
			t.Errorf("chat message %d: %q, want %s waiting", i, chat[i], stage)
		}
	}
	if !strings.Contains(chat[2], "release-engineers") || !strings.HasPrefix(chat[4], prefix+"production Succeeded") {
		t.Errorf("chat messages %q", chat)
	}
}

// TestPipelineURLsGuarded: what a Pipeline's author could make the manager
// reach or send is refused at admission: a sink or commit status API at the
// cloud metadata address or a host outside the outbound allowlist (at
// create and by a later update), a template that does not make JSON, and a
// Secret she may not read named as a sink's URL or the commit status token.
func TestPipelineURLsGuarded(t *testing.T) {
	ns := newNamespace(t)
	startManager(t)
	ctx := context.Background()
	sink := func(s conveyorv1.EventSink) func(*conveyorv1.Pipeline) {
		return func(p *conveyorv1.Pipeline) {
			p.Spec.Notifications = &conveyorv1.Notifications{Sinks: []conveyorv1.EventSink{s}}
		}
	}
	commitStatus := func(api string) func(*conveyorv1.Pipeline) {
		return func(p *conveyorv1.Pipeline) {
			p.Spec.Source = &conveyorv1.PipelineSource{Repository: "acme/shop", SecretRef: conveyorv1.SecretKeyReference{Name: "hook"},
				CommitStatus: &conveyorv1.CommitStatusReport{Provider: "GitLab", APIURL: api, Project: "acme/shop", TokenRef: conveyorv1.SecretKeyReference{Name: "gitlab"}}}
		}
	}
	cases := []struct {
		what   string
		change func(*conveyorv1.Pipeline)
		want   string
	}{
		{"a sink at the metadata address", sink(conveyorv1.EventSink{Name: "m", URL: "http://169.254.169.254/latest/meta-data/"}),
			"spec.notifications.sinks[0].url: Forbidden: address 169.254.169.254 is loopback, link-local"},
		{"a sink outside the allowlist", sink(conveyorv1.EventSink{Name: "x", URL: "https://collector.attacker.net/x"}),
			"host collector.attacker.net is not in the cluster's outbound allowlist"},
		{"a template that is not JSON", sink(conveyorv1.EventSink{Name: "t", URL: "https://chat.example.com/hook", Mode: conveyorv1.SinkTemplate,
			Template: `{"text": "{{.Message}}"}`}), "spec.notifications.sinks[0].template: Invalid value"},
		{"a commit status API at the metadata address", commitStatus("http://169.254.169.254/api/v4"),
			"spec.source.commitStatus.apiURL: Forbidden: address 169.254.169.254"},
	}
	for _, c := range cases {
		p := seedPipelineFrom(t)
		p.Namespace, p.Name = ns, "guarded"
		c.change(p)
		err := k8s.Create(ctx, p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", c.what, err, c.want)
		}
	}
	// CRD validation: a template without Template mode, and both url and urlFrom.
	for _, s := range []conveyorv1.EventSink{
		{Name: "a", URL: "https://chat.example.com/hook", Template: `{}`},
		{Name: "b", URL: "https://chat.example.com/hook", URLFrom: &conveyorv1.SecretKeyReference{Name: "s"}},
	} {
		p := seedPipelineFrom(t)
		p.Namespace, p.Name = ns, "crd"
		sink(s)(p)
		if err := k8s.Create(ctx, p); err == nil || !strings.Contains(err.Error(), "spec.notifications.sinks[0]") {
			t.Errorf("sink %+v: %v, want refused by the CRD", s, err)
		}
	}

	// An allowed sink, then an update that points it at the metadata address.
	p := seedPipelineFrom(t)
	p.Namespace, p.Name = ns, "updated"
	sink(conveyorv1.EventSink{Name: "ok", URL: "https://events.example.com/conveyor"})(p)
	if err := k8s.Create(ctx, p); err != nil {
		t.Fatalf("a sink the allowlist names: %v", err)
	}
	patch := client.MergeFrom(p.DeepCopy())
	p.Spec.Notifications.Sinks[0].URL = "http://[::ffff:169.254.169.254]/latest"
	if err := k8s.Patch(ctx, p, patch); err == nil || !strings.Contains(err.Error(), "link-local") {
		t.Errorf("an update pointing a sink at the metadata address: %v", err)
	}

	// pia administers Pipelines; Secrets are not hers to read.
	for _, change := range []func(*conveyorv1.Pipeline){
		sink(conveyorv1.EventSink{Name: "chat", URLFrom: &conveyorv1.SecretKeyReference{Name: "prod-db"}}),
		commitStatus("https://gitlab.example.com/api/v4"),
	} {
		p := seedPipelineFrom(t)
		p.Namespace, p.Name = ns, "pias"
		change(p)
		err := as("pia").Create(ctx, p)
		if err == nil || !strings.Contains(err.Error(), `and user "pia" may not get it in namespace `+ns) {
			t.Errorf("pia naming a Secret she may not read: %v", err)
		}
	}
	letGetSecret(t, ns, "pia", "team-chat")
	mine := seedPipelineFrom(t)
	mine.Namespace, mine.Name = ns, "pias"
	sink(conveyorv1.EventSink{Name: "chat", URLFrom: &conveyorv1.SecretKeyReference{Name: "team-chat"}, Mode: conveyorv1.SinkTemplate, Template: chatTemplate})(mine)
	NewWithT(t).Eventually(func() error { return as("pia").Create(ctx, mine.DeepCopy()) }).WithTimeout(10 * time.Second).Should(Succeed())
}
