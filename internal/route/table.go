package route

import "math/rand/v2"

// table is one shard's key → entry index: an open-addressing hash table
// (linear probing) of the key hashes and their entries. It replaces a
// map[uint64]*entry, whose lookup touched a group's control word and then
// its slot, two cache misses at a million keys before the entry's own; here
// a lookup reads one 16 B slot, most often one cache line. Entries are
// allocated one by one, as before: the collector frees evicted ones, and keys
// first seen together sit together in memory. Not safe for concurrent use:
// the shard's mutex guards it.
type table struct {
	slots []slot // power-of-two length, at most 3/4 full
	n     uint32
}

type slot struct {
	h uint64 // the key's hash; Tracker picks shards from its top 6 bits, slots from its low ones
	e *entry // nil when the slot is empty
}

// find returns h's entry, or nil.
func (tb *table) find(h uint64) *entry {
	if len(tb.slots) == 0 {
		return nil
	}
	mask := uint64(len(tb.slots) - 1)
	for p := h & mask; ; p = (p + 1) & mask {
		s := &tb.slots[p]
		if s.e == nil || s.h == h {
			return s.e
		}
	}
}

// insert adds a zero entry for h, which must not be in the table.
func (tb *table) insert(h uint64) *entry {
	if int(tb.n+1) > len(tb.slots)/4*3 {
		tb.grow()
	}
	e := &entry{}
	tb.place(slot{h, e})
	tb.n++
	return e
}

// place puts s at the first free position from its home.
func (tb *table) place(s slot) {
	mask := uint64(len(tb.slots) - 1)
	p := s.h & mask
	for tb.slots[p].e != nil {
		p = (p + 1) & mask
	}
	tb.slots[p] = s
}

// grow doubles the slots and places every key again.
func (tb *table) grow() {
	old := tb.slots
	tb.slots = make([]slot, max(16, 2*len(old)))
	for _, s := range old {
		if s.e != nil {
			tb.place(s)
		}
	}
}

// remove empties position p by backward-shift deletion: a later slot of the
// same probe run moves back into the hole unless that would put it before its
// home, so lookups need no tombstones. Slots outside p's run do not move.
func (tb *table) remove(p uint64) {
	mask := uint64(len(tb.slots) - 1)
	for q := (p + 1) & mask; tb.slots[q].e != nil; q = (q + 1) & mask {
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
	for tb.slots[start].e != nil {
		start++
	}
	for k := uint64(1); k <= mask; {
		p := (start + k) & mask
		if e := tb.slots[p].e; e != nil && !keep(e) {
			tb.remove(p) // p holds the next slot of its run now, or nothing
			continue
		}
		k++
	}
}

// evict drops one idle entry, chosen among a few sampled at random: the one
// seen least recently.
func (tb *table) evict() {
	if tb.n == 0 {
		return
	}
	var victim uint64
	oldest := int64(1<<63 - 1)
	for sampled := 0; sampled < 8; {
		p := rand.Uint64N(uint64(len(tb.slots)))
		if e := tb.slots[p].e; e != nil {
			if e.last < oldest {
				victim, oldest = p, e.last
			}
			sampled++
		}
	}
	tb.remove(victim)
}
