package pipeline

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// TestEndings: the run seen ending last is the later one; an ending not
// seen (or forgotten) gives no answer, and the memory is bounded.
func TestEndings(t *testing.T) {
	run := func(uid string) *conveyorv1.PipelineRun {
		return &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{UID: k8stypes.UID("uid-" + uid)}}
	}
	e := newEndings(2)
	a, b, c := run("a"), run("b"), run("c")
	e.saw(a.UID)
	e.saw(b.UID)
	if later, known := e.later(b, a); !known || !later {
		t.Fatalf("b ended after a: later %v known %v", later, known)
	}
	if later, known := e.later(a, b); !known || later {
		t.Fatalf("a ended before b: later %v known %v", later, known)
	}
	if _, known := e.later(a, c); known {
		t.Fatal("c was never seen ending, yet the order is known")
	}
	e.saw(c.UID) // the memory holds two: the least recently used is forgotten
	_, knownA := e.later(c, a)
	_, knownB := e.later(c, b)
	if knownA == knownB {
		t.Fatalf("with room for two endings, a known %v and b known %v", knownA, knownB)
	}
}
