// Package status writes what the reconcilers decided: the kstatus conditions
// (Ready, Reconciling, Stalled) and one merge patch of an object's status.
package status

import (
	"context"
	"encoding/json"
	"fmt"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// SetHealth writes the Ready, Reconciling and Stalled conditions for h.
func SetHealth(conds *[]metav1.Condition, generation int64, h engine.Health, reason, message string) {
	ready := metav1.ConditionFalse
	if h == engine.Healthy {
		ready = metav1.ConditionTrue
	}
	meta.SetStatusCondition(conds, metav1.Condition{Type: conveyorv1.ConditionReady, Status: ready,
		Reason: reason, Message: message, ObservedGeneration: generation})
	for _, c := range []struct {
		typ string
		on  bool
	}{{conveyorv1.ConditionReconciling, h == engine.Progressing}, {conveyorv1.ConditionStalled, h == engine.Stalled}} {
		if !c.on {
			meta.RemoveStatusCondition(conds, c.typ)
			continue
		}
		meta.SetStatusCondition(conds, metav1.Condition{Type: c.typ, Status: metav1.ConditionTrue,
			Reason: reason, Message: message, ObservedGeneration: generation})
	}
}

// Patch writes the change from before to after (obj's status) with one
// merge patch of the status alone, and nothing when the status did not change:
// settled objects cost no writes.
func Patch(ctx context.Context, c client.Client, obj client.Object, before, after any) error {
	if equality.Semantic.DeepEqual(before, after) {
		return nil
	}
	from, err := json.Marshal(map[string]any{"status": before})
	if err != nil {
		return fmt.Errorf("encoding status: %w", err)
	}
	to, err := json.Marshal(map[string]any{"status": after})
	if err != nil {
		return fmt.Errorf("encoding status: %w", err)
	}
	patch, err := jsonpatch.CreateMergePatch(from, to)
	if err != nil {
		return fmt.Errorf("computing status patch: %w", err)
	}
	if err := c.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("patching status of %s: %w", client.ObjectKeyFromObject(obj), err)
	}
	return nil
}
