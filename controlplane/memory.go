package main

// How Go's collector runs in this process. kube-apiserver and etcd in one
// process allocate heavily per request (JSON decode/encode of custom
// resources, managedFields). Unless the environment sets GOGC or GOMEMLIMIT
// (then the runtime runs as told and none of this applies):
//
//   - while serving: GOGC=off with a 1 GiB soft limit, no collection until
//     the heap nears 1 GiB. Collecting as it goes takes CPU a burst of writes
//     needs, and with any GOGC percentage the scavenger hands the heap back
//     to the kernel after every cycle, for the burst to fault it in again;
//   - once idle: after 3 s in which it allocated less than 4 MiB/s, and if it
//     allocated at least 64 MiB since the last time, one collection that
//     returns the free heap to the kernel (debug.FreeOSMemory), so the heap
//     of bring-up and of the last burst does not stay resident; the next
//     burst faults its pages in again. ORRERY_CONTROLPLANE_IDLE_GC=off turns
//     it off;
//   - during bring-up: GOGC=400, so what stays of bring-up's allocations is
//     packed into fewer spans (less RSS once idle, for a little more CPU).
//
// README.md ("Memory") has the measurements.

import (
	"fmt"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

const (
	memoryLimit      = 1 << 30
	bringUpGCPercent = 400
	idlePoll         = 500 * time.Millisecond
	idleQuiet        = 3 * time.Second
	idleRate         = 4 << 20  // bytes allocated per second below which the process counts as idle
	idleMinAlloc     = 64 << 20 // bytes allocated since the last idle collection before another is worth it
	idleGCEnv        = "ORRERY_CONTROLPLANE_IDLE_GC"
)

// memoryPolicy applies the policy above and describes it in one line for the
// log. serving switches from the bring-up setting to the serving one, and
// starts the idle collector; call it once the apiserver is ready.
type memoryPolicy struct {
	describe string
	serving  func(stop <-chan struct{})
}

func setMemoryPolicy(verbosity int) memoryPolicy {
	gogc, gogcSet := os.LookupEnv("GOGC")
	limit, limitSet := os.LookupEnv("GOMEMLIMIT")
	if gogcSet || limitSet {
		if !gogcSet {
			gogc = "100 (default)"
		}
		if !limitSet {
			limit = "none"
		}
		return memoryPolicy{
			describe: fmt.Sprintf("memory: GOGC=%s GOMEMLIMIT=%s from the environment, no idle collection", gogc, limit),
			serving:  func(<-chan struct{}) {},
		}
	}
	debug.SetMemoryLimit(memoryLimit)
	debug.SetGCPercent(bringUpGCPercent)
	idle := true
	switch os.Getenv(idleGCEnv) {
	case "off", "0", "false", "no":
		idle = false
	}
	describe := fmt.Sprintf("memory: GOGC=%d during bring-up, then off; GOMEMLIMIT=1GiB; ", bringUpGCPercent)
	if idle {
		describe += fmt.Sprintf("once idle (%v under %d MiB/s, %d MiB allocated since the last) collect and return the heap to the OS (%s=off disables)",
			idleQuiet, idleRate>>20, idleMinAlloc>>20, idleGCEnv)
	} else {
		describe += fmt.Sprintf("no idle collection (%s)", idleGCEnv)
	}
	return memoryPolicy{
		describe: describe,
		serving: func(stop <-chan struct{}) {
			debug.SetGCPercent(-1)
			if idle {
				go idleCollector(stop, verbosity)
			}
		},
	}
}

// idleDetector decides, from samples of the cumulative bytes allocated, when
// the process has gone quiet after enough allocation to be worth a collection.
type idleDetector struct {
	quiet    time.Duration
	rate     float64 // bytes per second
	minAlloc uint64
	window   []allocSample // the last `quiet` of samples, oldest first
	last     uint64        // allocated bytes at the last collection
}

type allocSample struct {
	at     time.Time
	allocs uint64
}

// observe records a sample and reports whether to collect now.
func (d *idleDetector) observe(at time.Time, allocs uint64) bool {
	d.window = append(d.window, allocSample{at, allocs})
	// Keep exactly one sample at least `quiet` old: the window's start.
	for len(d.window) > 1 && at.Sub(d.window[1].at) >= d.quiet {
		d.window = d.window[1:]
	}
	first := d.window[0]
	span := at.Sub(first.at)
	if span < d.quiet || allocs-d.last < d.minAlloc {
		return false
	}
	return float64(allocs-first.allocs) < d.rate*span.Seconds()
}

// collected restarts the detector after a collection: the next one needs
// another minAlloc of allocation and another quiet window.
func (d *idleDetector) collected(at time.Time, allocs uint64) {
	d.last = allocs
	d.window = append(d.window[:0], allocSample{at, allocs})
}

func idleCollector(stop <-chan struct{}, verbosity int) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	read := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	d := idleDetector{quiet: idleQuiet, rate: idleRate, minAlloc: idleMinAlloc}
	tick := time.NewTicker(idlePoll)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tick.C:
			allocs := read()
			if !d.observe(now, allocs) {
				continue
			}
			start := time.Now()
			// A full collection, then every free page back to the kernel.
			debug.FreeOSMemory()
			if verbosity > 0 {
				fmt.Fprintf(os.Stderr, "orrery-controlplane: idle collection after %d MiB allocated took %v\n",
					(allocs-d.last)>>20, time.Since(start).Round(time.Millisecond))
			}
			d.collected(time.Now(), read())
		}
	}
}
