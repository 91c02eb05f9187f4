package route

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// randomBatchInput is an event over few keys, so keys repeat within a batch,
// users are shared by devices and the tracker's hot states change.
func randomBatchInput(r *rand.Rand, now time.Time, devices, users int) Input {
	in := Input{Device: fmt.Appendf(nil, "device-%d", r.IntN(devices)), Override: Lane(max(0, r.IntN(12)-9)), Lagging: r.IntN(20) == 0}
	if users > 0 && r.IntN(3) > 0 {
		in.User = fmt.Appendf(nil, "user-%d", r.IntN(users))
	}
	if r.IntN(4) == 0 {
		in.TimeMS = now.Add(-time.Duration(r.IntN(180)) * time.Second).UnixMilli()
	}
	return in
}

func TestDecideBatchDecidesAsSequentialDecide(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 8))
	for round := range 200 {
		o := TrackerOptions{
			Window:   time.Duration(r.IntN(34)) * time.Second,
			HotEPS:   awkwardEPS[r.IntN(len(awkwardEPS))],
			CoolEPS:  awkwardEPS[r.IntN(len(awkwardEPS))],
			CoolHold: time.Duration(r.IntN(15)) * time.Second,
			MaxKeys:  1 << 20, // no eviction, which may pick other keys in a batch
		}
		if r.IntN(2) == 0 {
			o.BatchEPS = []float64{10, 100, 1000.0 / 3}[r.IntN(3)]
		}
		po := PolicyOptions{UserEPSMargin: []float64{0, 0.8, 0.5}[r.IntN(3)], BackfillAge: time.Duration(r.IntN(3)) * time.Minute}
		seq, bat := NewTracker(o), NewTracker(o)
		bat.seed, bat.userSeed = seq.seed, seq.userSeed // the same hashes, so Decision.Hash compares
		ps, pb := NewPolicy(seq, po), NewPolicy(bat, po)
		msg := fmt.Sprintf("round %d: %+v %+v", round, o, po)

		now := time.Unix(1_800_000_000, 0)
		// Up to 40 devices, so a key may have several events in a chunk; up
		// to 2000 events a batch, so batches span chunks.
		devices, users := 1+r.IntN(40), r.IntN(20)
		var out []Decision
		for b := range 30 {
			switch x := r.IntN(10); {
			case x < 6:
				now = now.Add(time.Duration(r.IntN(1500)) * time.Millisecond)
			case x < 9:
				now = now.Add(time.Duration(r.IntN(45)) * time.Second)
			default: // a caller whose clock is behind
				now = now.Add(-time.Duration(r.IntN(40)) * time.Second)
			}
			ins := make([]Input, r.IntN(2000))
			for i := range ins {
				ins[i] = randomBatchInput(r, now, devices, users)
			}
			out = append(out[:0], make([]Decision, len(ins)+r.IntN(3))...) // longer is fine
			for i := range out {
				out[i] = Decision{Lane: Lane(9), HotDelta: 7} // overwritten
			}
			pb.DecideBatch(ins, now, out)
			for i, in := range ins {
				require.Equal(t, ps.Decide(in, now), out[i], "%s: batch %d of %d events, event %d", msg, b, len(ins), i)
			}
			wt, wh := seq.Stats(now)
			gt, gh := bat.Stats(now)
			require.Equal(t, []int{wt, wh}, []int{gt, gh}, "%s: Stats after batch %d", msg, b)
		}
	}
}

func TestDecideBatchTakesNoEventsAndPanicsOnAShortOut(t *testing.T) {
	p, _ := testPolicy(PolicyOptions{})
	p.DecideBatch(nil, sec(0), nil)
	require.Panics(t, func() { p.DecideBatch(make([]Input, 2), sec(0), make([]Decision, 1)) })
}

func TestDecideAndDecideBatchAreSafeForConcurrentUse(t *testing.T) {
	// Under -race: Decide and DecideBatch from several goroutines over the
	// same keys, at MaxKeys.
	tr := testTracker(TrackerOptions{MaxKeys: 500, BatchEPS: 10})
	p := NewPolicy(tr, PolicyOptions{UserEPSMargin: 0.8})
	done := make(chan int, 4)
	for g := range 4 {
		go func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			hot := 0
			for i := range 200 {
				now := sec(i / 20)
				ins := make([]Input, 1+r.IntN(2*batchChunk)) // either path, and several chunks
				for j := range ins {
					ins[j] = randomBatchInput(r, now, 400, 300)
				}
				if g%2 == 0 {
					out := make([]Decision, len(ins))
					p.DecideBatch(ins, now, out)
					for _, d := range out {
						hot += d.HotDelta
					}
					continue
				}
				for _, in := range ins {
					hot += p.Decide(in, now).HotDelta
				}
			}
			done <- hot
		}()
	}
	for range 4 {
		<-done
	}
	tracked, _ := tr.Stats(sec(10))
	require.LessOrEqual(t, tracked, 500+len(tr.shards))
}
