package route

import (
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"unsafe"
)

// table is one shard's key → entry index: an open-addressing hash table
// (linear probing) of the key hashes and the indexes of their entries in the
// tracker's arena. It replaces a map[uint64]*entry, whose lookup touched a
// group's control word and then its slot, two cache misses at a million keys
// before the entry's own; here a lookup reads one 16 B slot, most often one
// cache line. Entries a shard evicts or removes go on its free list, which
// its new keys take before the arena's unused ones. Not safe for concurrent
// use: the shard's mutex guards it. An *entry from find or insert is the
// key's until it is removed.
type table struct {
	slots []slot // power-of-two length, at most 3/4 full
	a     *arena
	n     uint32 // keys in the table
	free  uint32 // first entry of the free list, 0 when it is empty (see release)
	// view, when set, publishes slots for Tracker.prefetch, which runs
	// without the lock: a stale view only prefetches a line no longer used.
	view *atomic.Pointer[[]slot]
}

type slot struct {
	h uint64 // the key's hash; Tracker picks shards from its top 6 bits, slots from its low ones
	i uint32 // the key's entry in the arena; 0 when the slot is empty
	// last is the low 32 bits of the entry's last (Tracker.get keeps them
	// equal), so evict compares keys' ages reading slots only, not entries.
	// Compared as int32 differences, it orders seconds less than 68 years
	// apart, wrapping or not.
	last uint32
}

// arena holds the entries of all the tracker's keys, in chunks of chunkSize.
// Neither the entries nor the slots hold pointers, so the collector never
// scans them: a million keys used to be a million objects and a million slot
// pointers to mark on every cycle, and every new key an allocation.
//
// One arena for all shards, not one per shard, keeps keys first seen
// together next to each other in memory, as the allocator did for the
// entries it allocated one by one: a source that sends its keys again in
// about the order it first sent them (BenchmarkPolicyDecide) reads the
// entries as a stream instead of from 64 places. A shard only takes an
// unused entry when its free list is empty, so the entries ever taken stay
// below the sum of the shards' capacities, which sizes the arena once and
// for all: chunks never move, so an *entry stays valid, and finding one
// takes no lock. Shards share only next, one atomic add per new key, and
// mu, once per chunk.
//
// Where the platform allows it (mapArena), the chunks are consecutive parts
// of one anonymous mapping, sized for the tracker's capacity and advised
// for transparent huge pages. A key's entry is a random access into the
// arena, which at a few hundred thousand keys misses the TLB on nearly every
// event with 4 KiB pages, and in a virtual machine a TLB miss costs a
// two-dimensional page walk. This mapping is the one use of unsafe the
// arena needs (the chunks are typed views of it), and it is kept for a
// measured end-to-end gain: the benchmark's ~100k keys cost 4.36 CPU s per
// million events with heap chunks against 4.11 with the mapping (−6 %;
// medians of three alternating runs of
// `go run ./cmd/ampstream-bench --skip-emulator --skip-latency --skip-cost --skip-realtime --skip-baseline --pairs 1 --events 2000000`,
// on a shared 2-core host). Pages are
// touched only as keys take entries, so the resident memory still grows
// with the keys (in steps of 2 MiB). The mapping is outside the Go heap:
// it is unmapped by a cleanup once the arena is unreachable. That is safe
// because entries are only read and written under their shard's lock, and
// the unlock uses the shard, a part of the Tracker that holds the arena.
// Elsewhere, or when the mapping fails, each chunk is a heap allocation
// made when its first entry is taken.
type arena struct {
	next   atomic.Uint32 // the next unused entry; entry 0 stands for none
	mu     sync.Mutex    // guards allocating chunks
	chunks []atomic.Pointer[[chunkSize]entry]
	mapped int // bytes of the arena's mapping; 0 when its chunks are heap allocations
}

// chunkSize entries make a chunk: 104 KiB, exactly 13 pages, so a chunk
// wastes nothing to rounding; a part-filled one at most 104 KiB, about a
// thousand keys' worth.
const chunkSize = 1024

// chunkBytes is the size of a chunk.
const chunkBytes = chunkSize * int(unsafe.Sizeof(entry{}))

func newArena(keys int) *arena {
	a := &arena{chunks: make([]atomic.Pointer[[chunkSize]entry], (keys+1+chunkSize-1)/chunkSize)}
	a.next.Store(1)
	if mem, mapping := mapArena(len(a.chunks) * chunkBytes); mem != nil {
		for i := range a.chunks {
			a.chunks[i].Store((*[chunkSize]entry)(unsafe.Pointer(&mem[i*chunkBytes])))
		}
		a.mapped = len(mapping)
		runtime.AddCleanup(a, unmapArena, mapping)
	}
	return a
}

// take returns an unused entry's index, allocating its chunk if it is the
// first of one.
func (a *arena) take() uint32 {
	i := a.next.Add(1) - 1
	c := &a.chunks[i/chunkSize]
	if c.Load() == nil {
		a.mu.Lock()
		if c.Load() == nil {
			c.Store(new([chunkSize]entry))
		}
		a.mu.Unlock()
	}
	return i
}

// at returns entry i, which take has returned.
func (a *arena) at(i uint32) *entry {
	return &a.chunks[i/chunkSize].Load()[i%chunkSize]
}

// find returns h's entry, or nil.
func (tb *table) find(h uint64) *entry {
	if s := tb.findSlot(h); s != nil {
		return tb.a.at(s.i)
	}
	return nil
}

// findSlot returns h's slot, or nil. The slot is valid until the table
// changes (insert, remove, sweep, evict).
func (tb *table) findSlot(h uint64) *slot {
	if len(tb.slots) == 0 {
		return nil
	}
	mask := uint64(len(tb.slots) - 1)
	for p := h & mask; ; p = (p + 1) & mask {
		s := &tb.slots[p]
		if s.i == 0 {
			return nil
		}
		if s.h == h {
			return s
		}
	}
}

// insert adds a zero entry for h, which must not be in the table.
func (tb *table) insert(h uint64) *entry {
	return tb.a.at(tb.insertSlot(h, 0).i)
}

// insertSlot adds a zero entry for h, which must not be in the table, with
// last in its slot, and returns the slot (valid as findSlot's).
func (tb *table) insertSlot(h uint64, last uint32) *slot {
	if int(tb.n+1) > len(tb.slots)/4*3 {
		tb.grow()
	}
	i := tb.alloc()
	s := tb.place(slot{h: h, i: i, last: last})
	tb.n++
	return s
}

// alloc returns a zero entry's index: the free list's first, else an
// unused one.
func (tb *table) alloc() uint32 {
	if i := tb.free; i != 0 {
		e := tb.a.at(i)
		tb.free = e.sum
		*e = entry{}
		return i
	}
	return tb.a.take()
}

// release puts entry i on the free list, which threads through the free
// entries' sum fields (alloc zeroes an entry before handing it out again).
func (tb *table) release(i uint32) {
	tb.a.at(i).sum = tb.free
	tb.free = i
}

// place puts s at the first free position from its home and returns it.
func (tb *table) place(s slot) *slot {
	mask := uint64(len(tb.slots) - 1)
	p := s.h & mask
	for tb.slots[p].i != 0 {
		p = (p + 1) & mask
	}
	tb.slots[p] = s
	return &tb.slots[p]
}

// grow doubles the slots and places every key again.
func (tb *table) grow() {
	old := tb.slots
	tb.slots = make([]slot, max(16, 2*len(old)))
	for _, s := range old {
		if s.i != 0 {
			tb.place(s)
		}
	}
	if tb.view != nil {
		view := tb.slots
		tb.view.Store(&view)
	}
}

// remove empties position p and frees its entry, by backward-shift
// deletion: a later slot of the same probe run moves back into the hole
// unless that would put it before its home, so lookups need no tombstones.
// Slots outside p's run do not move.
func (tb *table) remove(p uint64) {
	tb.release(tb.slots[p].i)
	mask := uint64(len(tb.slots) - 1)
	for q := (p + 1) & mask; tb.slots[q].i != 0; q = (q + 1) & mask {
		home := tb.slots[q].h & mask
		if (q-home)&mask >= (q-p)&mask {
			tb.slots[p] = tb.slots[q]
			p = q
		}
	}
	tb.slots[p] = slot{}
	tb.n--
}

// sweep calls keep for every entry and removes those it returns false for.
func (tb *table) sweep(keep func(*entry) bool) {
	if tb.n == 0 {
		return
	}
	mask := uint64(len(tb.slots) - 1)
	// Start after an empty slot: runs never wrap past it, so remove only
	// moves slots not yet visited into the position being visited.
	start := uint64(0)
	for tb.slots[start].i != 0 {
		start++
	}
	for k := uint64(1); k <= mask; {
		p := (start + k) & mask
		if i := tb.slots[p].i; i != 0 && !keep(tb.a.at(i)) {
			tb.remove(p) // p holds the next slot of its run now, or nothing
			continue
		}
		k++
	}
}

// evict drops one idle entry, chosen near a random position (see
// evictNear).
func (tb *table) evict() {
	tb.evictNear(rand.Uint64())
}

// evictSample is how many keys evictNear compares, and evictSpan how many
// slots it reads at least, if they hold fewer keys.
const (
	evictSample = 8
	evictSpan   = 64
)

// evictNear drops one idle entry: of the first evictSample keys from the
// start of the 128 B (8 slots) around h's home — fewer if the evictSpan
// slots from there hold fewer, but at least one — the one seen least
// recently (the first of those seen least recently), by the seconds in the
// slots. Neighbourhoods of random hashes are random samples of the keys, so
// this approximates LRU as well as sampling 8 random slots did, but it reads
// a few consecutive cache lines, those the insert of h reads anyway, instead
// of 8 random slots and their 8 entries: about 2 cache misses instead of 16.
func (tb *table) evictNear(h uint64) {
	if tb.n == 0 {
		return
	}
	mask := uint64(len(tb.slots) - 1)
	p := h & mask &^ 7
	victim, found := p, 0
	var oldest uint32
	for read := 1; read <= len(tb.slots); read, p = read+1, (p+1)&mask {
		if s := &tb.slots[p]; s.i != 0 {
			if found == 0 || int32(s.last-oldest) < 0 {
				victim, oldest = p, s.last
			}
			if found++; found == evictSample {
				break
			}
		}
		if read >= evictSpan && found > 0 {
			break
		}
	}
	tb.remove(victim)
}
