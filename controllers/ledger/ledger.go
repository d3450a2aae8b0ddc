// Package ledger reads and writes the release ledger: one Release per
// Pipeline and tag, written by the manager alone. Admission reads it to refuse
// runs of a refused release or a moved tag; the run reconciler reads it to
// stop such runs when they got in another way, and writes each tag run's
// verdicts and deploys into it.
package ledger

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
	"github.com/conveyor-dev/conveyor/controllers/index"
)

// +kubebuilder:rbac:groups=conveyor.dev,resources=releases,verbs=get;list;watch;create;update

// Read returns what the ledger says of a tag run: its Release, and the
// refused Releases of its Pipeline. Branch runs have none.
func Read(ctx context.Context, reader client.Reader, run *conveyorv1.PipelineRun) (engine.Ledger, error) {
	var l engine.Ledger
	git := run.Spec.Git
	if git.Tag == "" {
		return l, nil
	}
	rel := &conveyorv1.Release{}
	err := reader.Get(ctx, types.NamespacedName{Namespace: run.Namespace, Name: engine.ReleaseName(run.Spec.PipelineRef.Name, git.Tag)}, rel)
	switch {
	case err == nil:
		l.Release = rel
	case !apierrors.IsNotFound(err):
		return l, fmt.Errorf("reading the release ledger: %w", err)
	}
	// The refused ones only, by their index: not a copy of every Release
	// the Pipeline shipped at each of a tag run's reconciles.
	refused := &conveyorv1.ReleaseList{}
	if err := reader.List(ctx, refused, client.InNamespace(run.Namespace), client.MatchingFields{index.ReleaseRefused: run.Spec.PipelineRef.Name}); err != nil {
		return l, fmt.Errorf("reading the release ledger: %w", err)
	}
	l.Refused = refused.Items
	return l, nil
}

// Record writes the run's release as status st says it stands (see
// engine.RecordRelease): created on the tag's first run, updated as its
// approval stages decide and its deploys succeed. A verdict that changes is
// told in an Event on the Release. A Release created meanwhile by another run,
// or changed since it was read, is an error: the run is decided again.
func Record(ctx context.Context, c client.Client, recorder events.EventRecorder, run *conveyorv1.PipelineRun, st *conveyorv1.PipelineRunStatus, l engine.Ledger) error {
	next := engine.RecordRelease(run, st, l.Release)
	if next == nil {
		return nil
	}
	var err error
	if l.Release == nil {
		err = c.Create(ctx, next)
	} else {
		err = c.Update(ctx, next)
	}
	if err != nil {
		return fmt.Errorf("writing Release %s to the ledger: %w", next.Name, err)
	}
	before := conveyorv1.VerdictPending
	if l.Release != nil {
		before = l.Release.Status.Verdict
	}
	if v := next.Status.Verdict; v != before && recorder != nil {
		kind := corev1.EventTypeNormal
		if v == conveyorv1.VerdictRefused {
			kind = corev1.EventTypeWarning
		}
		recorder.Eventf(next, run, kind, string(v), "Decide", "release %s %s by %s in run %s", next.Spec.Tag, v, next.Status.DecidedBy, run.Name)
	}
	return nil
}
