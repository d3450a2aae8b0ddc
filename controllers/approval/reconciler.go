// Package approval reconciles Approvals: each says whether its run took it
// into account, and if not why, as the engine's approval rules read it.
package approval

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/index"
	"github.com/conveyor-dev/conveyor/controllers/status"
)

// Reconciler reports on each Approval whether its run took it into
// account, and if not, why not. The run's reconciler does the taking.
type Reconciler struct {
	client.Client
	// TrustUnrecordedApprovers counts Approvals without a recorded approver
	// (the webhooks not registered): local use only.
	TrustUnrecordedApprovers bool
}

// +kubebuilder:rbac:groups=conveyor.dev,resources=approvals,verbs=get;list;watch
// +kubebuilder:rbac:groups=conveyor.dev,resources=approvals/status,verbs=get;update;patch

// Reconcile reads the Approval's run and writes the engine's verdict into
// the Approval's status: one status write, none when nothing changed.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	approval := &conveyorv1.Approval{}
	if err := r.Get(ctx, req.NamespacedName, approval); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	run := &conveyorv1.PipelineRun{}
	err := r.Get(ctx, types.NamespacedName{Namespace: approval.Namespace, Name: approval.Spec.PipelineRunRef.Name}, run)
	if apierrors.IsNotFound(err) {
		run = nil
	} else if err != nil {
		return ctrl.Result{}, fmt.Errorf("getting PipelineRun: %w", err)
	}
	v := engine.EvaluateApproval(run, approval, r.TrustUnrecordedApprovers)
	ctrl.LoggerFrom(ctx).V(1).Info("Evaluated approval", "run", klog.KRef(approval.Namespace, approval.Spec.PipelineRunRef.Name), "reason", v.Reason)
	if wait, after := v.Postpone(approval, time.Now()); wait {
		return ctrl.Result{RequeueAfter: after}, nil
	}
	before := approval.Status.DeepCopy()
	approval.Status.ObservedGeneration = approval.Generation
	approval.Status.Settled = v.Settled
	status.SetHealth(&approval.Status.Conditions, approval.Generation, v.Health, v.Reason, v.Message)
	return ctrl.Result{}, status.Patch(ctx, r.Client, approval, before, &approval.Status)
}

// SetupWithManager watches Approvals and the runs they name.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&conveyorv1.Approval{}).
		Named("approval").
		WithOptions(opts).
		Watches(&conveyorv1.PipelineRun{}, handler.EnqueueRequestsFromMapFunc(r.runToApprovals)).
		Complete(r)
}

// runToApprovals maps a run to the Approvals that name it.
func (r *Reconciler) runToApprovals(ctx context.Context, o client.Object) []reconcile.Request {
	list := &conveyorv1.ApprovalList{}
	if err := r.List(ctx, list, client.InNamespace(o.GetNamespace()), client.MatchingFields{index.ApprovalRun: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Listing approvals of run", "run", klog.KObj(o))
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for i := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&list.Items[i])})
	}
	return reqs
}
