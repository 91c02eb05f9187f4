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
	"sync"
	"time"
)

// numBuckets is the ring size: one bucket per second. 32 covers the 30 s
// window Amplitude averages Batch limits over.
const numBuckets = 32

// entry is the per-key state. Its size is what bounds the tracker's memory:
// 32×uint16 buckets (64 B) + 5 words (40 B), allocated in the 112 B size
// class, plus its map slot (8 B hash + 8 B pointer, at swiss-table load
// factors ≈ 25 B). Keys are stored as their 64-bit hash, not as strings: a
// 36-byte device_id would add a 48 B allocation and a 16 B string header per
// key, which put the tracker at 216 B/key, over its 200 B/key budget
// (BenchmarkTrackerMemory measures ≈ 150 B/key now). Two keys whose hashes
// collide (about 3·10⁻⁸ for a million keys) share one rate, which at worst
// sends a cool key to Batch.
type entry struct {
	buckets  [numBuckets]uint16 // events per second, ring indexed by unix second
	last     int64              // unix second of the newest bucket
	coolFrom int64              // unix second since which the key runs below CoolEPS; 0 = not cooling
	batchTok float32            // Batch-lane pacing tokens
	batchAt  int64              // unix ms of the last token refill
	hot      bool
	lane     uint8 // last lane decided for the key (for switch counting): 0 none, 1 realtime, 2 batch
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
}

// Tracker measures per-key rates.
type Tracker struct {
	opts   TrackerOptions
	win    int64
	seed   maphash.Seed
	shards [64]trackerShard
	perCap int
}

type trackerShard struct {
	mu sync.Mutex
	m  map[uint64]*entry // by the key's hash (see entry)
	_  [48]byte          // 64 B per shard: neighbours don't share a cache line
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
	t := &Tracker{opts: o, win: int64(o.Window / time.Second), seed: maphash.MakeSeed()}
	if t.win < 1 {
		t.win = 1
	}
	t.perCap = o.MaxKeys/len(t.shards) + 1
	for i := range t.shards {
		t.shards[i].m = make(map[uint64]*entry)
	}
	return t
}

// shard returns key's shard and its hash, the key's identity in the shard's map.
func (t *Tracker) shard(key []byte) (*trackerShard, uint64) {
	h := maphash.Bytes(t.seed, key)
	return &t.shards[h%uint64(len(t.shards))], h
}

// advance moves e's ring to second now, zeroing skipped buckets.
func (e *entry) advance(now int64) {
	if e.last == 0 || now-e.last >= numBuckets {
		e.buckets = [numBuckets]uint16{}
		e.last = now
		return
	}
	for s := e.last + 1; s <= now; s++ {
		e.buckets[s%numBuckets] = 0
	}
	if now > e.last {
		e.last = now
	}
}

// sum returns the events in the last w seconds, including the current one.
func (e *entry) sum(now, w int64) int {
	n := 0
	for s := now - w + 1; s <= now; s++ {
		if s > e.last || s <= e.last-numBuckets {
			continue
		}
		n += int(e.buckets[s%numBuckets])
	}
	return n
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
	sec := now.Unix()
	sh, h := t.shard(key)
	sh.mu.Lock()
	o := t.observeLocked(sh, h, sec, hotEPS)
	sh.mu.Unlock()
	return o
}

// ObserveRoute is Observe for an ordering (device) key that also picks the
// key's lane in the same critical section — one lock and one lookup per
// event: forced (non-zero) wins, else Batch when the key or otherHot (its
// user) runs hot, else Realtime. It returns the lane and whether the key
// switched lanes with this event.
func (t *Tracker) ObserveRoute(key []byte, now time.Time, hotEPS float64, forced uint8, otherHot bool) (Observation, uint8, bool) {
	sec := now.Unix()
	sh, h := t.shard(key)
	sh.mu.Lock()
	o := t.observeLocked(sh, h, sec, hotEPS)
	e := sh.m[h]
	lane := forced
	if lane == 0 {
		lane = 1
		if o.Hot || otherHot {
			lane = 2
		}
	}
	prev := e.lane
	e.lane = lane
	sh.mu.Unlock()
	return o, lane, prev != 0 && prev != lane
}

func (t *Tracker) observeLocked(sh *trackerShard, h uint64, sec int64, hotEPS float64) Observation {
	e := sh.m[h]
	if e == nil {
		if len(sh.m) >= t.perCap {
			sh.evict(sec)
		}
		e = &entry{}
		sh.m[h] = e
	}
	if e.hot && e.coolFrom == 0 && e.last != 0 && sec-e.last >= t.win {
		// No event for a whole window: its rate has been 0, below CoolEPS,
		// since e.last+win. Idle time counts towards CoolHold, as it does
		// for Stats, which forgets keys idle for window + hold.
		e.coolFrom = e.last + t.win
	}
	e.advance(sec)
	if e.buckets[sec%numBuckets] < 0xffff {
		e.buckets[sec%numBuckets]++
	}
	cur := float64(e.buckets[sec%numBuckets])
	avg := float64(e.sum(sec, t.win)) / float64(t.win)
	rate := max(cur, avg)
	var o Observation
	switch {
	case !e.hot && rate > hotEPS:
		e.hot, e.coolFrom, o.Changed = true, 0, true
	case e.hot && rate < t.opts.CoolEPS*hotEPS/t.opts.HotEPS:
		// rate, not avg: a key whose current second is above CoolEPS is not
		// cooling, or a bursty key (low average, hot seconds) would cool on
		// a burst's first event and turn hot again within the same second.
		if e.coolFrom == 0 {
			e.coolFrom = sec
		} else if time.Duration(sec-e.coolFrom)*time.Second >= t.opts.CoolHold {
			e.hot, e.coolFrom, o.Changed = false, 0, true
		}
	case e.hot:
		e.coolFrom = 0
	}
	o.Hot, o.Rate = e.hot, rate
	return o
}

// SetLane records the lane last chosen for key and reports whether it changed
// (a lane switch). lane is 1 for realtime, 2 for batch.
func (t *Tracker) SetLane(key []byte, lane uint8) bool {
	sh, h := t.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[h]
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
	if t.opts.BatchEPS <= 0 {
		return 0
	}
	ms := now.UnixMilli()
	capTok := float32(t.opts.BatchEPS * 30)
	sh, h := t.shard(key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[h]
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

// evict drops one idle key, chosen among a few sampled entries (Go's map
// iteration order is randomised): the one seen least recently. Called with
// the shard lock held.
func (sh *trackerShard) evict(now int64) {
	var victim uint64
	oldest := int64(1<<63 - 1)
	i := 0
	for k, e := range sh.m {
		if e.last < oldest {
			victim, oldest = k, e.last
		}
		if i++; i >= 8 {
			break
		}
	}
	delete(sh.m, victim)
}

// Stats counts tracked and hot keys, and drops keys idle for longer than the
// window plus the hold time (they carry no state worth keeping).
func (t *Tracker) Stats(now time.Time) (tracked, hot int) {
	sec := now.Unix()
	idle := t.win + int64(t.opts.CoolHold/time.Second) + 1
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if sec-e.last > idle {
				delete(sh.m, k)
				continue
			}
			if e.hot {
				hot++
			}
		}
		tracked += len(sh.m)
		sh.mu.Unlock()
	}
	return tracked, hot
}
