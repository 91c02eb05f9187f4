package deliver

import "math/bits"

// keyTable is a shard's keys with something pending or waiting, by the hash
// of their ordering key: an open-addressing table (linear probing,
// backward-shift deletion, no tombstones) of 16-byte slots. It replaced a
// map[uint64]*keyState, whose lookups (a control word, then a slot of its
// group, for every event) were 3–4 % of the CPU of make bench. Not safe for
// concurrent use: only the shard's goroutine touches it.
//
// A shard's keys share the low bits of their hashes (SubmitBatch picks the
// shard by hash modulo the shards), so positions come from the top bits.
type keyTable struct {
	slots []keySlot // power-of-two length, at most 3/4 full
	shift uint      // 64 - log2(len(slots))
	n     int
}

type keySlot struct {
	h  uint64
	ks *keyState // nil: the slot is empty
}

func (t *keyTable) home(h uint64) uint64 { return h >> t.shift }

// get returns h's key state, or nil.
func (t *keyTable) get(h uint64) *keyState {
	if len(t.slots) == 0 {
		return nil
	}
	mask := uint64(len(t.slots) - 1)
	for p := t.home(h); ; p = (p + 1) & mask {
		s := &t.slots[p]
		if s.ks == nil {
			return nil
		}
		if s.h == h {
			return s.ks
		}
	}
}

// put adds ks under ks.hash, which must not be in the table.
func (t *keyTable) put(ks *keyState) {
	if t.n+1 > len(t.slots)/4*3 {
		t.grow()
	}
	t.place(keySlot{h: ks.hash, ks: ks})
	t.n++
}

func (t *keyTable) place(s keySlot) {
	mask := uint64(len(t.slots) - 1)
	p := t.home(s.h)
	for t.slots[p].ks != nil {
		p = (p + 1) & mask
	}
	t.slots[p] = s
}

func (t *keyTable) grow() {
	old := t.slots
	n := max(16, 2*len(old))
	t.slots = make([]keySlot, n)
	t.shift = uint(64 - bits.TrailingZeros(uint(n)))
	for _, s := range old {
		if s.ks != nil {
			t.place(s)
		}
	}
}

// del removes h, if present. A later slot of the same probe run moves back
// into the hole unless that would put it before its home.
func (t *keyTable) del(h uint64) {
	if len(t.slots) == 0 {
		return
	}
	mask := uint64(len(t.slots) - 1)
	p := t.home(h)
	for ; t.slots[p].h != h || t.slots[p].ks == nil; p = (p + 1) & mask {
		if t.slots[p].ks == nil {
			return
		}
	}
	for q := (p + 1) & mask; t.slots[q].ks != nil; q = (q + 1) & mask {
		if home := t.home(t.slots[q].h); (q-home)&mask >= (q-p)&mask {
			t.slots[p] = t.slots[q]
			p = q
		}
	}
	t.slots[p] = keySlot{}
	t.n--
}
