// Package manager wires Conveyor into a controller-runtime manager: the
// scheme, the cache (what it holds and how slim), the field indexes, the three
// reconcilers and the webhook certificate. main and the test suites start the
// manager the same way through it.
package manager

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/labels"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"

	"github.com/conveyor-dev/conveyor/controllers/approval"
	"github.com/conveyor-dev/conveyor/controllers/environment"
	"github.com/conveyor-dev/conveyor/controllers/gitstatus"
	"github.com/conveyor-dev/conveyor/controllers/index"
	"github.com/conveyor-dev/conveyor/controllers/notify"
	"github.com/conveyor-dev/conveyor/controllers/pipeline"
	"github.com/conveyor-dev/conveyor/controllers/pipelinerun"
)

// SetupOptions tune the reconcilers.
type SetupOptions struct {
	// Controller options apply to every controller (concurrency, name validation).
	Controller controller.Options
	// TrustUnrecordedApprovers counts Approvals that carry no approver
	// recorded by the admission webhook. Off, such an Approval counts for
	// nothing (fail closed); on only for a manager run locally without its
	// webhooks (make run).
	TrustUnrecordedApprovers bool
	// Notifier sends CloudEvents of runs' transitions (nil: none).
	Notifier *notify.Notifier
	// Reporter reports stages on commits (nil: none).
	Reporter *gitstatus.Reporter
	// Shard, when not nil, is the manager's --watch-label-selector: it
	// handles the Pipelines it matches (their runs are limited in the cache,
	// see Config.Shard).
	Shard labels.Selector
	// NoEnvironmentStatus leaves the Environment reconciler (policy
	// readiness, freeze windows) to another manager: with shards, one of
	// them runs it. Every manager's runs still take locks and record
	// deploys in Environments' status.
	NoEnvironmentStatus bool
}

// Setup registers the field indexes and the reconcilers with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, opts SetupOptions) error {
	if err := environment.StartPolicyInformers(ctx, mgr.GetCache()); err != nil {
		return fmt.Errorf("registering the namespace informer: %w", err)
	}
	if err := index.Setup(ctx, mgr); err != nil {
		return err
	}
	rec := mgr.GetEventRecorder("conveyor")
	if err := (&pipeline.Reconciler{Client: mgr.GetClient(), Recorder: rec, Shard: opts.Shard}).SetupWithManager(mgr, opts.Controller); err != nil {
		return err
	}
	if err := (&pipelinerun.Reconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec, TrustUnrecordedApprovers: opts.TrustUnrecordedApprovers, Notifier: opts.Notifier, Reporter: opts.Reporter}).SetupWithManager(mgr, opts.Controller); err != nil {
		return err
	}
	if !opts.NoEnvironmentStatus {
		if err := (&environment.Reconciler{Client: mgr.GetClient()}).SetupWithManager(mgr, opts.Controller); err != nil {
			return err
		}
	}
	return (&approval.Reconciler{Client: mgr.GetClient(), TrustUnrecordedApprovers: opts.TrustUnrecordedApprovers}).SetupWithManager(mgr, opts.Controller)
}
