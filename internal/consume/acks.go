package consume

import (
	"sync"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/deliver"
)

// acks tracks one partition's fetched offsets until each is resolved
// (accepted by Amplitude or written to the DLQ), and yields the contiguous
// watermark: the smallest offset not yet resolved, which is the offset to
// commit (Kafka commits "the next offset to read").
//
// Offsets are added in fetch order; they may be resolved in any order.
// Offsets need not be contiguous (compaction, transaction markers, aborted
// transactions): the watermark only ever moves to an offset that was
// fetched, one past the last fetched, or the fetch position past offsets
// that hold nothing to deliver (skipTo).
type acks struct {
	mu        sync.Mutex
	ents      []ackEnt // ents[head:] are live, in offset order
	head      int
	base      uint64 // sequence number of ents[head]
	next      int64  // watermark when nothing is pending
	skip      int64  // fetch position: offsets below it not added hold nothing to deliver
	live      int    // entries added but neither resolved nor abandoned
	abandoned int    // entries that will never be resolved by this owner
	idle      chan struct{}
	space     chan struct{}
	limit     int
}

type ackEnt struct {
	off   int64
	ts    int64     // Kafka timestamp, Unix ms
	chunk *chunkMem // the memory the event shares with the rest of its chunk
	done  bool
	lost  bool
}

// chunkMem is the memory a chunk of fetched events holds together: their
// messages are one allocation, and their keys and values one per record
// batch they came from (fetch.Fetcher.Fill), or the blocks of big batches
// they are views of. None of it is freed before the last of them is
// resolved, so the chunk's budget bytes are returned then, all at once,
// and not event by event: memory pinned by one slow event stays counted.
type chunkMem struct {
	live   int         // events of the chunk not resolved yet
	bytes  int         // budget bytes the chunk holds
	blocks []*blockMem // blocks its events are views of
}

// blockMem is a big record batch's memory (fetch.Block), which the chunks
// of its events and the fetcher, while it reads the batch, hold together:
// its budget bytes are returned when the last of them lets go.
type blockMem struct {
	refs  int // chunks with events in it, plus one while the fetcher reads it
	bytes int
}

// unref lets go of one hold on b and returns the budget bytes that frees.
func (b *blockMem) unref() int {
	if b.refs--; b.refs == 0 {
		return b.bytes
	}
	return 0
}

func newAcks(start int64, limit int) *acks {
	return &acks{
		next:  start,
		idle:  make(chan struct{}, 1),
		space: make(chan struct{}, 1),
		limit: limit,
	}
}

// addChunk records a chunk of fetched messages, which hold bytes of the
// budget together (chunkMem), plus the blocks they are views of, under one
// lock, and returns the sequence number of the first: the others follow it
// consecutively.
func (a *acks) addChunk(msgs []kafka.Message, bytes int, blocks []*blockMem) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.head > 1024 && a.head > len(a.ents)/2 {
		// Compact: drop the resolved prefix so the slice does not grow forever.
		n := copy(a.ents, a.ents[a.head:])
		clear(a.ents[n:])
		a.ents = a.ents[:n]
		a.head = 0
	}
	first := a.base + uint64(len(a.ents)-a.head)
	c := &chunkMem{live: len(msgs), bytes: bytes, blocks: blocks}
	for _, b := range blocks {
		b.refs++
	}
	for i := range msgs {
		a.ents = append(a.ents, ackEnt{off: msgs[i].Offset, ts: msgs[i].Time.UnixMilli(), chunk: c})
	}
	a.live += len(msgs)
	return first
}

// dropBlock lets go of the fetcher's hold on b (it has read past its batch)
// and returns the budget bytes that frees.
func (a *acks) dropBlock(b *blockMem) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return b.unref()
}

// resolve marks seq as accepted or dead-lettered. It returns the budget
// bytes this frees (its chunk's, when it was the chunk's last event), and
// false if it was already resolved or released.
func (a *acks) resolve(seq uint64) (int, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	size, ok := a.resolveLocked(seq)
	if ok {
		a.advance()
		a.signal()
	}
	return size, ok
}

// resolveAll is resolve for every item's Seq under one lock. It returns how
// many were resolved by this call and the budget bytes this frees.
func (a *acks) resolveAll(items []*deliver.Item) (n, bytes int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, it := range items {
		if size, ok := a.resolveLocked(it.Seq); ok {
			n++
			bytes += size
		}
	}
	if n > 0 {
		a.advance()
		a.signal()
	}
	return n, bytes
}

func (a *acks) resolveLocked(seq uint64) (int, bool) {
	i := a.head + int(seq-a.base)
	if seq < a.base || i >= len(a.ents) || a.ents[i].done {
		return 0, false // resolved twice, or released: the first one counted
	}
	size := a.ents[i].unpin()
	a.ents[i].done = true
	if !a.ents[i].lost {
		a.live--
	} else {
		a.abandoned--
	}
	return size, true
}

// unpin counts e's event out of its chunk and returns the budget bytes
// that frees: the chunk's when no other event holds it, and those of the
// blocks that nothing else holds then.
func (e *ackEnt) unpin() int {
	c := e.chunk
	if c.live--; c.live > 0 {
		return 0
	}
	n := c.bytes
	for _, b := range c.blocks {
		n += b.unref()
	}
	return n
}

// releaseAll gives up every unresolved event (the partition was released):
// it returns how many there were and the budget bytes their chunks held.
// Late answers for them are ignored. The watermark no longer matters.
func (a *acks) releaseAll() (events, bytes int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := a.head; i < len(a.ents); i++ {
		if !a.ents[i].done {
			a.ents[i].done = true
			events++
			bytes += a.ents[i].unpin()
		}
	}
	return events, bytes
}

// abandon marks seq as never to be resolved here (it was never handed to
// delivery): the watermark cannot pass it, but draining does not wait for it.
func (a *acks) abandon(seq uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	i := a.head + int(seq-a.base)
	if seq < a.base || i >= len(a.ents) || a.ents[i].done || a.ents[i].lost {
		return
	}
	a.ents[i].lost = true
	a.live--
	a.abandoned++
	a.signal()
}

func (a *acks) advance() {
	for a.head < len(a.ents) && a.ents[a.head].done {
		a.next = a.ents[a.head].off + 1
		a.ents[a.head] = ackEnt{}
		a.head++
		a.base++
	}
	if a.head == len(a.ents) && a.skip > a.next {
		a.next = a.skip
	}
}

// skipTo records the fetch position: every offset below it was added or
// holds nothing to deliver (a transaction marker, an aborted transaction's
// record, a compacted record). Once the added ones are resolved, the
// watermark moves to it, so a partition whose log ends in a transaction
// marker commits its end offset instead of showing a lag of one forever.
// The position is taken as given, not as a maximum: a position that moves
// back (the log was truncated under us) must not let the watermark jump
// over offsets the log holds again.
func (a *acks) skipTo(pos int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.skip = pos
	a.advance()
}

func (a *acks) signal() {
	if a.live == 0 {
		select {
		case a.idle <- struct{}{}:
		default:
		}
	}
	if a.live < a.limit {
		select {
		case a.space <- struct{}{}:
		default:
		}
	}
}

// watermark returns the offset to commit and the Kafka timestamp (Unix ms)
// of the oldest unresolved event, 0 when none.
func (a *acks) watermark() (commit int64, oldestTS int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.head < len(a.ents) {
		return a.ents[a.head].off, a.ents[a.head].ts
	}
	return a.next, 0
}

// pending returns how many events are awaiting resolution.
func (a *acks) pending() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live
}

// room reports whether n more events fit under the in-flight cap; n events
// always fit when nothing is pending, or a cap below n would stop the
// partition forever.
func (a *acks) room(n int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.live == 0 || a.live+n <= a.limit
}
