// Package index registers the field indexes of the manager's cache, so a
// reconcile reads what belongs to a run without listing everything.
package index

import (
	"context"
	"fmt"
	"slices"

	batchv1 "k8s.io/api/batch/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// Field indexes on the manager's cache, so a reconcile reads what belongs to a
// run without listing everything.
const (
	// JobRun indexes Jobs by the "<namespace>/<name>" of their run.
	JobRun = "conveyor.dev/job-run"
	// ApprovalRun indexes Approvals by spec.pipelineRunRef.name.
	ApprovalRun = "spec.pipelineRunRef.name"
	// RunPipeline indexes PipelineRuns by spec.pipelineRef.name.
	RunPipeline = "spec.pipelineRef.name"
	// RunQueued indexes unfinished PipelineRuns by the environment a
	// stage of theirs is queued for.
	RunQueued = "conveyor.dev/queued-for"
	// RunHeld indexes, under the one key Held, unfinished PipelineRuns with
	// a deploy stage Frozen or Blocked.
	RunHeld = "conveyor.dev/held"
	// Held is RunHeld's key.
	Held = "held"
	// RunGauged indexes unfinished PipelineRuns the environment gauges
	// count (conveyor_environment_queued_deploys and _frozen_deploys), under
	// the keys Queued (a stage queued for an environment) and Frozen (a
	// stage waiting for a freeze window to close): a scrape reads those
	// runs, not every run the manager keeps.
	RunGauged = "conveyor.dev/gauged"
	// Queued and Frozen are RunGauged's keys.
	Queued, Frozen = "queued", "frozen"
	// RunDeploying indexes unfinished PipelineRuns by the environment a
	// deploy stage of theirs runs in.
	RunDeploying = "conveyor.dev/deploying-to"
	// EnvironmentNamespace indexes Environments by spec.namespace.
	EnvironmentNamespace = "spec.namespace"
	// ReleaseRefused indexes refused Releases by spec.pipelineRef.name: a
	// tag run reads its Pipeline's refusals at each reconcile, and the
	// Releases of a Pipeline grow with every tag it ships.
	ReleaseRefused = "conveyor.dev/refused-of"
)

// Setup registers the field indexes the reconcilers use.
func Setup(ctx context.Context, mgr ctrl.Manager) error {
	idx := mgr.GetFieldIndexer()
	if err := idx.IndexField(ctx, &batchv1.Job{}, JobRun, func(o client.Object) []string {
		if key := o.GetAnnotations()[conveyorv1.AnnotationRun]; key != "" {
			return []string{key}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing Jobs by run: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.Approval{}, ApprovalRun, func(o client.Object) []string {
		return []string{o.(*conveyorv1.Approval).Spec.PipelineRunRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing Approvals by run: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.PipelineRun{}, RunPipeline, func(o client.Object) []string {
		return []string{o.(*conveyorv1.PipelineRun).Spec.PipelineRef.Name}
	}); err != nil {
		return fmt.Errorf("indexing PipelineRuns by pipeline: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.PipelineRun{}, RunQueued, QueuedFor); err != nil {
		return fmt.Errorf("indexing PipelineRuns by queued environment: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.PipelineRun{}, RunHeld, func(o client.Object) []string {
		if len(stagesIn(o.(*conveyorv1.PipelineRun), conveyorv1.StageFrozen, conveyorv1.StageBlocked)) == 0 {
			return nil
		}
		return []string{Held}
	}); err != nil {
		return fmt.Errorf("indexing PipelineRuns by held environment: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.PipelineRun{}, RunGauged, Gauged); err != nil {
		return fmt.Errorf("indexing PipelineRuns for the environment gauges: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.PipelineRun{}, RunDeploying, func(o client.Object) []string {
		return stagesIn(o.(*conveyorv1.PipelineRun), conveyorv1.StageRunning)
	}); err != nil {
		return fmt.Errorf("indexing PipelineRuns by environment deployed to: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.Release{}, ReleaseRefused, RefusedOf); err != nil {
		return fmt.Errorf("indexing refused Releases by pipeline: %w", err)
	}
	if err := idx.IndexField(ctx, &conveyorv1.Environment{}, EnvironmentNamespace, func(o client.Object) []string {
		return []string{o.(*conveyorv1.Environment).Spec.Namespace}
	}); err != nil {
		return fmt.Errorf("indexing Environments by namespace: %w", err)
	}
	return nil
}

// QueuedFor is a run's RunQueued index value: the environment a stage of
// it is queued for.
func QueuedFor(o client.Object) []string {
	if env := engine.QueuedEnvironment(o.(*conveyorv1.PipelineRun)); env != "" {
		return []string{env}
	}
	return nil
}

// Gauged is a run's RunGauged index value: Queued when a stage of it is
// queued for an environment, Frozen when a stage waits for a freeze window
// (in any namespace), both or neither; none once it finished.
func Gauged(o client.Object) []string {
	run := o.(*conveyorv1.PipelineRun)
	var out []string
	if engine.QueuedEnvironment(run) != "" {
		out = append(out, Queued)
	}
	if !run.Status.Phase.Finished() && slices.ContainsFunc(run.Status.Stages, func(ss conveyorv1.StageStatus) bool { return ss.Phase == conveyorv1.StageFrozen }) {
		out = append(out, Frozen)
	}
	return out
}

// RefusedOf is a Release's ReleaseRefused index value: its Pipeline, when
// the release was refused.
func RefusedOf(o client.Object) []string {
	if rel := o.(*conveyorv1.Release); rel.Status.Verdict == conveyorv1.VerdictRefused {
		return []string{rel.Spec.PipelineRef.Name}
	}
	return nil
}

// stagesIn are the environments where an unfinished run has a deploy stage
// in one of the phases.
func stagesIn(run *conveyorv1.PipelineRun, phases ...conveyorv1.StagePhase) []string {
	if run.Status.Phase.Finished() {
		return nil
	}
	var out []string
	for _, ss := range run.Status.Stages {
		if ss.Namespace != "" && ss.Namespace != run.Namespace && slices.Contains(phases, ss.Phase) {
			out = append(out, ss.Namespace)
		}
	}
	return out
}
