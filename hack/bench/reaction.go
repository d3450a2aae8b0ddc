package main

import (
	"context"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// measureLatencies: the manager idle, then phases 2 (reaction) and 3b
// (handoff through one environment).
func (b *bench) measureLatencies(ctx context.Context, fig *figures) error {
	if err := b.startManager(ctx); err != nil {
		return err
	}
	if err := b.createPipelines(ctx); err != nil {
		return err
	}
	time.Sleep(5 * time.Second)
	var err error
	if fig.mem0, err = b.memory("idle"); err != nil {
		return err
	}
	if fig.react, err = b.reaction(ctx); err != nil {
		return err
	}
	fig.handP50, fig.handP99, fig.handTotal, fig.handCost, err = b.handoff(ctx)
	return err
}

// reactionFigures are the reaction's percentiles, and those of the run's
// create call alone (the API server's share, before the manager can know).
type reactionFigures struct{ p50, p99, createP50, createP99 time.Duration }

// reaction: run created -> its first Job's watch event. The reaction runs'
// Jobs are never completed, so the manager has nothing else to do.
func (b *bench) reaction(ctx context.Context) (reactionFigures, error) {
	var lat, create []time.Duration
	for i := 0; i < b.o.samples; i++ {
		name := fmt.Sprintf("react-%d", i)
		// Wait for the Job by its run's name, known before the run exists: its
		// Job may appear before the create call returns.
		ch := make(chan struct{})
		b.mu.Lock()
		b.runFirst["react/"+name] = ch
		b.mu.Unlock()
		start := time.Now()
		if _, err := b.newRun(ctx, "react", name); err != nil {
			return reactionFigures{}, err
		}
		create = append(create, time.Since(start))
		select {
		case <-ch:
			lat = append(lat, time.Since(start))
		case <-time.After(30 * time.Second):
			return reactionFigures{}, fmt.Errorf("run %s started no Job", name)
		}
		// The next sample meets an idle API server, as the floor's do: the
		// manager's status write for this run has landed, and its Events
		// (written in the background) have had time to.
		if err := b.settle(ctx, "react", name); err != nil {
			return reactionFigures{}, err
		}
	}
	// Let the manager record the reaction runs' state before writes are counted.
	time.Sleep(3 * time.Second)
	var f reactionFigures
	f.p50, f.p99 = percentiles(lat)
	f.createP50, f.createP99 = percentiles(create)
	return f, nil
}

// cancelReactionRuns cancels the reaction runs (spec.cancelled) and waits
// until every one is Cancelled, and 3 s more for the manager's last writes.
func (b *bench) cancelReactionRuns(ctx context.Context) error {
	for i := 0; i < b.o.samples; i++ {
		r := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: "react", Name: fmt.Sprintf("react-%d", i)}}
		if err := b.c.Patch(ctx, r, client.RawPatch(types.MergePatchType, []byte(`{"spec":{"cancelled":true}}`))); err != nil {
			return fmt.Errorf("cancelling %s: %w", r.Name, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		list := &conveyorv1.PipelineRunList{}
		if err := b.cache.List(ctx, list, client.InNamespace("react")); err != nil {
			return err
		}
		left := 0
		for _, r := range list.Items {
			if r.Status.Phase != conveyorv1.RunCancelled {
				left++
			}
		}
		if left == 0 {
			time.Sleep(3 * time.Second)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d reaction runs not Cancelled after 2 minutes", left)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
