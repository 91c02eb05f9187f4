package route

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
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

// BenchmarkTrackerMemory reports the memory held per tracked key (B/key),
// over 1M 36-byte keys: the heap, and the entries taken from the arena when
// it is a mapping outside the heap (see arena). The budget is 200 B/key.
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
		held := float64(after.HeapAlloc - before.HeapAlloc)
		if a := tr.shards[0].tab.a; a.mapped > 0 {
			held += float64(a.next.Load()-1) * float64(unsafe.Sizeof(entry{}))
		}
		perKey = held / benchKeys
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

// benchMixedPolicy returns a policy that has seen each of benchKeys
// devices once (users are the first 20 bytes of a device key), the keys,
// their arrival order (benchMixedOrder) and the time they were seen at.
func benchMixedPolicy() (p *Policy, keys [][]byte, order []int32, now time.Time) {
	keys = benchKeyList(benchKeys)
	order = benchMixedOrder(1<<20, benchKeys)
	p = NewPolicy(benchTracker(), PolicyOptions{UserEPSMargin: 0.8, BackfillAge: time.Hour})
	now = time.Unix(1_800_000_000, 0)
	for _, k := range keys {
		p.Decide(Input{Device: k, User: k[:20]}, now)
	}
	return p, keys, order, now
}

// BenchmarkPolicyDecideMixed is BenchmarkPolicyDecide over 1M devices, in
// the arrival order of benchMixedOrder, at 1M events/s.
func BenchmarkPolicyDecideMixed(b *testing.B) {
	p, keys, order, now := benchMixedPolicy()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := keys[order[i&(len(order)-1)]]
		t := now.Add(time.Duration(i) * time.Microsecond)
		p.Decide(Input{Device: k, User: k[:20], TimeMS: t.UnixMilli()}, t)
		i++
	}
}

// BenchmarkPolicyDecideMixedPrefetched is BenchmarkPolicyDecideMixed as
// the deliverer decides a chunk of events: each event's slots prefetched
// four events ahead (Policy.Prefetch).
func BenchmarkPolicyDecideMixedPrefetched(b *testing.B) {
	p, keys, order, now := benchMixedPolicy()
	const ahead = 4
	var ring [ahead]Input
	input := func(i int) {
		k := keys[order[i&(len(order)-1)]]
		t := now.Add(time.Duration(i) * time.Microsecond)
		ring[i%ahead] = Input{Device: k, User: k[:20], TimeMS: t.UnixMilli()}
		p.Prefetch(&ring[i%ahead])
	}
	for i := range ahead {
		input(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		in := ring[i%ahead]
		input(i + ahead)
		p.Decide(in, now.Add(time.Duration(i)*time.Microsecond))
		i++
	}
}

// BenchmarkPolicyDecideNewKeys is the tracker at MaxKeys (1M keys) when every
// event brings a new device and user, as a flood of new devices does: each
// key evicts an idle one. Its keys are kept in a batch of 1024 events, as
// the deliverer keeps records, so the benchmark allocates as a pipeline does
// and the collector runs; gc-ns/op is the collector's CPU time per event
// (runtime/metrics), on any core, ns/op the time of the loop, GC assists
// included, and gc-ms/cycle the collector's CPU time for one cycle at the
// end, most of it marking what the tracker holds.
func BenchmarkPolicyDecideNewKeys(b *testing.B) {
	const live = 1_000_000
	tr := NewTracker(TrackerOptions{Window: 10 * time.Second, HotEPS: 30, CoolEPS: 20, CoolHold: 10 * time.Second, MaxKeys: live})
	p := NewPolicy(tr, PolicyOptions{UserEPSMargin: 0.8, BackfillAge: time.Hour})
	now := time.Unix(1_800_000_000, 0)
	key := func(prefix byte, i int) []byte { // 32 B, a fresh allocation as a record's are
		k := append(make([]byte, 0, 32), prefix, '-')
		k = strconv.AppendUint(k, uint64(i)*2654435761, 16)
		return strconv.AppendUint(append(k, '-'), uint64(i), 16)
	}
	for i := range live / 2 {
		p.Decide(Input{Device: key('d', i), User: key('u', i)}, now)
	}
	var batch [1024]Input
	gcCPU := []metrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}}
	runtime.GC()
	metrics.Read(gcCPU)
	before := gcCPU[0].Value.Float64()
	b.ReportAllocs()
	i := live / 2
	for b.Loop() {
		// A second per 250k events, as at 250k new devices/s.
		t := now.Add(time.Duration(i-live/2) * 4 * time.Microsecond)
		in := Input{Device: key('d', i), User: key('u', i), TimeMS: t.UnixMilli()}
		batch[i%len(batch)] = in
		p.Decide(in, t)
		i++
	}
	metrics.Read(gcCPU)
	b.ReportMetric((gcCPU[0].Value.Float64()-before)*1e9/float64(b.N), "gc-ns/op")
	// One cycle at 1M live keys, which a short run may not reach.
	b.StopTimer()
	before = gcCPU[0].Value.Float64()
	runtime.GC()
	metrics.Read(gcCPU)
	b.ReportMetric((gcCPU[0].Value.Float64()-before)*1e3, "gc-ms/cycle")
	runtime.KeepAlive(batch)
	runtime.KeepAlive(tr)
}
