package main

import (
	"fmt"
	"maps"
	"math"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// figures are what the phases measured, for the report.
type figures struct {
	floorP50, floorP99            time.Duration
	rawRate                       float64
	react                         reactionFigures
	handP50, handP99, handTotal   time.Duration
	handCost                      handoffCost
	dur                           time.Duration
	before, after, quiet, settled writes
	mem0, mem1, memN              memStats
	floor, load                   cost
	approvalLat                   []time.Duration
	sharded                       shardedFigures
	runSize, floorRunSize         objectSize
}

// report prints the table of figures, with the targets they are held to.
func (b *bench) report(fig *figures) {
	// The minimum for a tag run of the seed's pipeline: its 6 Job creates, one
	// status patch per stage start (6, the approve gate's included) and one per
	// wait for a person (staging, pre-production, approve, production: 4).
	jobsPerRun, patchesPerRun := 6.0, 10.0
	runsF := float64(b.o.runs)
	w := fig.after.sub(fig.before)
	minimum := runsF * (jobsPerRun + patchesPerRun)
	core := w.jobCreates + w.runStatus + w.runMeta
	perMin := runsF / fig.dur.Minutes()
	jobsPerSec := runsF * jobsPerRun / fig.dur.Seconds()
	// Reconciles of finished runs after the restart: every run is reconciled once on start.
	idle := fig.settled.sub(fig.quiet)
	idleWrites := idle.manager()

	fmt.Println()
	fmt.Printf("%-58s %-22s %-18s %s\n", "measure", "value", "target", "mark")
	pb := func(v bool) *bool { return &v }
	row(fmt.Sprintf("1. floor: Job create -> watch event, p50 / p99 (%d)", b.o.samples), fmt.Sprintf("%s / %s", ms(fig.floorP50), ms(fig.floorP99)), "", nil)
	row(fmt.Sprintf("1. floor: raw Job creates/s, one client at QPS %.0f/burst %d", b.o.qps, b.o.burst), fmt.Sprintf("%.1f/s", fig.rawRate), "", nil)
	row(fmt.Sprintf("2. reaction: run created -> first Job, p50 / p99 (%d)", b.o.samples), fmt.Sprintf("%s / %s", ms(fig.react.p50), ms(fig.react.p99)), "", nil)
	row("2. of which the run's create call, p50 / p99", fmt.Sprintf("%s / %s", ms(fig.react.createP50), ms(fig.react.createP99)), "", nil)
	row("2. reaction p99 / floor p99", fmt.Sprintf("%.2fx", float64(fig.react.p99)/float64(fig.floorP99)), "<= 2x", pb(float64(fig.react.p99) <= 2*float64(fig.floorP99)))
	row(fmt.Sprintf("3. throughput: %d tag runs, %d concurrent", b.o.runs, b.o.concurrency), fmt.Sprintf("%.0f runs/min (%s)", perMin, fig.dur.Round(time.Second)), ">= 450/min", pb(perMin >= 450))
	row("3. Jobs launched/s, and / raw create rate", fmt.Sprintf("%.1f/s = %.0f%%", jobsPerSec, 100*jobsPerSec/fig.rawRate), ">= 90%", pb(jobsPerSec >= 0.9*fig.rawRate))
	// client-go limits each kind's requests apart (one token bucket per
	// kind): a run's own writes (status, finalizer) share one budget of QPS,
	// its Job creates another; the first binds when a run writes itself more
	// often than it creates Jobs.
	runWrites := (w.runStatus + w.runMeta) / runsF
	bound := b.o.qps * jobsPerRun / math.Max(runWrites, jobsPerRun)
	row(fmt.Sprintf("3. Jobs/s that QPS %.0f allows at %.1f run writes per 6 Jobs, and share", b.o.qps, runWrites), fmt.Sprintf("%.1f/s, %.0f%% of it", bound, 100*jobsPerSec/bound), "", nil)
	row(fmt.Sprintf("3b. one environment, %d deploys queued: handoff p50 / p99", handoffRuns), fmt.Sprintf("%s / %s", ms(fig.handP50), ms(fig.handP99)), "p50 <= 50 ms", pb(fig.handP50 <= 50*time.Millisecond))
	row("3b. run status writes and run reconciles per run", fmt.Sprintf("%.2f, %.2f", fig.handCost.statusWrites, fig.handCost.reconciles), "", nil)
	row("3b. deploys/s through one environment", fmt.Sprintf("%.1f/s (%s)", float64(handoffRuns)/fig.handTotal.Seconds(), fig.handTotal.Round(time.Millisecond)), "", nil)
	row("4. manager writes per run: Job creates + run status/metadata", fmt.Sprintf("%.2f = %.2f + %.2f + %.2f", core/runsF, w.jobCreates/runsF, w.runStatus/runsF, w.runMeta/runsF), fmt.Sprintf("min %.0f = 6 + 10", jobsPerRun+patchesPerRun), nil)
	row("4. writes per stage transition / minimum", fmt.Sprintf("%.2fx", core/minimum), "<= 1.2x", pb(core <= 1.2*minimum))
	row("4. other manager writes per run: Events, Approval status, Environment locks and records, release ledger", fmt.Sprintf("%.2f + %.2f + %.2f + %.2f", w.events/runsF, w.approvalStatus/runsF, w.locks/runsF, w.releases/runsF), "", nil)
	row(fmt.Sprintf("4. writes for %d finished runs after a manager restart", fig.mem1.runs), fmt.Sprintf("%.0f (%s)", idleWrites, idle), "0", pb(idleWrites == 0))
	b.reportCost(fig)
	b.reportMemory(fig)
}

// reportCost prints the API cost rows: CPU and requests per run against the
// floor's, the approval's latency, and the two shards.
func (b *bench) reportCost(fig *figures) {
	pb := func(v bool) *bool { return &v }
	load, floor := fig.load, fig.floor
	msPer := func(c cost, v float64) string { return fmt.Sprintf("%.1f ms", 1000*c.perRun(v)) }
	ratio := load.perRun(load.cpu.apiserver) / floor.perRun(floor.cpu.apiserver)
	row("4. API server CPU per run: Conveyor / floor", fmt.Sprintf("%s / %s = %.2fx", msPer(load, load.cpu.apiserver), msPer(floor, floor.cpu.apiserver), ratio), "<= 1.5x", pb(ratio <= 1.5))
	row("4. CPU per run, Conveyor: etcd, manager, driver", fmt.Sprintf("%s, %s, %s", msPer(load, load.cpu.etcd), msPer(load, load.cpu.manager), msPer(load, load.cpu.driver)), "", nil)
	var rc []string
	for _, k := range slices.Sorted(maps.Keys(load.managerCounts)) {
		if per := load.perRun(load.managerCounts[k]); per >= 0.05 && !strings.HasPrefix(k, handlerKey) {
			rc = append(rc, fmt.Sprintf("%s %.1f", k, per))
		}
	}
	row("4. manager reconciles per run, by controller", strings.Join(rc, ", "), "", nil)
	row("4. CPU per run, floor: etcd, raw client + driver", fmt.Sprintf("%s, %s", msPer(floor, floor.cpu.etcd), msPer(floor, floor.cpu.driver)), "", nil)
	w, fw := load.perRun(load.reqs.total(isWrite)), floor.perRun(floor.reqs.total(isWrite))
	row("4. API writes per run, Events included: Conveyor / floor", fmt.Sprintf("%.1f / %.1f = %.2fx", w, fw, w/fw), "<= 1.5x", pb(w <= 1.5*fw))
	reads := func(k string) bool {
		return !isWrite(k) && !strings.HasPrefix(k, "WATCH") && !strings.HasPrefix(k, etcdKey) && !isHook(k)
	}
	row("4. a finished run as the API server returns it, JSON bytes (of which managedFields): Conveyor / floor",
		fmt.Sprintf("%d (%d) / %d (%d)", fig.runSize.total, fig.runSize.managedFields, fig.floorRunSize.total, fig.floorRunSize.managedFields), "", nil)
	row("4. API reads per run (GET, LIST): Conveyor / floor", fmt.Sprintf("%.1f / %.1f", load.perRun(load.reqs.total(reads)), floor.perRun(floor.reqs.total(reads))), "", nil)
	etcdReads := func(k string) bool {
		return strings.HasPrefix(k, etcdKey+"get ") || strings.HasPrefix(k, etcdKey+"list ")
	}
	row("4. the API server's reads from etcd per run (get, list): Conveyor / floor", fmt.Sprintf("%.1f / %.1f", load.perRun(load.reqs.total(etcdReads)), floor.perRun(floor.reqs.total(etcdReads))), "", nil)
	if len(fig.approvalLat) > 0 {
		// An Approval's wait is two of the floor's hops (the Approval to the
		// manager, its Job to the driver) and the manager's work between:
		// held to 2x the two hops' p99, + 5 ms, with the hops timed under the
		// same load (probe), and shown against phase 1's idle hops too.
		hp50, hp99 := percentiles(load.hops)
		row(fmt.Sprintf("3. floor: Job create -> watch event during the throughput, p50 / p99 (%d)", len(load.hops)), fmt.Sprintf("%s / %s", ms(hp50), ms(hp99)), "", nil)
		p50, p99 := percentiles(fig.approvalLat)
		bound := 2*(2*hp99) + 5*time.Millisecond
		row(fmt.Sprintf("3. Approval created -> stage's first Job, p50 / p99 (%d)", len(fig.approvalLat)), fmt.Sprintf("%s / %s", ms(p50), ms(p99)), "p99 <= "+ms(bound), pb(p99 <= bound))
		idle := 2*(2*fig.floorP99) + 5*time.Millisecond
		row("3. Approval p99 / two hops' p99: under the same load, idle (phase 1)", fmt.Sprintf("%.2fx, %.2fx", float64(p99)/float64(2*hp99), float64(p99)/float64(2*fig.floorP99)), "idle: p99 <= "+ms(idle), nil)
	}
	if s := fig.sharded; s.cost.runs > 0 {
		perMin := float64(s.cost.runs) / s.cost.dur.Minutes()
		row(fmt.Sprintf("3c. two shards: %d tag runs, half the lanes each", s.cost.runs), fmt.Sprintf("%.0f runs/min (%s)", perMin, s.cost.dur.Round(time.Second)), "", nil)
		row("3c. two shards: Job creates per run, refused creates per run", fmt.Sprintf("%.2f, %.2f", s.jobCreates, s.conflicts), "6, 0", pb(s.jobCreates == 6 && s.conflicts == 0))
		row("3c. two shards: API server CPU per run", msPer(s.cost, s.cost.cpu.apiserver), "", nil)
	}
	fmt.Println()
	fmt.Println("API requests per run by verb and resource (watches left out), Conveyor:")
	fmt.Println("  " + strings.Join(requestRows(load, false), ", "))
	fmt.Println("Floor:")
	fmt.Println("  " + strings.Join(requestRows(floor, false), ", "))
	if hooks := hookRows(load); len(hooks) > 0 {
		fmt.Println("The API server's calls to admission webhooks per run (mean time of a call), Conveyor:")
		fmt.Println("  " + strings.Join(hooks, ", "))
	}
	fmt.Println("The API server's requests to etcd per run by operation and resource, Conveyor:")
	fmt.Println("  " + strings.Join(requestRows(load, true), ", "))
	fmt.Println("Floor:")
	fmt.Println("  " + strings.Join(requestRows(floor, true), ", "))
	fmt.Println()
}

// reportMemory prints phase 5's rows.
func (b *bench) reportMemory(fig *figures) {
	row("5. manager heap / RSS, idle before any run", fmt.Sprintf("%s / %s", mib(fig.mem0.heap), mib(fig.mem0.rss)), "", nil)
	row(fmt.Sprintf("5. manager heap / RSS, %d finished runs (every phase's it handles; each with its Jobs and Approvals)", fig.mem1.runs), fmt.Sprintf("%s / %s", mib(fig.mem1.heap), mib(fig.mem1.rss)), "", nil)
	perRun := (fig.mem1.heap - fig.mem0.heap) / float64(fig.mem1.runs) / 1024
	memRow("5. heap KiB per retained finished run (its Jobs included)", perRun, fig.mem1.runs)
	if fig.memN.runs > 0 {
		row(fmt.Sprintf("5. manager heap / RSS, %d finished runs", fig.memN.runs), fmt.Sprintf("%s / %s", mib(fig.memN.heap), mib(fig.memN.rss)), "", nil)
		extra := float64(fig.memN.runs - fig.mem1.runs)
		per := (fig.memN.heap - fig.mem1.heap) / extra / 1024
		memRow("5. heap KiB per added finished run (runs without Jobs)", per, int(extra))
	}
	for _, m := range []memStats{fig.mem0, fig.mem1, fig.memN} {
		if m.scrapeMs > 0 {
			row(fmt.Sprintf("5. a /metrics scrape, %d runs held: time, allocated", m.runs), fmt.Sprintf("%.2f ms, %.0f KiB", m.scrapeMs, m.scrapeKiB), "", nil)
		}
	}
}

// memNoise is how many runs a heap figure needs before it is marked: two
// readings of the heap (in use, after a forced collection) differ by up to
// about a MiB between processes, which over fewer runs is more than the
// target itself (a few hundred runs read as a negative figure).
const memNoise = 1000

// memRow prints a heap-per-run row, marked against the target of 5 KiB only
// when measured over enough runs to tell.
func memRow(name string, kib float64, runs int) {
	if runs < memNoise {
		row(name, fmt.Sprintf("%.1f KiB (over %d runs: noise, not marked)", kib, runs), "<= 5 KiB", nil)
		return
	}
	ok := kib <= 5
	row(name, fmt.Sprintf("%.1f KiB", kib), "<= 5 KiB", &ok)
}

// row prints one row of the table; ok nil has no mark.
func row(name, value, target string, ok *bool) {
	mark := ""
	if ok != nil {
		mark = "pass"
		if !*ok {
			mark = "short"
		}
	}
	fmt.Printf("%-58s %-22s %-18s %s\n", name, value, target, mark)
}

// printProfiles prints where the heap goes: the top of each profile (after a GC).
func (b *bench) printProfiles() {
	for _, p := range b.profiles {
		out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=12", "-sample_index=inuse_space", b.o.managerBin, p).Output()
		fmt.Printf("\nHeap profile %s:\n", p)
		if err != nil {
			fmt.Printf("  (go tool pprof: %v)\n", err)
			continue
		}
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "File:") || strings.HasPrefix(l, "Type:") || strings.HasPrefix(l, "Time:") || l == "" {
				continue
			}
			fmt.Println("  " + l)
		}
	}
}
