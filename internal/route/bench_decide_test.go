package route

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPolicyDecideParallel is BenchmarkPolicyDecideMixed from 12
// goroutines, as many as the consumer runs partitions, on GOMAXPROCS cores.
func BenchmarkPolicyDecideParallel(b *testing.B) {
	p, keys, order, now := benchMixedPolicy()
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(max(1, 12/runtime.GOMAXPROCS(0))) // about 12 goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(next.Add(1)) * 7919
		for pb.Next() {
			k := keys[order[i&(len(order)-1)]]
			t := now.Add(time.Duration(i) * time.Microsecond)
			p.Decide(Input{Device: k, User: k[:20], TimeMS: t.UnixMilli()}, t)
			i++
		}
	})
}

// benchSmallInputs returns n events over the end-to-end benchmark's keys
// (cmd/ampstream-bench): 5000 devices "device-%06d", two per user
// "user-%06d", in random order. The tracker's state for them fits the CPU
// caches, so the policy's own instructions, the hashes and the locks, are
// what this measures.
func benchSmallInputs(n int, now time.Time) []Input {
	r := rand.New(rand.NewPCG(3, 4))
	ins := make([]Input, n)
	for i := range ins {
		d := r.IntN(5000)
		ins[i] = Input{Device: fmt.Appendf(nil, "device-%06d", d), User: fmt.Appendf(nil, "user-%06d", d/2), TimeMS: now.UnixMilli()}
	}
	return ins
}

// BenchmarkPolicyDecideSmall is Decide at the end-to-end benchmark's keys,
// 5000 devices and 2500 users.
func BenchmarkPolicyDecideSmall(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	ins := benchSmallInputs(1<<16, now)
	p := NewPolicy(benchTracker(), PolicyOptions{UserEPSMargin: 0.8, BackfillAge: time.Hour})
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		// 100k events/s.
		p.Decide(ins[i&(len(ins)-1)], now.Add(time.Duration(i)*10*time.Microsecond))
		i++
	}
}
