package engine

import conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"

// Health is an object's kstatus health: exactly one of Ready, Reconciling or
// Stalled tells where it stands, with one reason and message.
type Health int

const (
	// Healthy: Ready=True.
	Healthy Health = iota
	// Progressing: Ready=False, Reconciling=True (work in flight, or waiting for a person).
	Progressing
	// Stalled: Ready=False, Stalled=True (needs someone to change something).
	Stalled
)

// RunHealth maps a run's phase to its kstatus health.
func RunHealth(phase conveyorv1.RunPhase) Health {
	switch phase {
	case conveyorv1.RunSucceeded:
		return Healthy
	case conveyorv1.RunFailed, conveyorv1.RunRejected, conveyorv1.RunExpired, conveyorv1.RunCancelled:
		return Stalled
	default:
		return Progressing
	}
}
