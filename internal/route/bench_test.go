package route

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

const benchKeys = 1_000_000

// benchKeyList returns n distinct 36-byte device ids (UUID-sized, the common
// shape of an Amplitude device_id).
func benchKeyList(n int) [][]byte {
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "%08x-0000-4000-8000-%012x", i*2654435761, i)
	}
	return keys
}

func benchTracker() *Tracker {
	return NewTracker(TrackerOptions{Window: 10 * time.Second, HotEPS: 30, CoolEPS: 20, CoolHold: 10 * time.Second, MaxKeys: 2 * benchKeys})
}

// BenchmarkTrackerObserve counts events over 1M distinct keys, so most calls
// miss the CPU caches the way a real device population does.
func BenchmarkTrackerObserve(b *testing.B) {
	keys := benchKeyList(benchKeys)
	tr := benchTracker()
	now := time.Unix(1_800_000_000, 0)
	for _, k := range keys {
		tr.Observe(k, now, 30)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		tr.Observe(keys[i%benchKeys], now.Add(time.Duration(i)*time.Microsecond), 30)
		i++
	}
}

// BenchmarkTrackerObserveParallel shows the sharded locks: throughput grows
// with GOMAXPROCS instead of serialising on one mutex.
func BenchmarkTrackerObserveParallel(b *testing.B) {
	keys := benchKeyList(benchKeys)
	tr := benchTracker()
	now := time.Unix(1_800_000_000, 0)
	for _, k := range keys {
		tr.Observe(k, now, 30)
	}
	var next atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			tr.Observe(keys[i%benchKeys], now, 30)
			i++
		}
	})
}

// BenchmarkTrackerMemory reports the heap held per tracked key (B/key), over
// 1M 36-byte keys. The budget is 200 B/key.
func BenchmarkTrackerMemory(b *testing.B) {
	keys := benchKeyList(benchKeys)
	now := time.Unix(1_800_000_000, 0)
	var perKey float64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		tr := benchTracker()
		for _, k := range keys {
			tr.Observe(k, now, 30)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		if n, _ := tr.Stats(now); n != benchKeys {
			b.Fatalf("tracked %d keys, want %d", n, benchKeys)
		}
		perKey = float64(after.HeapAlloc-before.HeapAlloc) / benchKeys
		runtime.KeepAlive(tr)
	}
	b.ReportMetric(perKey, "B/key")
}

func BenchmarkPolicyDecide(b *testing.B) {
	keys := benchKeyList(100_000)
	tr := benchTracker()
	p := NewPolicy(tr, PolicyOptions{UserEPSMargin: 0.8, BackfillAge: time.Hour})
	now := time.Unix(1_800_000_000, 0)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := keys[i%len(keys)]
		p.Decide(Input{Device: k, User: k[:20], TimeMS: now.UnixMilli()}, now)
		i++
	}
}

// benchMixedOrder returns n key indices below keys in the order events for
// them arrive: a tenth of the events from 100 hot keys, the rest spread
// evenly over all keys, so most lookups miss the CPU caches without
// following the order in which the keys were first seen.
func benchMixedOrder(n, keys int) []int32 {
	r := rand.New(rand.NewPCG(1, 2))
	order := make([]int32, n)
	for i := range order {
		if r.IntN(10) == 0 {
			order[i] = int32(r.IntN(100))
		} else {
			order[i] = int32(r.IntN(keys))
		}
	}
	return order
}

// BenchmarkPolicyDecideMixed is BenchmarkPolicyDecide over 1M devices, in
// the arrival order of benchMixedOrder, at 1M events/s.
func BenchmarkPolicyDecideMixed(b *testing.B) {
	keys := benchKeyList(benchKeys)
	order := benchMixedOrder(1<<20, benchKeys)
	tr := benchTracker()
	p := NewPolicy(tr, PolicyOptions{UserEPSMargin: 0.8, BackfillAge: time.Hour})
	now := time.Unix(1_800_000_000, 0)
	for _, k := range keys {
		p.Decide(Input{Device: k, User: k[:20]}, now)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := keys[order[i&(len(order)-1)]]
		t := now.Add(time.Duration(i) * time.Microsecond)
		p.Decide(Input{Device: k, User: k[:20], TimeMS: t.UnixMilli()}, t)
		i++
	}
}
