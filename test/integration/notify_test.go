package integration_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	. "github.com/onsi/gomega"
	ctrl "sigs.k8s.io/controller-runtime"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/manager"
	"github.com/conveyor-dev/conveyor/controllers/notify"
)

// TestRunTellsASink: a release played to production is told to a sink as
// CloudEvents: the run started, each stage, who a waiting stage waits for,
// each approval taken into account, and the end; a second sink that answers
// 500 to everything does not hold the run back.
func TestRunTellsASink(t *testing.T) {
	var mu sync.Mutex
	var types []string
	var waits []notify.Data
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var d notify.Data
		_ = json.Unmarshal(body, &d)
		mu.Lock()
		types = append(types, r.Header.Get("Ce-Type"))
		if d.Phase == "Waiting" && d.Stage != "" {
			waits = append(waits, d)
		}
		mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}))
	defer sink.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusInternalServerError) }))
	defer broken.Close()

	ns := newNamespace(t)
	startManagerWith(t, func(mgr ctrl.Manager, o *manager.SetupOptions) {
		n, err := notify.New(notify.Options{Sinks: []string{sink.URL, broken.URL}, Delivery: notify.Delivery{Attempts: 2, Backoff: 10 * time.Millisecond, Log: logr.Discard()}})
		if err != nil {
			t.Fatal(err)
		}
		if err := mgr.Add(n); err != nil {
			t.Fatal(err)
		}
		o.Notifier = n
	})
	seedPipeline(t, ns)
	run := newRun(t, ns, conveyorv1.GitRef{Tag: "v3.0.0", Commit: "beef123"})
	toApproveGate(t, run)
	throughProduction(t, run)

	want := []string{"dev.conveyor.run.started.v1", "dev.conveyor.stage.started.v1", "dev.conveyor.stage.succeeded.v1",
		"dev.conveyor.stage.waiting.v1", "dev.conveyor.approval.accepted.v1", "dev.conveyor.run.succeeded.v1"}
	NewWithT(t).Eventually(func(g Gomega) {
		mu.Lock()
		defer mu.Unlock()
		for _, w := range want {
			g.Expect(types).To(ContainElement(w))
		}
		g.Expect(types[len(types)-1]).To(Equal("dev.conveyor.run.succeeded.v1"))
	}).WithTimeout(10 * time.Second).Should(Succeed())
	mu.Lock()
	defer mu.Unlock()
	// staging, pre-production, approve and production each waited for people.
	var stages []string
	for _, w := range waits {
		stages = append(stages, w.Stage)
		if w.Stage == "approve" && !slices.Equal(w.WaitingFor, []string{"release-engineers"}) {
			t.Errorf("the approve stage waits for %v", w.WaitingFor)
		}
	}
	if !slices.Equal(stages, []string{"staging", "pre-production", "approve", "production"}) {
		t.Errorf("waiting events for %v", stages)
	}
	if slices.Contains(types, "dev.conveyor.stage.pending.v1") {
		t.Errorf("stages becoming Pending were told: %v", types)
	}
	if n := len(types); n < 15 {
		t.Errorf("the sink got %d events for a six-stage release: %v", n, types)
	}
}
