package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// measureMemory: phase 5, the manager's memory after a restart with every
// run finished (and the writes that restart costs), then with more retained.
func (b *bench) measureMemory(ctx context.Context, fig *figures) error {
	var err error
	if fig.mem1, err = b.memoryAfterRestart(ctx, fmt.Sprintf("%d-finished-runs", b.o.runs+b.o.samples)); err != nil {
		return err
	}
	if fig.settled, err = b.apiWrites(ctx); err != nil {
		return err
	}
	if b.o.retained > b.o.runs+b.o.samples {
		fig.retainedN = b.o.retained
		fig.memN, err = b.memoryRetained(ctx, b.o.retained)
	}
	return err
}

type memStats struct{ heap, rss float64 }

// memoryAfterRestart restarts the manager (it lists and reconciles every run
// once), lets it settle, and reads its heap and RSS.
func (b *bench) memoryAfterRestart(ctx context.Context, label string) (memStats, error) {
	b.stopManager()
	if err := b.startManager(ctx); err != nil {
		return memStats{}, err
	}
	time.Sleep(20 * time.Second)
	return b.memory(label)
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
	return memStats{heap: m["go_memstats_heap_inuse_bytes"], rss: m["process_resident_memory_bytes"]}, nil
}

// labelCopy labels the memory phase's copies of a finished run. They are
// written while the manager, and so its admission webhooks, are stopped:
// the bench's webhook configurations leave them out (webhookConfigs), and
// they copy the spec the webhooks admitted for the run they copy.
const labelCopy = "bench.conveyor.dev/copy"

// memoryRetained adds finished runs (copies of a finished run, its spec and
// status, no Jobs) up to total, restarts the manager and reads its memory.
func (b *bench) memoryRetained(ctx context.Context, total int) (memStats, error) {
	b.stopManager()
	src := &conveyorv1.PipelineRun{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: "bench", Name: "run-0"}, src); err != nil {
		return memStats{}, err
	}
	have := b.o.runs + b.o.samples
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1))
				if i > total-have {
					return
				}
				r := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("kept-%d", i), Namespace: "bench",
					Labels: map[string]string{labelCopy: "true"}}, Spec: *src.Spec.DeepCopy()}
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
	return b.memoryAfterRestart(ctx, fmt.Sprintf("%d-finished", total))
}
