// Package controllers holds Conveyor's reconcilers: one per kind.
package controllers

import (
	"context"

	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/controller"
)

// Options tune the reconcilers.
type Options struct {
	// Controller options apply to every controller (concurrency, name validation).
	Controller controller.Options
	// Recorder records Events; the manager's recorder for "conveyor" when nil.
	Recorder events.EventRecorder
}

// Setup registers the field indexes and the three reconcilers with the manager.
func Setup(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	if err := SetupIndexes(ctx, mgr); err != nil {
		return err
	}
	rec := opts.Recorder
	if rec == nil {
		rec = mgr.GetEventRecorder("conveyor")
	}
	if err := (&PipelineReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr, opts.Controller); err != nil {
		return err
	}
	if err := (&PipelineRunReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(), Recorder: rec}).SetupWithManager(mgr, opts.Controller); err != nil {
		return err
	}
	return (&ApprovalReconciler{Client: mgr.GetClient()}).SetupWithManager(mgr, opts.Controller)
}
