package main

import (
	"context"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Phase 3b: runs deploying to one shared environment, one at a time.
const (
	handoffNS, handoffEnv = "handoff", "handoff-env"
	handoffRuns           = 50
)

func (b *bench) handoffSetup(ctx context.Context) error {
	b.handoffAdd, b.handoffDone = map[string]time.Time{}, map[string]time.Time{}
	for _, ns := range []string{handoffNS, handoffEnv} {
		if err := b.c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	// Any Pipeline deploys there by itself: the phase measures the lock.
	if err := b.c.Create(ctx, &conveyorv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: handoffEnv}, Spec: conveyorv1.EnvironmentSpec{
		Namespace: handoffEnv, Pipelines: conveyorv1.PipelineSelector{NamespaceSelector: &metav1.LabelSelector{}},
		TriggerGroups: []string{"devops"}, AllowAuto: true}}); err != nil {
		return err
	}
	b.pipelines = append(b.pipelines, &conveyorv1.Pipeline{ObjectMeta: metav1.ObjectMeta{Namespace: handoffNS, Name: "deploy"},
		Spec: conveyorv1.PipelineSpec{Refs: conveyorv1.PipelineRefs{Tags: []string{"v*"}},
			History: &conveyorv1.History{Succeeded: ptr.To[int32](1000), Failed: ptr.To[int32](1000)},
			Stages:  []conveyorv1.Stage{{Name: "production", Environment: handoffEnv, Jobs: []conveyorv1.JobSpec{{Name: "deploy", Image: "alpine/helm:3"}}}}}})
	return nil
}

// handoff creates handoffRuns runs at once that all deploy to one
// environment, waits for every one, and measures each handoff: from the
// driver completing one deploy's Job to the next deploy's Job appearing.
// It deletes the runs afterwards, so the later phases do not see them.
// Its cost is the runs' status writes and reconciles, per run, until the
// last one ended.
func (b *bench) handoff(ctx context.Context) (p50, p99, total time.Duration, c handoffCost, err error) {
	var chans []chan struct{}
	r0, err := b.apiRequests(ctx)
	if err != nil {
		return 0, 0, 0, c, err
	}
	rc0 := b.managerCounts()
	start := time.Now()
	for i := 0; i < handoffRuns; i++ {
		name := fmt.Sprintf("handoff-%02d", i)
		ch := make(chan struct{})
		b.mu.Lock()
		b.runDone[name] = ch
		b.mu.Unlock()
		chans = append(chans, ch)
		if _, err := b.newRunOf(ctx, handoffNS, "deploy", name); err != nil {
			return 0, 0, 0, c, err
		}
	}
	for i, ch := range chans {
		select {
		case <-ch:
		case <-time.After(5 * time.Minute):
			return 0, 0, 0, c, fmt.Errorf("run handoff-%02d did not finish", i)
		}
	}
	total = time.Since(start)
	r1, err := b.apiRequests(ctx)
	if err != nil {
		return 0, 0, 0, c, err
	}
	c.statusWrites = r1.sub(r0)["PATCH pipelineruns/status"] / handoffRuns
	c.reconciles = (b.managerCounts()["pipelinerun"] - rc0["pipelinerun"]) / handoffRuns
	b.mu.Lock()
	type job struct{ added, done time.Time }
	var jobs []job
	for name, t := range b.handoffAdd {
		jobs = append(jobs, job{t, b.handoffDone[name]})
	}
	b.mu.Unlock()
	sort.Slice(jobs, func(i, j int) bool { return jobs[i].added.Before(jobs[j].added) })
	var gaps []time.Duration
	for i := 1; i < len(jobs); i++ {
		if jobs[i].added.Before(jobs[i-1].done) {
			return 0, 0, 0, c, fmt.Errorf("two deploys overlapped in %s", handoffEnv)
		}
		gaps = append(gaps, jobs[i].added.Sub(jobs[i-1].done))
	}
	if len(gaps) != handoffRuns-1 {
		return 0, 0, 0, c, fmt.Errorf("%d deploys seen in %s, want %d", len(jobs), handoffEnv, handoffRuns)
	}
	if err := b.c.DeleteAllOf(ctx, &conveyorv1.PipelineRun{}, client.InNamespace(handoffNS)); err != nil {
		return 0, 0, 0, c, err
	}
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		list := &conveyorv1.PipelineRunList{}
		if err := b.c.List(ctx, list, client.InNamespace(handoffNS)); err != nil {
			return 0, 0, 0, c, err
		}
		if len(list.Items) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, 0, c, fmt.Errorf("%d handoff runs not deleted", len(list.Items))
		}
	}
	p50, p99 = percentiles(gaps)
	return p50, p99, total, c, nil
}

// handoffCost is 3b's cost per run: the manager's run status writes and
// run reconciles, for the runs created, queued and ended.
type handoffCost struct{ statusWrites, reconciles float64 }
