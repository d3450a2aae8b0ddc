// Package environment reads and writes Environments: the policy the
// environment rules read (for admission and for a run's deploy stages), and
// its status (whether it is frozen, whether its policy reads). The lock and
// the record of deploys in its status are written by the runs (package
// pipelinerun, passOn).
package environment

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// +kubebuilder:rbac:groups=conveyor.dev,resources=environments,verbs=get;list;watch
// +kubebuilder:rbac:groups=conveyor.dev,resources=environments/status,verbs=get;update;patch
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch

// namespaceMeta is what ReadPolicy reads of a namespace: its metadata.
func namespaceMeta() *metav1.PartialObjectMetadata {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	return ns
}

// StartPolicyInformers registers, before the cache starts, the informer of
// namespaces' metadata that ReadPolicy reads, so that it starts with the
// others: started by the first read instead, it made the first deploying
// run's reconcile wait for its first list (in the bench that reconcile took
// 125 ms against 12 ms for the next runs, and 26 ms once the informer
// started with the cache).
func StartPolicyInformers(ctx context.Context, c cache.Cache) error {
	_, err := c.GetInformer(ctx, namespaceMeta(), cache.BlockUntilSynced(false))
	return err
}

// ReadPolicy reads every Environment and the labels of the namespace a
// Pipeline lives in: what the environment rules read.
func ReadPolicy(ctx context.Context, c client.Reader, namespace string) (engine.Policy, error) {
	envs, err := ReadEnvironments(ctx, c)
	if err != nil {
		return engine.Policy{}, err
	}
	ns := namespaceMeta()
	if err := c.Get(ctx, types.NamespacedName{Name: namespace}, ns); client.IgnoreNotFound(err) != nil {
		return engine.Policy{}, fmt.Errorf("reading namespace %s: %w", namespace, err)
	}
	return engine.Policy{Environments: envs, NamespaceLabels: ns.Labels}, nil
}

// ReadEnvironments lists every Environment: the cache's own objects, not
// copies. Every reconcile of a run that deploys reads every Environment,
// and copying them here was about half of the 13 % of the manager's CPU
// that Environment copies took in a bench profile (300 Environments).
// Nothing changes them in place: the run reconciler copies the one it writes.
func ReadEnvironments(ctx context.Context, c client.Reader) ([]conveyorv1.Environment, error) {
	envs := &conveyorv1.EnvironmentList{}
	if err := c.List(ctx, envs, client.UnsafeDisableDeepCopy); err != nil {
		return nil, fmt.Errorf("listing Environments: %w", err)
	}
	return envs.Items, nil
}
