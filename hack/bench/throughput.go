package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// measureLoad: phases 3 (throughput) and 4 (writes), counted apart from
// the reaction runs, which are cancelled after.
func (b *bench) measureLoad(ctx context.Context, fig *figures) error {
	var err error
	if fig.before, err = b.apiWrites(ctx); err != nil {
		return err
	}
	if fig.dur, err = b.throughput(ctx); err != nil {
		return err
	}
	if fig.after, err = b.apiWrites(ctx); err != nil {
		return err
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

// throughput: o.runs tag runs, o.concurrency at a time, each to Succeeded.
func (b *bench) throughput(ctx context.Context) (time.Duration, error) {
	errs := make(chan error, b.o.runs)
	var wg sync.WaitGroup
	start := time.Now()
	// o.concurrency lanes, each running its share of the runs one after another.
	for lane := 0; lane < b.o.concurrency; lane++ {
		wg.Add(1)
		go func(lane int) {
			defer wg.Done()
			for i := lane; i < b.o.runs; i += b.o.concurrency {
				name := fmt.Sprintf("run-%d", i)
				ch := make(chan struct{})
				b.mu.Lock()
				b.runDone[name] = ch
				b.mu.Unlock()
				if _, err := b.newRunOf(ctx, "bench", fmt.Sprintf("shop-%d", lane), name); err != nil {
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
		if r.Status.Phase != conveyorv1.RunSucceeded {
			return 0, fmt.Errorf("run %s ended %s", r.Name, r.Status.Phase)
		}
	}
	return d, nil
}
