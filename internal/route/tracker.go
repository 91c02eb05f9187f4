// Package route decides, per event, which Amplitude lane carries it: the
// realtime lane (HTTP V2) or the Batch lane. It measures the send rate of
// every device_id and user_id over a sliding window and moves a key to Batch
// once it runs hot, before Amplitude's 30 events/s per-id throttle bites, and
// back only after it has stayed cool for a hold time (hysteresis).
//
// Concurrency: Tracker is safe for concurrent use. It is sharded by key hash;
// each shard has its own mutex, so there is no global lock on the hot path.
// Memory is bounded by MaxKeys; idle keys are evicted first.
package route

import (
	"hash/maphash"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/cespare/xxhash/v2"

	"github.com/ampstream/ampstream/internal/prefetch"
)

// numBuckets is the ring size: one bucket per second. 32 covers the 30 s
// window Amplitude averages Batch limits over.
const numBuckets = 32

// entry is the per-key state. Its size is what bounds the tracker's memory:
// 32×uint16 buckets (64 B) + 5 words (40 B) in a chunk of the tracker's arena,
// plus its slot (16 B at a load of 3/8..3/4, ≈ 30 B). It must hold no
// pointers: the collector does not scan the arena because of that (see
// arena). Keys are stored as their 64-bit hash, not as strings: a 36-byte
// device_id would add a 48 B allocation and a 16 B string header per key,
// over the tracker's 200 B/key budget (BenchmarkTrackerMemory measures
// ≈ 140 B/key now). Two keys whose hashes collide (about 3·10⁻⁸ for a
// million keys) share one rate, which at worst sends a cool key to Batch.
//
// The fields an event touches, but for the bucket of its second, come first.
type entry struct {
	last     int64  // unix second of the newest bucket
	coolFrom int64  // unix second since which the key runs below CoolEPS; 0 = not cooling
	sum      uint32 // events in the window ending at last: the buckets last-win+1..last; the next free entry while free
	hot      bool
	lane     uint8 // last lane decided for the key (for switch counting): 0 none, 1 realtime, 2 batch
	// remote is what the other replicas of the group send for this (user)
	// key, as events per window (SetRemote); it counts towards the key's
	// hot state until remoteUntil, a unix second mod 2¹⁶ (compared as an
	// int16 difference: remote rates live for seconds).
	remote      uint16
	batchTok    float32 // Batch-lane pacing tokens
	remoteUntil uint16
	user        bool               // a user key (Policy.Decide): Users reports it
	batchAt     int64              // unix ms of the last token refill
	buckets     [numBuckets]uint16 // events per second, ring indexed by unix second
}

// TrackerOptions configure a Tracker.
type TrackerOptions struct {
	Window   time.Duration // averaging window (1 s buckets), ≤ 32 s
	HotEPS   float64       // a key above this rate is hot
	CoolEPS  float64       // a hot key below this rate ...
	CoolHold time.Duration // ... for this long is cool again
	MaxKeys  int           // capacity; 0 means 1M
	// BatchEPS paces a key on the Batch lane (tokens per second, bucket of
	// BatchEPS×30 for Amplitude's 30 s averaging). 0 disables pacing.
	BatchEPS float64
	// UserSeed keys the hash of user keys (UserHash). Replicas that share
	// user rates (package userrate) must use the same seed, so that a user
	// has the same hash on each; it should be secret (derived from the API
	// key), so that user ids cannot be chosen to collide. 0 picks a random
	// seed.
	UserSeed uint64
}

// Tracker measures per-key rates.
type Tracker struct {
	opts TrackerOptions
	win  int64
	// seed hashes device (ordering) keys, userSeed user keys (with
	// xxhash, which unlike maphash takes a seed that replicas can share).
	// Independent functions keep the two apart: a user and a device hash
	// are equal with probability 2⁻⁶⁴, as two device hashes are, so a user
	// never shares a device's entry more often than two devices share one
	// (see entry).
	seed     maphash.Seed
	userSeed uint64
	lim      limits // for HotEPS, the device keys' threshold
	shards   [64]trackerShard
	perCap   uint32 // keys per shard, from MaxKeys
	// views publishes each shard's slots for prefetch, apart from the
	// shards: their lines change with every lock, these only as a table
	// grows, so reading them without the lock stays a cache hit.
	views [64]atomic.Pointer[[]slot]
}

type trackerShard struct {
	mu  sync.Mutex
	tab table
	_   [64 - 8 - 48]byte // 64 B per shard: neighbours don't share a cache line
}

// NewTracker returns a Tracker.
func NewTracker(o TrackerOptions) *Tracker {
	if o.Window <= 0 {
		o.Window = 10 * time.Second
	}
	if o.Window > (numBuckets-1)*time.Second {
		o.Window = (numBuckets - 1) * time.Second
	}
	if o.MaxKeys <= 0 {
		o.MaxKeys = 1_000_000
	}
	if o.UserSeed == 0 {
		o.UserSeed = rand.Uint64() | 1
	}
	t := &Tracker{opts: o, win: int64(o.Window / time.Second), seed: maphash.MakeSeed(), userSeed: o.UserSeed}
	if t.win < 1 {
		t.win = 1
	}
	t.perCap = uint32(o.MaxKeys/len(t.shards) + 1)
	a := newArena(len(t.shards) * int(t.perCap))
	for i := range t.shards {
		t.shards[i].tab.a = a
		t.shards[i].tab.view = &t.views[i]
	}
	t.lim = t.limitsFor(o.HotEPS)
	return t
}

// Hash returns the hash by which the tracker knows a device (ordering) key,
// the one Decision.Hash carries: maphash with a seed fixed for the tracker's
// lifetime, uniform over 64 bits, so callers may shard by it instead of
// hashing the key again.
func (t *Tracker) Hash(key []byte) uint64 {
	return maphash.Bytes(t.seed, key)
}

// UserHash returns the hash by which the tracker knows a user key: xxhash
// seeded with TrackerOptions.UserSeed, the same on every replica that
// shares the seed. SetRemote and Users name user keys by it.
func (t *Tracker) UserHash(user []byte) uint64 {
	var d xxhash.Digest
	d.ResetWithSeed(t.userSeed)
	_, _ = d.Write(user)
	return d.Sum64()
}

// prefetch starts loading the cache line of h's home slot, the first a
// lookup of h reads, without the shard's lock: it reads only the published
// view, and prefetching never faults or races (package prefetch). At about
// 100k keys the slots of all shards are megabytes, and a lookup misses the
// caches (and, with 4 KiB pages, the TLB) on most events; a caller that
// knows its next keys ahead (Policy.Prefetch) overlaps those misses
// instead of waiting for each in turn.
func (t *Tracker) prefetch(h uint64) {
	if v := t.views[h>>58].Load(); v != nil {
		s := *v
		prefetch.Line(unsafe.Pointer(&s[h&uint64(len(s)-1)]))
	}
}

// shard returns the shard of hash h. It uses the top bits: table positions
// use the low ones, as callers sharding by Hash are likely to.
func (t *Tracker) shard(h uint64) *trackerShard {
	return &t.shards[h>>58]
}

// get returns h's entry, adding it (and evicting another at capacity) when
// the key is new, for an event at second sec, which it records in the
// key's slot as count will in the entry: the entry's last becomes the later
// of last and sec. Called with the shard lock held.
func (t *Tracker) get(sh *trackerShard, h uint64, sec int64) *entry {
	sec32 := uint32(sec)
	if s := sh.tab.findSlot(h); s != nil {
		if int32(sec32-s.last) > 0 {
			s.last = sec32
		}
		return sh.tab.a.at(s.i)
	}
	if sh.tab.n >= t.perCap {
		sh.tab.evictNear(h)
	}
	return sh.tab.a.at(sh.tab.insertSlot(h, sec32).i)
}

// advance moves e's ring to second now, zeroing skipped buckets and keeping
// e.sum the sum of the window (win seconds) ending at e.last. It does nothing
// for a second before e.last (see count).
func (e *entry) advance(now, win int64) {
	if e.last == 0 || now-e.last >= numBuckets {
		e.buckets = [numBuckets]uint16{}
		e.last, e.sum = now, 0
		return
	}
	// Second s enters the window as s-win leaves it. The bucket of s-win is
	// still the ring's (win < numBuckets), or already zeroed by this loop
	// when s-win > e.last, which is right: that second had no event.
	for s := e.last + 1; s <= now; s++ {
		e.sum -= uint32(e.buckets[(s-win)&(numBuckets-1)])
		e.buckets[s&(numBuckets-1)] = 0
	}
	if now > e.last {
		e.last = now
	}
}

// sumAt returns the events in the w seconds up to now, including it, for a
// now at or before e.last (for now == e.last, e.sum has it).
func (e *entry) sumAt(now, w int64) uint32 {
	var n uint32
	for s := now - w + 1; s <= now; s++ {
		if s > e.last || s <= e.last-numBuckets {
			continue
		}
		n += uint32(e.buckets[s&(numBuckets-1)])
	}
	return n
}

// maxCount bounds the counts compared with limits: a second holds at most
// 0xffff events, a window at most 31 such seconds.
const maxCount = numBuckets * 0xffff

// limits are the rate thresholds for one hotEPS, as event counts. The rate
// of a key is max(cur, sum/win): its current second's count and its window
// average. Comparing counts with precomputed thresholds spares each event
// the float conversions and divisions of the rate and the cool threshold.
// Each threshold is the least count for which the float expression that
// defines it holds (see firstWhere), so the comparisons decide exactly as
// the floats did.
type limits struct {
	hotCur, hotSum   uint32 // rate > hotEPS ⇔ cur ≥ hotCur or sum ≥ hotSum
	coolCur, coolSum uint32 // rate < CoolEPS×hotEPS/HotEPS ⇔ cur < coolCur and sum < coolSum
	paceCur, paceSum uint32 // NeedsPacing(rate) ⇔ cur ≥ paceCur or sum ≥ paceSum
}

func (t *Tracker) limitsFor(hotEPS float64) limits {
	w := float64(t.win)
	above := func(x, w float64) uint32 { return firstWhere(func(n float64) bool { return n/w > x }) }
	notBelow := func(x, w float64) uint32 { return firstWhere(func(n float64) bool { return !(n/w < x) }) }
	cool := t.opts.CoolEPS * hotEPS / t.opts.HotEPS
	l := limits{
		hotCur: above(hotEPS, 1), hotSum: above(hotEPS, w),
		coolCur: notBelow(cool, 1), coolSum: notBelow(cool, w),
		paceCur: maxCount + 1, paceSum: maxCount + 1,
	}
	if t.opts.BatchEPS > 0 {
		l.paceCur, l.paceSum = above(t.opts.BatchEPS/4, 1), above(t.opts.BatchEPS/4, w)
	}
	return l
}

// firstWhere returns the least count n ≤ maxCount for which f(float64(n))
// holds, or maxCount+1 if none does. f must be monotone in n (false, then
// true), which n/w > x and !(n/w < x) are: float64(n) is exact below 2⁵³ and
// a correctly rounded division by w > 0 never decreases as n grows.
func firstWhere(f func(n float64) bool) uint32 {
	lo, hi := uint32(0), uint32(maxCount+1) // f is false below lo, true from hi
	for lo < hi {
		mid := lo + (hi-lo)/2
		if f(float64(mid)) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}

// count counts one event for e at sec, updates its hot state against l and
// returns whether it changed, and the current second's and the window's
// counts. Called with the shard lock held.
func (t *Tracker) count(e *entry, sec int64, l *limits) (changed bool, cur, sum uint32) {
	if e.hot && e.coolFrom == 0 && e.last != 0 && sec-e.last >= t.win {
		// No event for a whole window: its rate has been 0, below CoolEPS,
		// since e.last+win. Idle time counts towards CoolHold, as it does
		// for Stats, which forgets keys idle for window + hold.
		e.coolFrom = e.last + t.win
	}
	e.advance(sec, t.win)
	b := &e.buckets[sec&(numBuckets-1)]
	if sec == e.last {
		if *b < 0xffff {
			*b++
			e.sum++
		}
		sum = e.sum
	} else {
		// An event for a second before the newest (clocks of concurrent
		// callers differ): counted in its own second's bucket, rated over
		// the window ending there. Rare, so e.sum is recounted.
		if *b < 0xffff {
			*b++
		}
		e.sum = e.sumAt(e.last, t.win)
		sum = e.sumAt(sec, t.win)
	}
	cur = uint32(*b)
	gcur, gsum := cur, sum // with the rest of the group's rate, for a user key
	if e.remote != 0 {
		if int16(uint16(sec)-e.remoteUntil) < 0 {
			gsum += uint32(e.remote)
			gcur += uint32(e.remote) / uint32(t.win)
		} else {
			e.remote = 0
		}
	}
	switch {
	case !e.hot && (gcur >= l.hotCur || gsum >= l.hotSum):
		e.hot, e.coolFrom, changed = true, 0, true
	case e.hot && gcur < l.coolCur && gsum < l.coolSum:
		// rate, not avg: a key whose current second is above CoolEPS is not
		// cooling, or a bursty key (low average, hot seconds) would cool on
		// a burst's first event and turn hot again within the same second.
		if e.coolFrom == 0 {
			e.coolFrom = sec
		} else if time.Duration(sec-e.coolFrom)*time.Second >= t.opts.CoolHold {
			e.hot, e.coolFrom, changed = false, 0, true
		}
	case e.hot:
		e.coolFrom = 0
	}
	return changed, cur, sum
}

// rate is the events/s of a key whose current second holds cur events and
// whose window holds sum.
func (t *Tracker) rate(cur, sum uint32) float64 {
	return max(float64(cur), float64(sum)/float64(t.win))
}

// Observation is the state of a key after an event was counted.
type Observation struct {
	Hot     bool    // the key runs hot (Batch)
	Changed bool    // hot changed with this event
	Rate    float64 // events/s: the larger of this second's count and the window average
}

// Observe counts one event for key at now and updates its hot state using
// hotEPS (callers pass a lower threshold for user keys). The rate is the
// larger of the current second's count and the window average, so a burst is
// seen within its first second rather than after the window fills.
func (t *Tracker) Observe(key []byte, now time.Time, hotEPS float64) Observation {
	l := t.thresholds(hotEPS)
	c := t.observe(t.Hash(key), now.Unix(), &l, nil)
	return Observation{Hot: c.hot, Changed: c.changed, Rate: t.rate(c.cur, c.sum)}
}

// ObserveRoute is Observe for an ordering (device) key that also picks the
// key's lane in the same critical section — one lock and one lookup per
// event: forced (non-zero) wins, else Batch when the key or otherHot (its
// user) runs hot, else Realtime. It returns the lane and whether the key
// switched lanes with this event.
func (t *Tracker) ObserveRoute(key []byte, now time.Time, hotEPS float64, forced uint8, otherHot bool) (Observation, uint8, bool) {
	l := t.thresholds(hotEPS)
	c := t.observe(t.Hash(key), now.Unix(), &l, &routing{forced: forced, otherHot: otherHot})
	return Observation{Hot: c.hot, Changed: c.changed, Rate: t.rate(c.cur, c.sum)}, c.lane, c.switched
}

// routing asks observe to pick the key's lane too (see ObserveRoute).
type routing struct {
	forced   uint8
	otherHot bool
}

// counted is what observe returns: the key's state after the event.
type counted struct {
	hot, changed bool
	cur, sum     uint32 // this second's and the window's counts
	lane         uint8  // with routing only
	switched     bool   // with routing only
}

// observe counts one event for the key hashed h at sec against l, under its
// shard's lock, and picks its lane when r is set: Observe and ObserveRoute.
// Policy.Decide spells the same steps out for its two keys: through this
// function BenchmarkPolicyDecideMixed measured 8–10 % slower.
func (t *Tracker) observe(h uint64, sec int64, l *limits, r *routing) counted {
	sh := t.shard(h)
	sh.mu.Lock()
	e := t.get(sh, h, sec)
	var c counted
	c.changed, c.cur, c.sum = t.count(e, sec, l)
	c.hot = e.hot
	if r != nil {
		c.lane, c.switched = e.route(r.forced, r.otherHot)
	}
	sh.mu.Unlock()
	return c
}

// thresholds returns the limits for hotEPS. Those for HotEPS are
// precomputed (and Policy's for user keys); any other hotEPS costs about a
// microsecond of binary searches per call.
func (t *Tracker) thresholds(hotEPS float64) limits {
	if hotEPS == t.opts.HotEPS {
		return t.lim
	}
	return t.limitsFor(hotEPS)
}

// route picks e's lane (see ObserveRoute), records it and reports whether
// it switched. Called with the shard lock held.
func (e *entry) route(forced uint8, otherHot bool) (lane uint8, switched bool) {
	lane = forced
	if lane == 0 {
		lane = 1
		if e.hot || otherHot {
			lane = 2
		}
	}
	prev := e.lane
	e.lane = lane
	return lane, prev != 0 && prev != lane
}

// SetLane records the lane last chosen for key and reports whether it changed
// (a lane switch). lane is 1 for realtime, 2 for batch.
func (t *Tracker) SetLane(key []byte, lane uint8) bool {
	h := t.Hash(key)
	sh := t.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.tab.find(h)
	if e == nil {
		return false
	}
	prev := e.lane
	e.lane = lane
	return prev != 0 && prev != lane
}

// NeedsPacing reports whether a key at rate could approach BatchEPS, the
// only keys worth the cost of Batch pacing (a token bucket lock per chunk).
// A quarter of BatchEPS leaves the unpaced events of a key that speeds up
// well inside the 30 s bucket.
func (t *Tracker) NeedsPacing(rate float64) bool {
	return t.opts.BatchEPS > 0 && rate > t.opts.BatchEPS/4
}

// BatchChunk is how many Batch tokens a caller should take at once: up to
// 64, so pacing costs one lock per 64 events, but never more than the bucket
// holds, or the tokens could never suffice.
func (t *Tracker) BatchChunk() int {
	if t.opts.BatchEPS <= 0 {
		return 1 << 30
	}
	return max(1, min(64, int(t.opts.BatchEPS*30)))
}

// BatchDelay takes n Batch-lane tokens for key and returns how long the key
// must wait before sending them; 0 means send now. Tokens refill at BatchEPS
// into a bucket of BatchEPS×30, mirroring Amplitude's 1000/s averaged over 30 s.
func (t *Tracker) BatchDelay(key []byte, n int, now time.Time) time.Duration {
	return t.BatchDelayHash(t.Hash(key), n, now)
}

// BatchDelayHash is BatchDelay for the key whose Hash (or Decision.Hash) is h.
func (t *Tracker) BatchDelayHash(h uint64, n int, now time.Time) time.Duration {
	if t.opts.BatchEPS <= 0 {
		return 0
	}
	ms := now.UnixMilli()
	capTok := float32(t.opts.BatchEPS * 30)
	sh := t.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.tab.find(h)
	if e == nil {
		return 0
	}
	if e.batchAt == 0 {
		e.batchTok, e.batchAt = capTok, ms
	}
	e.batchTok = min(capTok, e.batchTok+float32(float64(ms-e.batchAt)/1000*t.opts.BatchEPS))
	e.batchAt = ms
	if e.batchTok >= float32(n) {
		e.batchTok -= float32(n)
		return 0
	}
	missing := float64(float32(n) - e.batchTok)
	return time.Duration(missing / t.opts.BatchEPS * float64(time.Second))
}

// SetRemote records that the other replicas of the group send eps events/s
// for the user key hashed h (UserHash), until until: the key's hot state
// counts it with the local rate. Only a key with local events has an entry
// to record it in; others are left alone, and are given the rate again by
// the next call (package userrate calls it about twice a second).
func (t *Tracker) SetRemote(h uint64, eps float64, until time.Time) {
	n := math.Round(eps * float64(t.win))
	if n < 0 {
		n = 0
	}
	sh := t.shard(h)
	sh.mu.Lock()
	if e := sh.tab.find(h); e != nil {
		e.remote = uint16(min(n, 0xffff))
		e.remoteUntil = uint16(until.Unix())
	}
	sh.mu.Unlock()
}

// Users calls fn, under a shard's lock (fn must be quick and must not call
// the tracker), for every user key whose local rate at now is at least
// floor events/s, with its UserHash and that rate: the larger of the last
// whole second's count and the window's average. The local rate leaves out
// SetRemote's: what a replica reports is what it sends itself.
func (t *Tracker) Users(now time.Time, floor float64, fn func(h uint64, eps float64)) {
	sec := now.Unix()
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for _, s := range sh.tab.slots {
			if s.i == 0 {
				continue
			}
			e := sh.tab.a.at(s.i)
			if !e.user || e.last == 0 || sec-e.last >= t.win {
				continue
			}
			r := max(float64(e.sumAt(sec-1, 1)), float64(e.sumAt(sec, t.win))/float64(t.win))
			if r >= floor {
				fn(s.h, r)
			}
		}
		sh.mu.Unlock()
	}
}

// Stats counts tracked and hot keys, and drops keys idle for longer than the
// window plus the hold time (they carry no state worth keeping).
func (t *Tracker) Stats(now time.Time) (tracked, hot int) {
	sec := now.Unix()
	idle := t.win + int64(t.opts.CoolHold/time.Second) + 1
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		sh.tab.sweep(func(e *entry) bool {
			if sec-e.last > idle {
				return false
			}
			if e.hot {
				hot++
			}
			return true
		})
		tracked += int(sh.tab.n)
		sh.mu.Unlock()
	}
	return tracked, hot
}
