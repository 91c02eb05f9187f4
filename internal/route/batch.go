package route

import (
	"hash/maphash"
	"time"
)

// batchChunk is how many events DecideBatch groups by shard at a time: its
// scratch lives on the stack (about 6 KiB). At 64 shards, a chunk's user
// keys, then its device keys, take each shard's lock about once for 8 keys.
const batchChunk = 512

// batchMin is the fewest events worth grouping: below it, DecideBatch calls
// Decide for each. n events' 2n keys fall in about 64·(1−e^(−2n/64))
// shards, so a chunk of 64 takes only a third fewer locks than Decide,
// which its fixed cost (two passes over the 64 shards) eats:
// BenchmarkPolicyDecideBatchSmall measured 64 events a call as costly per
// event as Decide, 32 a sixth costlier, 128 a tenth cheaper and 512 30 %.
const batchMin = 64

// DecideBatch is Decide for each event of ins, all at now: out[i] is what
// Decide(ins[i], now) would have returned had the events been decided one
// after another in slice order. out must be at least as long as ins; only
// out[:len(ins)] is written. It is safe for concurrent use.
//
// It pays from about 100 events a call: it takes each tracker shard's lock
// once for all the keys of up to batchChunk events that hash to it, instead
// of once per key, and the locks' atomic instructions were half of Decide's
// CPU time when the tracker's state is in the CPU caches (see batchMin).
//
// Events of one key are counted in slice order; events of different keys
// in the order of their shards, which changes nothing but, at MaxKeys,
// which idle key a new one evicts (and the order of a user and a device
// whose hashes collide, see entry). Another goroutine's events may be
// counted between two of the batch's, as between two calls of Decide.
func (p *Policy) DecideBatch(ins []Input, now time.Time, out []Decision) {
	out = out[:len(ins)]
	sec := now.Unix()
	for len(ins) > 0 {
		n := min(len(ins), batchChunk)
		if n < batchMin {
			for i := range n {
				out[i] = p.Decide(ins[i], now)
			}
		} else {
			p.decideChunk(ins[:n], now, sec, out[:n])
		}
		ins, out = ins[n:], out[n:]
	}
}

// decideChunk is DecideBatch for at most batchChunk events. The user keys go
// first, shard by shard, as a user's hot state after an event picks that
// event's lane, then the device keys, shard by shard. Within a shard, its
// events are a list threaded through next in slice order, so a key's events
// are counted in order.
func (p *Policy) decideChunk(ins []Input, now time.Time, sec int64, out []Decision) {
	t := p.tr
	var (
		head    [numShards]int16
		next    [batchChunk]int16
		hs      [batchChunk]uint64 // the keys' hashes: users', then devices'
		userHot [batchChunk]bool
	)
	// Users. head[s] is the first event of shard s, −1 for none.
	for s := range head {
		head[s] = -1
	}
	for i := len(ins) - 1; i >= 0; i-- {
		out[i] = Decision{}
		if len(ins[i].User) == 0 {
			continue
		}
		h := maphash.Bytes(t.userSeed, ins[i].User)
		s := shardOf(h)
		hs[i], next[i], head[s] = h, head[s], int16(i)
	}
	for s, first := range head {
		if first < 0 {
			continue
		}
		sh := &t.shards[s]
		sh.mu.Lock()
		for i := first; i >= 0; i = next[i] {
			e := t.get(sh, hs[i], sec)
			changed, _, _ := t.count(e, sec, &p.userLim)
			userHot[i] = e.hot
			if changed {
				out[i].HotDelta = delta(e.hot)
			}
		}
		sh.mu.Unlock()
	}

	// Devices.
	for s := range head {
		head[s] = -1
	}
	for i := len(ins) - 1; i >= 0; i-- {
		h := t.Hash(ins[i].Device)
		s := shardOf(h)
		hs[i], next[i], head[s] = h, head[s], int16(i)
	}
	for s, first := range head {
		if first < 0 {
			continue
		}
		sh := &t.shards[s]
		sh.mu.Lock()
		for i := first; i >= 0; i = next[i] {
			d := &out[i]
			d.Hash = hs[i]
			e := t.get(sh, d.Hash, sec)
			changed, cur, sum := t.count(e, sec, &t.lim)
			lane, switched := e.route(uint8(p.forced(&ins[i], now)), userHot[i])
			d.Lane, d.Switched = Lane(lane), switched
			if changed {
				d.HotDelta += delta(e.hot)
			}
			d.Pace = cur >= t.lim.paceCur || sum >= t.lim.paceSum
		}
		sh.mu.Unlock()
	}
}
