package controllers

import (
	"context"
	"fmt"

	batchv1 "k8s.io/api/batch/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/runstate"
)

// Field indexes on the manager's cache, so a reconcile reads what belongs to a
// run without listing everything.
const (
	// indexJobRun indexes Jobs by the "<namespace>/<name>" of their run.
	indexJobRun = "conveyor.dev/job-run"
	// indexApprovalRun indexes Approvals by spec.pipelineRunRef.name.
	indexApprovalRun = "spec.pipelineRunRef.name"
	// indexRunPipeline indexes PipelineRuns by spec.pipelineRef.name.
	indexRunPipeline = "spec.pipelineRef.name"
	// indexRunQueued indexes unfinished PipelineRuns by the environment a
	// stage of theirs is queued for.
	indexRunQueued = "conveyor.dev/queued-for"
)

// SetupIndexes registers the field indexes the reconcilers use.
func SetupIndexes(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &batchv1.Job{}, indexJobRun, func(o client.Object) []string {
		if key := o.GetAnnotations()[runstate.AnnotationRun]; key != "" {
			return []string{key}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing Jobs by run: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.Approval{}, indexApprovalRun, func(o client.Object) []string {
		return []string{o.(*conveyorv1.Approval).Spec.PipelineRunRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing Approvals by run: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.PipelineRun{}, indexRunPipeline, func(o client.Object) []string {
		return []string{o.(*conveyorv1.PipelineRun).Spec.PipelineRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing PipelineRuns by pipeline: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.PipelineRun{}, indexRunQueued, func(o client.Object) []string {
		if env := runstate.QueuedEnvironment(o.(*conveyorv1.PipelineRun)); env != "" {
			return []string{env}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing PipelineRuns by queued environment: %w", err)
	}
	return nil
}
