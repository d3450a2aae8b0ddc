package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// measureLoad: the floor's runs, then phases 3 (throughput) and 4
// (writes and API cost), counted apart from the reaction runs, which are
// cancelled after; then 3c, the throughput with two shards.
func (b *bench) measureLoad(ctx context.Context, fig *figures) error {
	var err error
	if fig.floor, err = b.measure(ctx, b.o.runs, false, func() error { return b.floorRuns(ctx, b.o.runs) }); err != nil {
		return err
	}
	if fig.before, err = b.apiWrites(ctx); err != nil {
		return err
	}
	b.mu.Lock()
	b.approvalLat = nil
	b.mu.Unlock()
	profiled := b.cpuProfiles(ctx)
	fig.load, err = b.measure(ctx, b.o.runs, true, func() error {
		fig.dur, err = b.throughput(ctx, "run", nil)
		return err
	})
	profiled()
	if err != nil {
		return err
	}
	b.mu.Lock()
	fig.approvalLat = append([]time.Duration(nil), b.approvalLat...)
	b.mu.Unlock()
	if fig.after, err = b.apiWrites(ctx); err != nil {
		return err
	}
	if fig.runSize, err = b.storedSize(ctx, "bench", "run-0"); err != nil {
		return err
	}
	if fig.floorRunSize, err = b.storedSize(ctx, "floor", "floor-run-0"); err != nil {
		return err
	}
	if b.o.shards {
		if fig.sharded, err = b.measureShards(ctx); err != nil {
			return err
		}
	}
	// Memory is per finished run: the reaction runs, still at their first
	// Job, are cancelled first (counted apart from the throughput's writes).
	if err := b.cancelReactionRuns(ctx); err != nil {
		return err
	}
	fig.quiet, err = b.apiWrites(ctx)
	return err
}

// settle waits until the driver's cache shows the run Running (the manager's
// status write after its first Job), then 50 ms more for its Events.
func (b *bench) settle(ctx context.Context, ns, name string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := &conveyorv1.PipelineRun{}
		if err := b.cache.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, r); err == nil && r.Status.Phase == conveyorv1.RunRunning {
			time.Sleep(50 * time.Millisecond)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("run %s/%s never showed Running", ns, name)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// throughput: o.runs tag runs named prefix-N, o.concurrency at a time,
// each to Succeeded. Runs of a lane in shard (when not nil) carry its label,
// as admission would label them.
func (b *bench) throughput(ctx context.Context, prefix string, shard map[int]string) (time.Duration, error) {
	errs := make(chan error, b.o.runs)
	var wg sync.WaitGroup
	start := time.Now()
	// o.concurrency lanes, each running its share of the runs one after another.
	for lane := 0; lane < b.o.concurrency; lane++ {
		wg.Add(1)
		go func(lane int) {
			defer wg.Done()
			for i := lane; i < b.o.runs; i += b.o.concurrency {
				name := fmt.Sprintf("%s-%d", prefix, i)
				ch := make(chan struct{})
				b.mu.Lock()
				b.runDone[name] = ch
				b.mu.Unlock()
				if _, err := b.newRunLabelled(ctx, "bench", fmt.Sprintf("shop-%d", lane), name, shard[lane]); err != nil {
					errs <- err
					return
				}
				select {
				case <-ch:
				case <-time.After(10 * time.Minute):
					errs <- fmt.Errorf("run %s did not finish", name)
					return
				}
			}
		}(lane)
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	d := time.Since(start)
	// Every run must have succeeded.
	list := &conveyorv1.PipelineRunList{}
	if err := b.c.List(ctx, list, client.InNamespace("bench")); err != nil {
		return 0, err
	}
	for _, r := range list.Items {
		if strings.HasPrefix(r.Name, prefix+"-") && r.Status.Phase != conveyorv1.RunSucceeded {
			return 0, fmt.Errorf("run %s ended %s", r.Name, r.Status.Phase)
		}
	}
	return d, nil
}

// shardedFigures are phase 3c's: the throughput with two managers, each
// handling half the lanes, and whether any run was handled twice (more Job
// creates than Jobs, or Jobs that failed to create).
type shardedFigures struct {
	cost       cost
	jobCreates float64 // successful Job creates per run
	conflicts  float64 // Job creates refused (AlreadyExists) per run
}

// measureShards: phase 3c. Half the lanes' Pipelines move to shard b (new
// runs take the label), a second manager handles shard b, and o.runs more
// runs go through.
func (b *bench) measureShards(ctx context.Context) (shardedFigures, error) {
	shard := map[int]string{}
	for lane := 1; lane < b.o.concurrency; lane += 2 {
		shard[lane] = "b"
		p := &conveyorv1.Pipeline{}
		if err := b.c.Get(ctx, client.ObjectKey{Namespace: "bench", Name: fmt.Sprintf("shop-%d", lane)}, p); err != nil {
			return shardedFigures{}, err
		}
		p.Labels = map[string]string{conveyorv1.LabelShard: "b"}
		if err := b.c.Update(ctx, p); err != nil {
			return shardedFigures{}, err
		}
	}
	if err := b.startShard(); err != nil {
		return shardedFigures{}, err
	}
	before, err := b.jobCreateCodes(ctx)
	if err != nil {
		return shardedFigures{}, err
	}
	c, err := b.measure(ctx, b.o.runs, true, func() error {
		_, err := b.throughput(ctx, "sharded", shard)
		return err
	})
	if err != nil {
		return shardedFigures{}, err
	}
	after, err := b.jobCreateCodes(ctx)
	if err != nil {
		return shardedFigures{}, err
	}
	return shardedFigures{cost: c, jobCreates: c.perRun(after["201"] - before["201"] - float64(c.probeJobs)), conflicts: c.perRun(after["409"] - before["409"])}, nil
}

// objectSize is an object's JSON size as the API server returns it, and
// the part of it that is metadata.managedFields: what the API server
// decodes, checks and encodes again at each write, and sends each watcher.
type objectSize struct{ total, managedFields int }

// storedSize reads a run from the API server, as it is (unstructured: no
// field the Go type lacks is dropped), and measures it.
func (b *bench) storedSize(ctx context.Context, ns, name string) (objectSize, error) {
	r := &unstructured.Unstructured{}
	r.SetGroupVersionKind(conveyorv1.GroupVersion.WithKind("PipelineRun"))
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, r); err != nil {
		return objectSize{}, err
	}
	all, err := json.Marshal(r.Object)
	if err != nil {
		return objectSize{}, err
	}
	managed, _, _ := unstructured.NestedFieldNoCopy(r.Object, "metadata", "managedFields")
	mf, err := json.Marshal(managed)
	if err != nil {
		return objectSize{}, err
	}
	return objectSize{total: len(all), managedFields: len(mf)}, nil
}
