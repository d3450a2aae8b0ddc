package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// measureMemory: phase 5, the manager's memory after a restart with every
// run finished (and the writes that restart costs), then with more retained.
func (b *bench) measureMemory(ctx context.Context, fig *figures) error {
	var err error
	if fig.mem1, err = b.memoryAfterRestart(ctx, "finished-runs"); err != nil {
		return err
	}
	if fig.settled, err = b.apiWrites(ctx); err != nil {
		return err
	}
	if b.o.retained > fig.mem1.runs {
		fig.memN, err = b.memoryRetained(ctx, b.o.retained-fig.mem1.runs)
	}
	return err
}

// memStats is a reading of the manager's memory, and the runs it held then,
// with what one scrape of its metrics cost it: the time the bench waited for
// the page and the bytes the manager allocated for it.
type memStats struct {
	heap, rss           float64
	runs                int
	scrapeMs, scrapeKiB float64
}

// scrapes is how many times the bench reads the manager's metrics to time one.
const scrapes = 20

// memoryAfterRestart restarts the manager (it lists and reconciles every run
// once), lets it settle, and reads its heap and RSS, and counts the runs it
// holds: every phase's but the floor's and the second shard's (phase 3c's
// runs of the lanes without its label are the manager's too).
func (b *bench) memoryAfterRestart(ctx context.Context, label string) (memStats, error) {
	b.stopManager()
	if err := b.startManager(ctx); err != nil {
		return memStats{}, err
	}
	time.Sleep(20 * time.Second)
	mine, err := labels.Parse(mainShard)
	if err != nil {
		return memStats{}, err
	}
	held, err := b.countRuns(ctx, client.MatchingLabelsSelector{Selector: mine})
	if err != nil {
		return memStats{}, err
	}
	m, err := b.memory(fmt.Sprintf("%d-%s", held, label))
	m.runs = held
	return m, err
}

// countRuns counts the PipelineRuns the options select (their metadata only).
func (b *bench) countRuns(ctx context.Context, opts ...client.ListOption) (int, error) {
	runs := &metav1.PartialObjectMetadataList{}
	runs.SetGroupVersionKind(conveyorv1.GroupVersion.WithKind("PipelineRunList"))
	err := b.c.List(ctx, runs, opts...)
	return len(runs.Items), err
}

// memory collects the manager's garbage (through its heap profile, kept in
// bin/bench/) and reads its heap and RSS.
func (b *bench) memory(label string) (memStats, error) {
	path, err := b.fetchProfile(http.DefaultClient, b.pprof+"/heap?gc=1", "heap-"+label+".pb.gz")
	if err != nil {
		return memStats{}, err
	}
	b.profiles = append(b.profiles, path)
	m, err := scrape(b.metrics)
	if err != nil {
		return memStats{}, err
	}
	out := memStats{heap: m["go_memstats_heap_inuse_bytes"], rss: m["process_resident_memory_bytes"]}
	start := time.Now()
	for range scrapes {
		if _, err := metricsText(b.metrics); err != nil {
			return out, err
		}
	}
	out.scrapeMs = float64(time.Since(start).Microseconds()) / 1000 / scrapes
	after, err := scrape(b.metrics)
	if err != nil {
		return out, err
	}
	// Between the two readings of the counter: the rest of the first
	// scrape, the timed ones, and the start of the last, about one more.
	out.scrapeKiB = (after["go_memstats_alloc_bytes_total"] - m["go_memstats_alloc_bytes_total"]) / (scrapes + 1) / 1024
	return out, nil
}

// labelCopy labels the memory phase's copies of a finished run. They are
// written while the manager, and so its admission webhooks, are stopped:
// the bench's webhook configurations leave them out (webhookConfigs), and
// they copy the spec the webhooks admitted for the run they copy.
const labelCopy = "bench.conveyor.dev/copy"

// memoryRetained adds that many copies of a finished run (its spec and
// status, no Jobs), restarts the manager and reads its memory.
// The copies are spread over the lanes' Pipelines, each of which keeps 1,000
// finished runs (lanePipeline): more in one would be pruned by the restart,
// and the reading would count deletes in flight instead of retained runs.
func (b *bench) memoryRetained(ctx context.Context, copies int) (memStats, error) {
	b.stopManager()
	src := &conveyorv1.PipelineRun{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: "bench", Name: "run-0"}, src); err != nil {
		return memStats{}, err
	}
	// A lane's Pipeline has its runs of phases 3 and 3c, and its copies.
	if perLane := (2*b.o.runs+copies)/b.o.concurrency + 1; perLane > 1000 {
		return memStats{}, fmt.Errorf("--retained %d puts up to %d runs in each lane's Pipeline, over the 1,000 it keeps: raise --concurrency", b.o.retained, perLane)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > copies {
					return
				}
				r := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("kept-%d", i), Namespace: "bench",
					Labels: map[string]string{labelCopy: "true"}}, Spec: *src.Spec.DeepCopy()}
				r.Spec.PipelineRef.Name = fmt.Sprintf("shop-%d", i%b.o.concurrency)
				err := b.c.Create(ctx, r)
				if err == nil {
					r.Status = *src.Status.DeepCopy()
					err = b.c.Status().Update(ctx, r)
				}
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return memStats{}, err
	}
	m, err := b.memoryAfterRestart(ctx, "finished")
	if err != nil {
		return m, err
	}
	// The reading is of the copies retained only if none was deleted.
	kept, err := b.countRuns(ctx, client.InNamespace("bench"), client.HasLabels{labelCopy})
	if err != nil {
		return m, err
	}
	if kept != copies {
		return m, fmt.Errorf("%d of the %d copies of a finished run are left after the restart: the reading is not of the runs retained", kept, copies)
	}
	return m, nil
}
