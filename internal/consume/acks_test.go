package consume

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/deliver"
)

// add records one fetched offset, as a chunk of one.
func (a *acks) add(off, tsMS int64, size int) uint64 {
	return a.addChunk([]kafka.Message{{Offset: off, Time: time.UnixMilli(tsMS)}}, size, nil)
}

// msgs returns n fetched messages from offset from on.
func msgs(from int64, n int) []kafka.Message {
	m := make([]kafka.Message, n)
	for i := range m {
		m[i].Offset = from + int64(i)
	}
	return m
}

// acquire takes one event of size n.
func (b *budget) acquire(ctx context.Context, n int) (bool, error) { return b.acquireN(ctx, 1, n) }

func TestWatermarkIsTheFirstUnresolvedOffset(t *testing.T) {
	t.Parallel()
	a := newAcks(100, 1000)
	var seqs []uint64
	for off := int64(100); off < 110; off++ {
		seqs = append(seqs, a.add(off, off*1000, 10))
	}
	if wm, ts := a.watermark(); wm != 100 || ts != 100_000 {
		t.Fatalf("nothing resolved: watermark %d ts %d, want 100 and the oldest timestamp", wm, ts)
	}
	// Resolving later offsets first must not move the watermark.
	for _, i := range []int{9, 5, 1, 2} {
		a.resolve(seqs[i])
	}
	if wm, _ := a.watermark(); wm != 100 {
		t.Fatalf("watermark %d after resolving later offsets, want 100", wm)
	}
	a.resolve(seqs[0])
	if wm, ts := a.watermark(); wm != 103 || ts != 103_000 {
		t.Fatalf("watermark %d ts %d, want 103 (0,1,2 resolved)", wm, ts)
	}
	for _, s := range seqs {
		a.resolve(s)
	}
	if wm, ts := a.watermark(); wm != 110 || ts != 0 {
		t.Fatalf("all resolved: watermark %d ts %d, want 110 and 0", wm, ts)
	}
	if a.pending() != 0 {
		t.Fatalf("pending %d, want 0", a.pending())
	}
}

func TestWatermarkSkipsOffsetGaps(t *testing.T) {
	t.Parallel()
	// Compaction and transaction markers leave holes in the offsets.
	a := newAcks(0, 10)
	s1 := a.add(3, 1, 1)
	s2 := a.add(7, 2, 1)
	a.resolve(s1)
	if wm, _ := a.watermark(); wm != 7 {
		t.Fatalf("watermark %d, want 7 (the next fetched offset)", wm)
	}
	a.resolve(s2)
	if wm, _ := a.watermark(); wm != 8 {
		t.Fatalf("watermark %d, want 8", wm)
	}
}

func TestWatermarkReachesTheFetchPositionPastOffsetsWithNothingToDeliver(t *testing.T) {
	t.Parallel()
	// Records 0–2, then a transaction marker at 3: the fetch position is 4.
	a := newAcks(0, 10)
	var seqs []uint64
	for off := int64(0); off < 3; off++ {
		seqs = append(seqs, a.add(off, 1, 1))
	}
	a.skipTo(4)
	if wm, _ := a.watermark(); wm != 0 {
		t.Fatalf("watermark %d with everything pending, want 0", wm)
	}
	a.resolve(seqs[2])
	a.resolve(seqs[1])
	if wm, _ := a.watermark(); wm != 0 {
		t.Fatalf("watermark %d with offset 0 pending, want 0", wm)
	}
	a.resolve(seqs[0])
	if wm, _ := a.watermark(); wm != 4 {
		t.Fatalf("watermark %d, want 4: past the marker once the records before it are resolved", wm)
	}
	// Idle, the position moves on over an aborted transaction (4–9).
	a.skipTo(10)
	if wm, _ := a.watermark(); wm != 10 {
		t.Fatalf("watermark %d, want 10", wm)
	}
	// A position that moves back (a truncated log) must not let the
	// watermark jump over the offsets the log holds again.
	a.skipTo(8)
	s := a.add(8, 1, 1)
	a.skipTo(9)
	if wm, _ := a.watermark(); wm != 8 {
		t.Fatalf("watermark %d with offset 8 pending, want 8", wm)
	}
	a.resolve(s)
	if wm, _ := a.watermark(); wm != 9 {
		t.Fatalf("watermark %d, want 9", wm)
	}
}

func TestAbandonedOffsetsBlockTheWatermarkButNotTheDrain(t *testing.T) {
	t.Parallel()
	a := newAcks(0, 10)
	s0 := a.add(0, 1, 1)
	s1 := a.add(1, 1, 1)
	a.abandon(s0)
	a.resolve(s1)
	if wm, _ := a.watermark(); wm != 0 {
		t.Fatalf("watermark %d passed an abandoned offset", wm)
	}
	if a.pending() != 0 {
		t.Fatalf("pending %d, want 0: drain must not wait for abandoned offsets", a.pending())
	}
}

func TestResolvingTwiceOrAfterReleaseCountsOnce(t *testing.T) {
	t.Parallel()
	a := newAcks(0, 10)
	s0 := a.add(0, 1, 7)
	s1 := a.add(1, 1, 9)
	if size, ok := a.resolve(s0); !ok || size != 7 {
		t.Fatalf("first resolve = %d,%v; want 7,true", size, ok)
	}
	if _, ok := a.resolve(s0); ok {
		t.Fatal("second resolve of the same offset counted")
	}
	events, bytes := a.releaseAll()
	if events != 1 || bytes != 9 {
		t.Fatalf("releaseAll = %d events %d bytes, want 1 and 9", events, bytes)
	}
	if _, ok := a.resolve(s1); ok {
		t.Fatal("a late answer after release counted")
	}
}

// A long random run: the watermark is always the smallest unresolved offset,
// never more, whatever the resolution order; memory is compacted.
func TestWatermarkPropertyUnderRandomResolution(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	a := newAcks(0, 1<<30)
	resolved := map[int64]bool{}
	var open []struct {
		seq uint64
		off int64
	}
	next := int64(0)
	for step := 0; step < 50_000; step++ {
		if len(open) == 0 || rng.IntN(3) > 0 {
			next += int64(1 + rng.IntN(2)) // occasional gaps
			open = append(open, struct {
				seq uint64
				off int64
			}{a.add(next, 0, 1), next})
		} else {
			i := rng.IntN(len(open))
			a.resolve(open[i].seq)
			resolved[open[i].off] = true
			open[i] = open[len(open)-1] // order of open does not matter
			open = open[:len(open)-1]
		}
		if step%1000 == 0 {
			wm, _ := a.watermark()
			smallest := next + 1
			for _, o := range open {
				smallest = min(smallest, o.off)
			}
			if len(open) > 0 && wm != smallest {
				t.Fatalf("step %d: watermark %d, smallest unresolved %d", step, wm, smallest)
			}
			if len(open) == 0 && wm != next+1 {
				t.Fatalf("step %d: all resolved, watermark %d want %d", step, wm, next+1)
			}
		}
	}
}

func TestResolvedPrefixIsCompacted(t *testing.T) {
	t.Parallel()
	a := newAcks(0, 1<<30)
	for off := int64(0); off < 100_000; off++ {
		a.resolve(a.add(off, 0, 1))
	}
	if len(a.ents) > 4096 {
		t.Fatalf("ack slice holds %d entries after everything was resolved in order", len(a.ents))
	}
}

func TestBudgetBlocksAtTheCapAndWakesOnRelease(t *testing.T) {
	t.Parallel()
	b := newBudget(2, 100)
	ctx := context.Background()
	for i := 0; i < 2; i++ {
		if _, err := b.acquire(ctx, 10); err != nil {
			t.Fatal(err)
		}
	}
	got := make(chan bool, 1)
	go func() {
		waited, err := b.acquire(ctx, 10)
		got <- waited && err == nil
	}()
	select {
	case <-got:
		t.Fatal("acquire went through above the event cap")
	case <-time.After(50 * time.Millisecond): // proving the absence of progress needs a bound
	}
	b.release(10)
	if ok := <-got; !ok {
		t.Fatal("acquire did not report waiting, or failed")
	}
	if e, by := b.usage(); e != 2 || by != 20 {
		t.Fatalf("usage %d events %d bytes, want 2 and 20", e, by)
	}
}

func TestBudgetLetsOneOversizedEventThroughAlone(t *testing.T) {
	t.Parallel()
	b := newBudget(10, 100)
	if _, err := b.acquire(context.Background(), 1000); err != nil {
		t.Fatalf("a lone event larger than the byte cap must pass, or it could never be consumed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := b.acquire(ctx, 1); err == nil {
		t.Fatal("a second event went through while the byte cap is exceeded")
	}
	b.release(1000)
	if _, err := b.acquire(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
}

func TestAChunkGetsConsecutiveSequenceNumbersAndItsOwnTimes(t *testing.T) {
	t.Parallel()
	a := newAcks(10, 100)
	first := a.add(10, 1000, 5)
	// Offsets 11 and 14-15: compaction or transaction markers left gaps.
	chunk := []kafka.Message{{Offset: 11, Time: time.UnixMilli(2000)}, {Offset: 14, Time: time.UnixMilli(3000)}, {Offset: 15, Time: time.UnixMilli(4000)}}
	seq := a.addChunk(chunk, 24, nil)
	if seq != first+1 {
		t.Fatalf("chunk starts at seq %d, want %d", seq, first+1)
	}
	if a.pending() != 4 {
		t.Fatalf("pending %d, want 4", a.pending())
	}
	if size, ok := a.resolve(seq + 1); !ok || size != 0 {
		t.Fatalf("resolve offset 14: size %d ok %v, want 0 true (its chunk is still held)", size, ok)
	}
	a.resolve(first)
	if wm, oldest := a.watermark(); wm != 11 || oldest != 2000 {
		t.Fatalf("watermark %d oldest %d, want 11 2000", wm, oldest)
	}
	a.resolve(seq)
	if wm, oldest := a.watermark(); wm != 15 || oldest != 4000 {
		t.Fatalf("watermark %d oldest %d, want 15 4000 (offset 14 was resolved first)", wm, oldest)
	}
	if size, ok := a.resolve(seq + 2); !ok || size != 24 {
		t.Fatalf("resolve the chunk's last event: size %d ok %v, want 24 true", size, ok)
	}
	if wm, oldest := a.watermark(); wm != 16 || oldest != 0 {
		t.Fatalf("watermark %d oldest %d, want 16 0", wm, oldest)
	}
}

// The events of a chunk share its memory (one allocation for their
// messages, one per record batch for their keys and values), so the budget
// gets the chunk's bytes back only with its last event, whatever the order
// of resolution, and exactly once, also when the partition is released
// with some of them unresolved.
func TestAChunkReturnsItsBytesWithItsLastEvent(t *testing.T) {
	t.Parallel()
	t.Run("resolved", func(t *testing.T) {
		a := newAcks(0, 100)
		s := a.addChunk(msgs(0, 4), 1000, nil)
		items := []*deliver.Item{{Seq: s + 3}, {Seq: s}}
		if n, bytes := a.resolveAll(items); n != 2 || bytes != 0 {
			t.Fatalf("resolveAll of 2 of 4: %d events %d bytes, want 2 and 0", n, bytes)
		}
		if n, bytes := a.resolveAll(items); n != 0 || bytes != 0 {
			t.Fatalf("resolved again: %d events %d bytes, want none", n, bytes)
		}
		if size, _ := a.resolve(s + 1); size != 0 {
			t.Fatalf("3 of 4 resolved: %d bytes freed", size)
		}
		if size, _ := a.resolve(s + 2); size != 1000 {
			t.Fatalf("last of the chunk resolved: %d bytes freed, want 1000", size)
		}
	})
	t.Run("released", func(t *testing.T) {
		a := newAcks(0, 100)
		s0 := a.addChunk(msgs(0, 3), 300, nil)
		a.addChunk(msgs(3, 2), 200, nil)
		s2 := a.addChunk(msgs(5, 2), 50, nil)
		a.resolve(s0 + 1)
		a.resolve(s2)
		a.resolve(s2 + 1) // the third chunk is done: its 50 bytes were returned
		if events, bytes := a.releaseAll(); events != 4 || bytes != 500 {
			t.Fatalf("releaseAll = %d events %d bytes, want 4 and 500", events, bytes)
		}
		if size, ok := a.resolve(s0); ok || size != 0 {
			t.Fatalf("a late answer after release freed %d bytes", size)
		}
	})
}

// A big record batch's block is held by the chunks with events in it and by
// the fetcher while it reads the batch: its bytes come back once, when the
// last of them lets go, in whatever order, also through releaseAll.
func TestABlockReturnsItsBytesWhenItsChunksAndTheFetcherLetGo(t *testing.T) {
	t.Parallel()
	t.Run("chunks last", func(t *testing.T) {
		a := newAcks(0, 100)
		blk := &blockMem{refs: 1, bytes: 1 << 20} // the fetcher's hold
		s0 := a.addChunk(msgs(0, 2), 100, []*blockMem{blk})
		s1 := a.addChunk(msgs(2, 2), 100, []*blockMem{blk})
		if n := a.dropBlock(blk); n != 0 {
			t.Fatalf("the fetcher let go with two chunks in it: %d bytes freed", n)
		}
		a.resolve(s1)
		if n, _ := a.resolve(s1 + 1); n != 100 {
			t.Fatalf("second chunk done, first not: %d bytes freed, want its own 100", n)
		}
		a.resolve(s0 + 1)
		if n, _ := a.resolve(s0); n != 100+1<<20 {
			t.Fatalf("last chunk of the block done: %d bytes freed, want 100 + the block's", n)
		}
	})
	t.Run("fetcher last", func(t *testing.T) {
		a := newAcks(0, 100)
		blk := &blockMem{refs: 1, bytes: 5000}
		s := a.addChunk(msgs(0, 1), 10, []*blockMem{blk})
		if n, _ := a.resolve(s); n != 10 {
			t.Fatalf("the chunk done while the fetcher reads on: %d bytes freed, want 10", n)
		}
		if n := a.dropBlock(blk); n != 5000 {
			t.Fatalf("the fetcher let go last: %d bytes freed, want 5000", n)
		}
	})
	t.Run("two blocks, released", func(t *testing.T) {
		a := newAcks(0, 100)
		b1 := &blockMem{refs: 1, bytes: 1000}
		b2 := &blockMem{refs: 1, bytes: 2000}
		a.addChunk(msgs(0, 2), 10, []*blockMem{b1})
		a.addChunk(msgs(2, 2), 20, []*blockMem{b1, b2}) // spans both batches
		if n := a.dropBlock(b1); n != 0 {
			t.Fatalf("b1 let go by the fetcher: %d bytes freed", n)
		}
		if events, bytes := a.releaseAll(); events != 4 || bytes != 10+20+1000 {
			t.Fatalf("releaseAll = %d events %d bytes, want 4 and 1030 (b2 is still the fetcher's)", events, bytes)
		}
		if n := a.dropBlock(b2); n != 2000 {
			t.Fatalf("b2 let go after the release: %d bytes freed, want 2000", n)
		}
	})
}
