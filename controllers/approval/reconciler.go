package approval

import (
	"context"
	"errors"
	"fmt"

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
}

// +kubebuilder:rbac:groups=conveyor.dev,resources=approvals,verbs=get;list;watch
// +kubebuilder:rbac:groups=conveyor.dev,resources=approvals/status,verbs=get;update;patch

// Reconcile reads the Approval's run and writes the verdict into the Approval's conditions.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	approval := &conveyorv1.Approval{}
	if err := r.Get(ctx, req.NamespacedName, approval); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := approval.Status.DeepCopy()
	skip := false
	defer func() {
		if skip {
			return
		}
		approval.Status.ObservedGeneration = approval.Generation
		if err := status.Patch(ctx, r.Client, approval, before, &approval.Status); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()

	// reconcileVerdict: the conditions say whether the run took the Approval into account.
	run := &conveyorv1.PipelineRun{}
	err := r.Get(ctx, types.NamespacedName{Namespace: approval.Namespace, Name: approval.Spec.PipelineRunRef.Name}, run)
	if apierrors.IsNotFound(err) {
		run = nil
	} else if err != nil {
		return ctrl.Result{}, fmt.Errorf("getting PipelineRun: %w", err)
	}
	v := engine.EvaluateApproval(run, approval)
	if v.Reason == conveyorv1.ReasonStageNotWaiting && v.Waiting && len(approval.Status.Conditions) == 0 {
		// The stage waits and the run is about to record the Approval: its
		// update brings this Approval back; one status write instead of two.
		skip = true
		return ctrl.Result{}, nil
	}
	// Settled Approvals leave the manager's cache (see ManagerOptions): only
	// those whose verdict no later event can change. An Approval naming a
	// missing run, or a second one from the same approver, can still count
	// if a run of that name appears or the first Approval is deleted.
	approval.Status.Settled = v.Final && v.Reason != conveyorv1.ReasonRunNotFound && v.Reason != conveyorv1.ReasonDuplicateApprover
	switch {
	case v.Accepted:
		status.SetHealth(&approval.Status.Conditions, approval.Generation, engine.Healthy, v.Reason, v.Message)
	case v.Final:
		status.SetHealth(&approval.Status.Conditions, approval.Generation, engine.Stalled, v.Reason, v.Message)
	default:
		status.SetHealth(&approval.Status.Conditions, approval.Generation, engine.Progressing, v.Reason, v.Message)
	}
	ctrl.LoggerFrom(ctx).V(1).Info("Evaluated approval", "run", klog.KRef(approval.Namespace, approval.Spec.PipelineRunRef.Name), "reason", v.Reason)
	return ctrl.Result{}, nil
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
