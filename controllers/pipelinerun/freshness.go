package pipelinerun

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/lru"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// staleRecheck is how soon a run whose cached version is not the one last
// written is looked at again, should no watch event bring it back sooner.
const staleRecheck = 200 * time.Millisecond

// freshness reads a manager's own writes: it remembers, per run UID, the
// version of the run this manager last wrote or read from the API server. A
// cached run at another version may not show that write yet: deciding from it
// would tell transitions again and rewrite status already written.
type freshness struct {
	latest *lru.Cache
}

// seenVersion is the version of a run this manager last wrote or read.
type seenVersion struct {
	resourceVersion string
	generation      int64
	// waited is set once a reconcile met a cache behind this version and
	// waited for it.
	waited bool
}

// readVerdict says how a reconcile reads a run it found in the cache.
type readVerdict int

const (
	// useCache: the cached run is as fresh as anything this manager wrote.
	useCache readVerdict = iota
	// waitForCache: the cache does not show this manager's last write yet;
	// the write's own watch event brings the run back (awaited; staleRecheck
	// in case the difference is someone else's metadata write).
	waitForCache
	// readAPI: read the run from the API server: someone changed its spec
	// (cancelled it), the cache still differs after waiting, or a cancelled
	// run is about to be ended as never started while the cache may not show
	// the snapshot (and Jobs) an earlier reconcile wrote.
	readAPI
)

func newFreshness(size int) *freshness { return &freshness{latest: lru.New(size)} }

// check decides how to read the run the cache shows.
func (f *freshness) check(run *conveyorv1.PipelineRun) readVerdict {
	verdict := useCache
	if v, ok := f.latest.Get(run.UID); ok {
		seen := v.(seenVersion)
		switch {
		case seen.resourceVersion == run.ResourceVersion:
			if run.Status.Phase.Finished() {
				f.latest.Remove(run.UID) // caught up, and never decided again
			}
		case seen.generation == run.Generation && !seen.waited:
			seen.waited = true
			f.latest.Add(run.UID, seen)
			return waitForCache
		default:
			verdict = readAPI
		}
	}
	if run.Spec.Cancelled && run.Status.PipelineSpec == nil && !run.Status.Phase.Finished() {
		verdict = readAPI
	}
	return verdict
}

// awaited reports whether a reconcile waits for the cache to show this
// version of the run (waitForCache): its watch event is then let through
// (notOwnStatusWrite), to bring the run back as soon as the cache has it.
func (f *freshness) awaited(run client.Object) bool {
	v, ok := f.latest.Get(run.GetUID())
	if !ok {
		return false
	}
	seen := v.(seenVersion)
	return seen.waited && seen.resourceVersion == run.GetResourceVersion()
}

// read notes a run read from the API server.
func (f *freshness) read(run *conveyorv1.PipelineRun) {
	if run.Status.Phase.Finished() {
		f.latest.Remove(run.UID) // never decided again
	}
}

// wrote notes the version this manager wrote of a run that was in flight.
func (f *freshness) wrote(run *conveyorv1.PipelineRun, wasFinished bool) {
	if !wasFinished {
		f.latest.Add(run.UID, seenVersion{resourceVersion: run.ResourceVersion, generation: run.Generation})
	}
}

// onceSet tells each of a run's transitions once: a reconcile that reads a
// run from a cache not yet showing the last status patch computes the same
// transition again, and must not tell it twice. The oldest are forgotten first.
type onceSet struct {
	mu   sync.Mutex
	seen *lru.Cache
}

func newOnceSet(size int) *onceSet { return &onceSet{seen: lru.New(size)} }

// first reports whether the transition key of the run is told for the first time.
func (o *onceSet) first(uid types.UID, key string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	k := string(uid) + "/" + key
	if _, ok := o.seen.Get(k); ok {
		return false
	}
	o.seen.Add(k, struct{}{})
	return true
}
