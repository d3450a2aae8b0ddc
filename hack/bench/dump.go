package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	batchv1 "k8s.io/api/batch/v1"
	eventsv1 "k8s.io/api/events/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// dumpObjects writes, as the API server returns them, one object of each
// kind a throughput run writes: run-0, its production Approval, the
// Environment of lane 0's staging, lane 0's Release, an Event about run-0
// and its staging Job, once every phase is done. hack/patchcost measures
// writes of such objects.
func (b *bench) dumpObjects(ctx context.Context, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	run := &conveyorv1.PipelineRun{}
	if err := b.c.Get(ctx, client.ObjectKey{Namespace: "bench", Name: "run-0"}, run); err != nil {
		return err
	}
	approvals := &conveyorv1.ApprovalList{}
	envs := &conveyorv1.EnvironmentList{}
	releases := &conveyorv1.ReleaseList{}
	events := &eventsv1.EventList{}
	jobs := &batchv1.JobList{}
	for _, l := range []struct {
		list client.ObjectList
		opts []client.ListOption
	}{
		{approvals, []client.ListOption{client.InNamespace("bench")}},
		{envs, nil},
		{releases, []client.ListOption{client.InNamespace("bench"), client.MatchingLabels{conveyorv1.LabelPipeline: run.Spec.PipelineRef.Name}}},
		{events, []client.ListOption{client.InNamespace("bench")}},
		{jobs, []client.ListOption{client.InNamespace(lanePrefix(0) + "staging"), client.MatchingLabels{conveyorv1.LabelRunUID: string(run.UID)}}},
	} {
		if err := b.c.List(ctx, l.list, l.opts...); err != nil {
			return err
		}
	}
	objs := map[string]any{"run": run}
	for i := range approvals.Items {
		if a := &approvals.Items[i]; a.Spec.PipelineRunRef.Name == run.Name && a.Spec.Stage == "production" {
			objs["approval"] = a
		}
	}
	for i := range envs.Items {
		if e := &envs.Items[i]; e.Spec.Namespace == lanePrefix(0)+"staging" {
			objs["environment"] = e
		}
	}
	if len(releases.Items) > 0 {
		objs["release"] = &releases.Items[0]
	}
	for i := range events.Items {
		if e := &events.Items[i]; e.Regarding.Name == run.Name {
			objs["event"] = e
		}
	}
	if len(jobs.Items) > 0 {
		objs["job"] = &jobs.Items[0]
	}
	for _, kind := range []string{"run", "approval", "environment", "release", "event", "job"} {
		o, ok := objs[kind]
		if !ok {
			return fmt.Errorf("dumping the objects: no %s of run-0 found", kind)
		}
		data, err := json.MarshalIndent(o, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, kind+".json"), append(data, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}
