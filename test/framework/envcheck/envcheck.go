// Package envcheck watches an environment namespace and records how many of
// Conveyor's Jobs were unfinished at once: one deploy at a time per
// environment holds when that never exceeds one. It watches (every change to
// every Job is seen) rather than sampling at instants.
package envcheck

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Overlap is what a watch of one namespace saw.
type Overlap struct {
	mu sync.Mutex
	// unfinished are the Jobs seen without a Complete or Failed condition.
	unfinished map[string]bool
	// Max is the most unfinished Jobs seen at once, and Worst which ones.
	max   int
	worst []string
	// Events counts the Job events seen.
	events int
	done   chan struct{}
	err    error
}

// Watch starts watching Conveyor's Jobs in namespace ns until ctx ends.
func Watch(ctx context.Context, c client.WithWatch, ns string) (*Overlap, error) {
	w, err := c.Watch(ctx, &batchv1.JobList{}, client.InNamespace(ns), client.HasLabels{conveyorv1.LabelRunUID})
	if err != nil {
		return nil, fmt.Errorf("watching Jobs in %s: %w", ns, err)
	}
	o := &Overlap{unfinished: map[string]bool{}, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					o.fail(fmt.Errorf("the watch of %s ended early", ns))
					return
				}
				o.observe(ev)
			}
		}
	}()
	return o, nil
}

func (o *Overlap) fail(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil {
		o.err = err
	}
}

func (o *Overlap) observe(ev watch.Event) {
	job, ok := ev.Object.(*batchv1.Job)
	if !ok {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.events++
	if ev.Type == watch.Deleted || finished(job) {
		delete(o.unfinished, job.Name)
	} else {
		o.unfinished[job.Name] = true
	}
	if len(o.unfinished) > o.max {
		o.max = len(o.unfinished)
		o.worst = o.worst[:0]
		for name := range o.unfinished {
			o.worst = append(o.worst, name)
		}
		sort.Strings(o.worst)
	}
}

func finished(job *batchv1.Job) bool {
	for _, c := range job.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

// Result is the most Jobs seen unfinished at once, which ones, the number of
// events seen, and an error if the watch ended before its context.
func (o *Overlap) Result() (max int, worst string, events int, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.max, strings.Join(o.worst, ", "), o.events, o.err
}
