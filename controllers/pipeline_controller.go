package controllers

import (
	"context"
	"errors"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/runstate"
)

// PipelineReconciler reports whether a Pipeline's definition is usable. It
// writes status only: never the spec, labels or annotations that GitOps tools own.
type PipelineReconciler struct {
	client.Client
}

// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelines,verbs=get;list;watch
// +kubebuilder:rbac:groups=conveyor.dev,resources=pipelines/status,verbs=get;update;patch

// Reconcile validates one Pipeline and writes its Ready or Stalled condition.
func (r *PipelineReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	pipeline := &conveyorv1.Pipeline{}
	if err := r.Get(ctx, req.NamespacedName, pipeline); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := pipeline.Status.DeepCopy()
	defer func() {
		pipeline.Status.ObservedGeneration = pipeline.Generation
		if err := patchStatus(ctx, r.Client, pipeline, before, &pipeline.Status); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()

	// reconcileValidity: the conditions say whether runs can use the definition.
	if err := runstate.ValidatePipeline(&pipeline.Spec); err != nil {
		setHealth(&pipeline.Status.Conditions, pipeline.Generation, stalled, conveyorv1.ReasonInvalidSpec, err.Error())
		return ctrl.Result{}, reconcile.TerminalError(err)
	}
	setHealth(&pipeline.Status.Conditions, pipeline.Generation, healthy, conveyorv1.ReasonValid,
		fmt.Sprintf("%d stages; runs for branches %v and tags %v", len(pipeline.Spec.Stages), pipeline.Spec.Refs.Branches, pipeline.Spec.Refs.Tags))
	return ctrl.Result{}, nil
}

// SetupWithManager watches Pipelines.
func (r *PipelineReconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	return ctrl.NewControllerManagedBy(mgr).For(&conveyorv1.Pipeline{}).Named("pipeline").WithOptions(opts).Complete(r)
}
