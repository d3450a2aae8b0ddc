package pipelinerun

import (
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// leaseMemory keeps, per environment namespace, the lock's Lease as this
// manager last wrote or read it. A queue's head, woken by the end of the
// deploy before it, takes the lock from this copy instead of reading the
// Lease first: one round trip fewer in the handoff. It is safe because the
// copy is used only for an update, which the API server refuses unless the
// Lease is still exactly that version (optimistic concurrency): the holder
// the copy names, found released, is the holder the update replaces. A copy
// behind the API server (another shard, someone else's write, a deleted
// Lease) costs a refused update and a read.
type leaseMemory struct {
	mu     sync.Mutex
	leases map[string]*coordinationv1.Lease
}

func newLeaseMemory() *leaseMemory {
	return &leaseMemory{leases: map[string]*coordinationv1.Lease{}}
}

// heldByOther returns a copy of env's remembered Lease when it names a
// holder other than run (nil otherwise: a run that may hold the lock itself
// reads the Lease from the API server, since no update would check it).
func (m *leaseMemory) heldByOther(env string, run types.UID) *coordinationv1.Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.leases[env]
	if l == nil || types.UID(l.Labels[conveyorv1.LabelRunUID]) == run {
		return nil
	}
	return l.DeepCopy()
}

// remember keeps the Lease as read or written (nil forgets it).
func (m *leaseMemory) remember(env string, l *coordinationv1.Lease) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l == nil {
		delete(m.leases, env)
		return
	}
	m.leases[env] = l.DeepCopy()
}

// heldBy returns a copy of env's remembered Lease when it names run's stage
// as the holder, nil otherwise.
func (m *leaseMemory) heldBy(env string, run types.UID, stage string) *coordinationv1.Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	l := m.leases[env]
	if l == nil || types.UID(l.Labels[conveyorv1.LabelRunUID]) != run || l.Annotations[conveyorv1.AnnotationStage] != stage {
		return nil
	}
	return l.DeepCopy()
}

// known reports whether this manager has a copy of env's Lease.
func (m *leaseMemory) known(env string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leases[env] != nil
}
