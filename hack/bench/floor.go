package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/conveyor-dev/conveyor/test/framework/localcluster"
)

// measureFloor: phase 1, the API server's own latency and create rate,
// before the manager runs.
func (b *bench) measureFloor(ctx context.Context, fig *figures) error {
	var err error
	if fig.floorP50, fig.floorP99, err = b.floorLatency(ctx); err != nil {
		return err
	}
	fig.rawRate, err = b.rawCreateRate(ctx)
	return err
}

// floorLatency: create a Job, time until its watch event arrives.
func (b *bench) floorLatency(ctx context.Context) (time.Duration, time.Duration, error) {
	var lat []time.Duration
	for i := 0; i < b.o.samples; i++ {
		d, err := b.hop(ctx, fmt.Sprintf("floor-%d", i))
		if err != nil {
			return 0, 0, err
		}
		lat = append(lat, d)
	}
	p50, p99 := percentiles(lat)
	return p50, p99, nil
}

// hop is the floor's hop: a Job created, and the time until its watch event
// arrives (> 0 with an error when it was created but never seen).
func (b *bench) hop(ctx context.Context, name string) (time.Duration, error) {
	j := floorJob(name)
	ch := make(chan struct{})
	b.mu.Lock()
	b.jobSeen[j.Name] = ch
	b.mu.Unlock()
	start := time.Now()
	if err := b.c.Create(ctx, j); err != nil {
		return 0, err
	}
	select {
	case <-ch:
		return time.Since(start), nil
	case <-time.After(30 * time.Second):
		return time.Since(start), fmt.Errorf("no watch event for Job %s", j.Name) // created, never seen
	}
}

// probeEvery is how often a probe times the floor's hop during a loaded phase.
const probeEvery = 500 * time.Millisecond

// probe times the floor's hop every probeEvery while a phase runs: the hop
// of phase 1, on an API server (and a driver) as loaded as the phase loads
// them, which is what the latencies people feel in that phase (an Approval
// to its Job, two such hops and the manager's work between) are held
// against. Its Job creates are taken out of the phase's requests.
type probe struct {
	lat     []time.Duration
	creates int // requests made
	created int // Jobs created
	stop    chan struct{}
	done    chan struct{}
}

func (b *bench) startProbe(ctx context.Context) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	b.probes++
	phase := b.probes
	go func() {
		defer close(p.done)
		tick := time.NewTicker(probeEvery)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-tick.C:
			}
			p.creates++
			d, err := b.hop(ctx, fmt.Sprintf("probe-%d-%d", phase, i))
			if d > 0 || err == nil {
				p.created++
			}
			if err == nil {
				p.lat = append(p.lat, d)
			}
		}
	}()
	return p
}

// end stops the probe, if it was started, and returns the hops it timed.
func (p *probe) end() []time.Duration {
	if p.stop != nil {
		close(p.stop)
		<-p.done
	}
	return p.lat
}

func floorJob(name string) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "floor"}, Spec: batchv1.JobSpec{
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
}

// rawCreateRate: Jobs created per second by one client at the manager's QPS settings.
func (b *bench) rawCreateRate(ctx context.Context) (float64, error) {
	cfg := rest.CopyConfig(b.cfg)
	cfg.QPS, cfg.Burst = float32(b.o.qps), b.o.burst
	c, err := client.New(cfg, client.Options{Scheme: localcluster.Scheme()})
	if err != nil {
		return 0, err
	}
	n := 600
	var next atomic.Int64
	var wg sync.WaitGroup
	var firstErr atomic.Value
	start := time.Now()
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > int64(n) {
					return
				}
				if err := c.Create(ctx, floorJob(fmt.Sprintf("raw-%d", i))); err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
