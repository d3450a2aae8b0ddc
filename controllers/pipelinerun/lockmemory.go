package pipelinerun

import (
	"sync"

	"k8s.io/apimachinery/pkg/types"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
	"github.com/conveyor-dev/conveyor/controllers/engine"
)

// lockMemory keeps, per environment namespace, the Environment that holds
// its lock as this manager last wrote or read it. A queue's head, woken by
// the end of the deploy before it, takes the lock from this copy instead of
// reading the Environment first: one round trip fewer in the handoff. It is
// safe because the copy is used only for a status update, which the API
// server refuses unless the Environment is still exactly that version
// (optimistic concurrency): the holder the copy names, found released, is
// the holder the update replaces. A copy behind the API server (another
// shard, the Environment's reconciler, a deleted Environment) costs a
// refused update and a read.
type lockMemory struct {
	mu   sync.Mutex
	envs map[string]*conveyorv1.Environment
}

func newLockMemory() *lockMemory {
	return &lockMemory{envs: map[string]*conveyorv1.Environment{}}
}

// heldByOther returns a copy of ns's remembered Environment when it names a
// holder other than run, or none (nil otherwise: a run that may hold the
// lock itself reads the Environment from the API server, since no update
// would check it).
func (m *lockMemory) heldByOther(ns string, run types.UID) *conveyorv1.Environment {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.envs[ns]
	if e == nil || types.UID(e.Status.HolderUID) == run {
		return nil
	}
	return e.DeepCopy()
}

// remember keeps the Environment as read or written (nil forgets it).
func (m *lockMemory) remember(ns string, e *conveyorv1.Environment) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e == nil {
		delete(m.envs, ns)
		return
	}
	m.envs[ns] = e.DeepCopy()
}

// heldBy returns a copy of ns's remembered Environment when it names run's
// stage as the holder, nil otherwise.
func (m *lockMemory) heldBy(ns string, run types.UID, stage string) *conveyorv1.Environment {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.envs[ns]; engine.Holds(e, run, stage) {
		return e.DeepCopy()
	}
	return nil
}
