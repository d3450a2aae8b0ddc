package environment

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/index"
	"github.com/conveyor-dev/conveyor/controllers/status"
)

// Reconciler writes an Environment's status: whether its policy reads, and
// whether a freeze window is open (looked at again when one opens or
// closes). It never writes the spec, which the platform's admins (or their
// GitOps tool) own, nor the lock (holder, holderStage, holderUID,
// heldSince) and the deploy record, which the runs write with optimistic
// concurrency; its own writes are merge patches of the fields it changes.
type Reconciler struct {
	client.Client
	// Now returns the current time; tests may pin it.
	Now func() metav1.Time
}

// Reconcile writes one Environment's status.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, retErr error) {
	env := &conveyorv1.Environment{}
	if err := r.Get(ctx, req.NamespacedName, env); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := env.Status.DeepCopy()
	defer func() {
		env.Status.ObservedGeneration = env.Generation
		if err := status.Patch(ctx, r.Client, env, before, &env.Status); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	now := r.Now().Time
	windows, err := engine.ParseWindows(env)
	if err != nil {
		env.Status.Frozen, env.Status.FrozenUntil = "", nil
		status.SetHealth(&env.Status.Conditions, env.Generation, engine.Stalled, conveyorv1.ReasonInvalidSpec, err.Error()+": deploys here are blocked until it is fixed")
		return ctrl.Result{}, nil
	}
	var next time.Time
	if f := engine.Frozen(windows, now); f != nil {
		env.Status.Frozen, env.Status.FrozenUntil = f.Window, &metav1.Time{Time: f.Until}
		next = f.Until
	} else {
		env.Status.Frozen, env.Status.FrozenUntil = "", nil
		next = engine.NextFreeze(windows, now)
	}
	if msg, err := r.claimed(ctx, env); err != nil || msg != "" {
		status.SetHealth(&env.Status.Conditions, env.Generation, engine.Stalled, conveyorv1.ReasonInvalidSpec, msg)
		return ctrl.Result{}, err
	}
	status.SetHealth(&env.Status.Conditions, env.Generation, engine.Healthy, conveyorv1.ReasonValid,
		fmt.Sprintf("deploys to namespace %s; %d freeze window(s)", env.Spec.Namespace, len(windows)))
	if next.IsZero() {
		return ctrl.Result{}, nil
	}
	return ctrl.Result{RequeueAfter: max(next.Sub(now), time.Second)}, nil
}

// claimed says which other Environments name the same namespace, "" when none.
func (r *Reconciler) claimed(ctx context.Context, env *conveyorv1.Environment) (string, error) {
	envs := &conveyorv1.EnvironmentList{}
	if err := r.List(ctx, envs, client.MatchingFields{index.EnvironmentNamespace: env.Spec.Namespace}); err != nil {
		return "", fmt.Errorf("listing Environments of namespace %s: %w", env.Spec.Namespace, err)
	}
	var others []string
	for _, e := range envs.Items {
		if e.Name != env.Name {
			others = append(others, e.Name)
		}
	}
	if len(others) == 0 {
		return "", nil
	}
	return fmt.Sprintf("namespace %s is named by other Environments too (%s): deploys there are blocked until one remains", env.Spec.Namespace, strings.Join(others, ", ")), nil
}

// SetupWithManager watches Environments.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager, opts controller.Options) error {
	if r.Now == nil {
		r.Now = metav1.Now
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&conveyorv1.Environment{}).
		Named("environment").
		WithOptions(opts).
		Complete(r)
}
