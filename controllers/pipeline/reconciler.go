// Package pipeline reconciles Pipelines: whether a definition is usable, and
// how many finished runs of it are kept.
package pipeline

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/status"
)

// Reconciler reports whether a Pipeline's definition is usable and trims its
// runs' history. It writes status only: never the spec, labels or
// annotations that GitOps tools own.
type Reconciler struct {
	client.Client
	Recorder events.EventRecorder
	// Shard, when not nil, limits the reconciler to the Pipelines whose
	// labels it matches: with several manager shards, each Pipeline has one.
	Shard labels.Selector

	endings *endings
}

// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelines,verbs=get;list;watch
// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelines/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile trims one Pipeline's history and writes its Ready or Stalled condition.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	pipeline := &conveyorv1.Pipeline{}
	if err := r.Get(ctx, req.NamespacedName, pipeline); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if r.Shard != nil && !r.Shard.Matches(labels.Set(pipeline.Labels)) {
		return ctrl.Result{}, nil // another shard's
	}
	before := pipeline.Status.DeepCopy()
	defer func() {
		pipeline.Status.ObservedGeneration = pipeline.Generation
		if err := status.Patch(ctx, r.Client, pipeline, before, &pipeline.Status); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()

	if err := r.reconcileHistory(ctx, pipeline); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{}, reconcileValidity(pipeline)
}

// reconcileValidity ensures the conditions say whether runs can use the
// definition; an unusable one is a terminal error (nothing to retry).
func reconcileValidity(pipeline *conveyorv1.Pipeline) error {
	if err := engine.ValidatePipeline(&pipeline.Spec); err != nil {
		status.SetHealth(&pipeline.Status.Conditions, pipeline.Generation, engine.Stalled, conveyorv1.ReasonInvalidSpec, err.Error())
		return reconcile.TerminalError(err)
	}
	status.SetHealth(&pipeline.Status.Conditions, pipeline.Generation, engine.Healthy, conveyorv1.ReasonValid,
		fmt.Sprintf("%d stages; runs for branches %v and tags %v", len(pipeline.Spec.Stages), pipeline.Spec.Refs.Branches, pipeline.Spec.Refs.Tags))
	return nil
}

// SetupWithManager watches Pipelines, and runs as they end.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	r.endings = newEndings(10000)
	return ctrl.NewControllerManagedBy(mgr).
		For(&conveyorv1.Pipeline{}).
		Named("pipeline").
		WithOptions(opts).
		Watches(&conveyorv1.PipelineRun{}, r.runEnded()).
		Complete(r)
}
