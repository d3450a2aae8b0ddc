package engine

import (
	"sort"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Default history limits, as a CronJob's.
const (
	DefaultSucceededHistory = 3
	DefaultFailedHistory    = 1
)

// Pruned is a finished run the history limits delete, with the limit that
// deletes it.
type Pruned struct {
	Run *conveyorv1.PipelineRun
	// Keep is how many runs of its kind the history keeps; Kind is
	// "succeeded" or "failed" (any other end).
	Keep int32
	Kind string
}

// Prune picks the finished runs of one Pipeline beyond its history limits
// (succeeded, and not succeeded), newest kept. Runs in flight or being
// deleted are never picked. finishedLater orders two runs that finished in
// the same whole second by when their end was seen (true when a ended after
// b); nil, or no answer, falls back to creation time and name.
func Prune(runs []*conveyorv1.PipelineRun, history *conveyorv1.History, finishedLater func(a, b *conveyorv1.PipelineRun) (bool, bool)) []Pruned {
	keepOK, keepFailed := int32(DefaultSucceededHistory), int32(DefaultFailedHistory)
	if history != nil && history.Succeeded != nil {
		keepOK = *history.Succeeded
	}
	if history != nil && history.Failed != nil {
		keepFailed = *history.Failed
	}
	var ok, failed []*conveyorv1.PipelineRun
	for _, run := range runs {
		if !run.Status.Phase.Finished() || !run.DeletionTimestamp.IsZero() {
			continue
		}
		if run.Status.Phase == conveyorv1.RunSucceeded {
			ok = append(ok, run)
		} else {
			failed = append(failed, run)
		}
	}
	var out []Pruned
	for _, group := range []struct {
		runs []*conveyorv1.PipelineRun
		keep int32
		kind string
	}{{ok, keepOK, "succeeded"}, {failed, keepFailed, "failed"}} {
		if int32(len(group.runs)) <= group.keep {
			continue
		}
		sort.SliceStable(group.runs, func(i, j int) bool { return newerEnd(group.runs[i], group.runs[j], finishedLater) })
		for _, old := range group.runs[group.keep:] {
			out = append(out, Pruned{Run: old, Keep: group.keep, Kind: group.kind})
		}
	}
	return out
}

// newerEnd orders runs newest first: by completion time, then by when their
// end was seen, then creation, then name.
func newerEnd(a, b *conveyorv1.PipelineRun, finishedLater func(a, b *conveyorv1.PipelineRun) (bool, bool)) bool {
	ta, tb := a.CreationTimestamp, b.CreationTimestamp
	if a.Status.CompletionTime != nil {
		ta = *a.Status.CompletionTime
	}
	if b.Status.CompletionTime != nil {
		tb = *b.Status.CompletionTime
	}
	if !ta.Equal(&tb) {
		return tb.Before(&ta)
	}
	if finishedLater != nil {
		if later, known := finishedLater(a, b); known {
			return later
		}
	}
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	return a.Name > b.Name
}
