package deliver

import (
	"math/rand/v2"
	"testing"
)

// The table holds what a map would, through growth and deletions in any
// order, for a shard's hashes (low bits all equal) and for hashes that
// share their top bits (long probe runs that deletions must keep whole).
func TestKeyTableMatchesAMap(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps int
		hash  func(r *rand.Rand) uint64
	}{
		{"a shard's hashes", 200_000, func(r *rand.Rand) uint64 { return r.Uint64()&^3 | 2 }},
		// 4096 hashes, one probe run: quadratic, so fewer steps.
		{"shared top bits", 20_000, func(r *rand.Rand) uint64 { return 0xabc0_0000_0000_0000 | r.Uint64()>>52<<2 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(7, 8))
			var tb keyTable
			ref := map[uint64]*keyState{}
			var live []uint64
			steps := tc.steps
			for step := range steps {
				switch op := r.IntN(10); {
				case op < 5 || len(live) == 0: // add
					h := tc.hash(r)
					if ref[h] != nil {
						continue
					}
					ks := &keyState{hash: h}
					tb.put(ks)
					ref[h] = ks
					live = append(live, h)
				case op < 8: // delete a present key
					i := r.IntN(len(live))
					h := live[i]
					tb.del(h)
					delete(ref, h)
					live[i] = live[len(live)-1]
					live = live[:len(live)-1]
				default: // delete an absent key
					if h := tc.hash(r); ref[h] == nil {
						tb.del(h)
					}
				}
				if step%1000 == 0 || step == steps-1 {
					if tb.n != len(ref) {
						t.Fatalf("step %d: %d keys, want %d", step, tb.n, len(ref))
					}
					for h, ks := range ref {
						if got := tb.get(h); got != ks {
							t.Fatalf("step %d: get(%x) = %p, want %p", step, h, got, ks)
						}
					}
					for range 100 {
						if h := tc.hash(r); ref[h] == nil && tb.get(h) != nil {
							t.Fatalf("step %d: get(%x) found an absent key", step, h)
						}
					}
				}
			}
		})
	}
}
