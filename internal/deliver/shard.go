package deliver

import (
	"context"
	"sync"
	"time"

	"github.com/ampstream/ampstream/internal/route"
)

// keyState is a key's place in its shard. It exists while the key has
// events pending (in an open or sent request) or waiting.
type keyState struct {
	hash    uint64  // the key's identity in its shard (see shard.keys)
	credit  int     // Batch pacing tokens taken from the tracker and not yet used
	pending int     // events in open or sent requests
	open    *batch  // the request holding its pending events, while that request is open
	waiting []*Item // events queued behind the pending ones, in arrival order
	until   time.Time
	held    bool // counted in throttledKeys
	listed  bool // in the shard's quarantine list
	touched bool // in shard.touched (finish's scratch list)
}

type batch struct {
	lane     route.Lane
	items    []*Item
	bytes    int
	deadline time.Time // opened + the lane's linger
	lastAdd  time.Time // when the last item joined
	// urgency is set (> 0) when an event of another lane waits behind this
	// request (its key's earlier events are in it): the request then leaves
	// once no event joined it for that long (that lane's linger), even
	// before its deadline. Otherwise a device whose events alternate lanes waits a
	// whole Batch linger per alternation once traffic thins out, and those
	// waits add up along its events. While events keep joining (a backlog),
	// or while requests the shard sealed before still wait for a sender (the
	// lane is the bottleneck: leaving early would only queue a smaller
	// request), the request still fills up.
	urgency time.Duration
}

// due is when the open request of lane leaves if it does not fill up first.
func (s *shard) due(b *batch) time.Time {
	if b.urgency > 0 && len(s.sealed[b.lane]) == 0 {
		if d := b.lastAdd.Add(b.urgency); d.Before(b.deadline) {
			return d
		}
	}
	return b.deadline
}

// shard owns the keys that hash to it. Only its goroutine touches keys,
// open and sealed; senders talk back through comps.
type shard struct {
	d  *Deliverer
	in chan []*Item // shares of SubmitBatch calls, in submission order
	// keys are by 64-bit hash of the ordering key: no string copy per new
	// key. Two keys whose hashes collide (about n²/2^65) would share one
	// keyState, which only orders them together: over-serialising is safe.
	keys keyTable

	open   [3]*batch // per lane
	sealed [3][]*job // per lane, waiting for a free sender

	quarantined []*keyState
	touched     []*keyState // finish's scratch list

	compMu     sync.Mutex
	comps      []*job
	compNotify chan struct{}

	timer      *time.Timer
	timerArmed bool
	timerAt    time.Time // the deadline the timer is armed for
}

func newShard(d *Deliverer) *shard {
	return &shard{
		d: d,
		// Shares of up to a fetch chunk each amortise the handoff from
		// partition goroutines. The queue is short on purpose: it is the
		// backpressure that keeps partitions from parsing far ahead of
		// what the shards and senders can take. With 128 shares the
		// consumer filled its whole in-flight budget (200k events) and ran
		// 15 % slower end to end; with 4–16 it holds 30–80k and runs at
		// the best rate measured. The in-flight budget, not this buffer,
		// bounds memory.
		in:         make(chan []*Item, 8),
		compNotify: make(chan struct{}, 1),
	}
}

// complete hands a finished job back to its shard. It never blocks.
func (s *shard) complete(j *job) {
	s.compMu.Lock()
	s.comps = append(s.comps, j)
	s.compMu.Unlock()
	select {
	case s.compNotify <- struct{}{}:
	default:
	}
}

func (s *shard) run(ctx context.Context) {
	s.timer = time.NewTimer(time.Hour)
	s.timer.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var rtCh, btCh chan *job
		var rtJob, btJob *job
		if q := s.sealed[route.Realtime]; len(q) > 0 {
			rtCh, rtJob = s.d.jobs[route.Realtime], q[0]
		}
		if q := s.sealed[route.Batch]; len(q) > 0 {
			btCh, btJob = s.d.jobs[route.Batch], q[0]
		}
		select {
		case <-ctx.Done():
			s.timer.Stop()
			return
		case share := <-s.in:
			// One clock read for what is already queued, taken without
			// going back to select.
			now := s.d.opts.Now()
			for _, it := range share {
				s.arrive(it, now)
			}
			for n := 0; n < 16; n++ {
				select {
				case share := <-s.in:
					for _, it := range share {
						s.arrive(it, now)
					}
					continue
				default:
				}
				break
			}
		case <-s.compNotify:
			s.compMu.Lock()
			comps := s.comps
			s.comps = nil
			s.compMu.Unlock()
			for _, j := range comps {
				s.finish(j)
			}
		case rtCh <- rtJob:
			s.popSealed(route.Realtime)
		case btCh <- btJob:
			s.popSealed(route.Batch)
		case <-s.timer.C:
			s.timerArmed = false
			s.sealExpired()
		case <-tick.C:
			s.releaseQuarantine()
		}
	}
}

func (s *shard) arrive(it *Item, now time.Time) {
	ks := s.keys.get(it.hash)
	if ks == nil {
		ks = &keyState{hash: it.hash}
		s.keys.put(ks)
	}
	it.ks = ks
	if len(ks.waiting) > 0 || now.Before(ks.until) || !s.tryAdd(ks, it, now) {
		ks.waiting = append(ks.waiting, it)
	}
}

// tryAdd puts it into its lane's open request if the key's order allows:
// the key has nothing pending, or its pending events are in that same open
// request. It returns false when the event must wait.
func (s *shard) tryAdd(ks *keyState, it *Item, now time.Time) bool {
	if it.Owner.Revoked() {
		// Nobody will commit it; the next owner redelivers it. Sending it now
		// would only make a duplicate.
		return true
	}
	if until, held := s.d.userHeld(it.UserID, now); held {
		s.hold(ks, until, true)
		return false
	}
	lane := it.lane
	b := s.open[lane]
	if ks.pending > 0 && (b == nil || ks.open != b) {
		s.waitBehind(ks.open, lane, now)
		return false
	}
	if lane == route.Batch && it.pace {
		if ks.credit == 0 {
			// Tokens are taken a chunk at a time: one tracker lock per chunk,
			// not per event. Unused credit dies with the keyState, which only
			// makes pacing stricter.
			n := s.d.tracker.BatchChunk()
			if wait := s.d.tracker.BatchDelayHash(it.hash, n, now); wait > 0 {
				s.hold(ks, now.Add(wait), false)
				return false
			}
			ks.credit = n
		}
	}
	lo := s.d.laneOpts(lane)
	if b != nil && s.d.send.BodySize(len(b.items)+1, b.bytes+it.size()) > lo.MaxBytes {
		s.seal(lane)
		if ks.pending > 0 {
			return false // its earlier events are in the request just sealed
		}
		b = nil
	}
	if b == nil {
		b = &batch{lane: lane, deadline: now.Add(lo.Linger)}
		s.open[lane] = b
		s.armTimer(b.deadline, now)
	}
	b.items = append(b.items, it)
	b.bytes += it.size()
	b.lastAdd = now
	if lane == route.Batch && ks.credit > 0 {
		ks.credit--
	}
	ks.pending++
	ks.open = b
	if len(b.items) >= lo.MaxEvents {
		s.seal(lane)
	}
	return true
}

// minUrgency is the shortest idleness after which a request that another
// lane's event waits behind leaves (batch.urgency): in a backlog, shares
// reach a shard far more often than this.
const minUrgency = time.Millisecond

// waitBehind notes that an event of lane waits for o, the request holding
// its key's earlier events: if o is still open, it leaves once idle for
// lane's linger (batch.urgency).
func (s *shard) waitBehind(o *batch, lane route.Lane, now time.Time) {
	if o == nil || s.open[o.lane] != o {
		return // sealed or sent: it does not linger
	}
	// At least minUrgency: with realtime.linger 0, "idle for 0" would seal
	// the request after every share of a backlog.
	l := max(s.d.laneOpts(lane).Linger, minUrgency)
	if l >= s.d.laneOpts(o.lane).Linger || (o.urgency > 0 && o.urgency <= l) {
		return
	}
	o.urgency = l
	s.armTimer(s.due(o), now)
}

func (s *shard) seal(lane route.Lane) {
	b := s.open[lane]
	if b == nil {
		return
	}
	s.open[lane] = nil
	s.sealed[lane] = append(s.sealed[lane], &job{shard: s, lane: lane, items: b.items})
}

// popSealed removes the first sealed job of lane, which a sender took. Its
// slot is cleared: the queue's array would otherwise keep the job, and its
// items' events (views of fetched memory the consumer stops counting once
// they are resolved), until append moves it.
func (s *shard) popSealed(lane route.Lane) {
	q := s.sealed[lane]
	q[0] = nil
	s.sealed[lane] = q[1:]
	if b := s.open[lane]; b != nil && b.urgency > 0 && len(s.sealed[lane]) == 0 {
		// The lane caught up: an urgent request may leave now (s.due).
		s.armTimer(s.due(b), s.d.opts.Now())
	}
}

func (s *shard) armTimer(deadline, now time.Time) {
	if s.timerArmed && !deadline.Before(s.timerAt) {
		return // an earlier deadline comes first; sealExpired re-arms
	}
	// One timer serves both lanes: a realtime request (5 ms linger) opened
	// while a Batch request (200 ms) lingers must move the timer earlier.
	s.timer.Reset(max(deadline.Sub(now), 0))
	s.timerArmed, s.timerAt = true, deadline
}

func (s *shard) sealExpired() {
	now := s.d.opts.Now()
	var next time.Time
	for _, l := range []route.Lane{route.Realtime, route.Batch} {
		b := s.open[l]
		if b == nil {
			continue
		}
		if due := s.due(b); !now.Before(due) {
			s.seal(l)
		} else if next.IsZero() || due.Before(next) {
			next = due
		}
	}
	if !next.IsZero() {
		s.armTimer(next, now)
	}
}

// hold quarantines ks until the given time. throttled marks a 429 hold (as
// opposed to Batch pacing), which the throttled-keys gauge counts.
func (s *shard) hold(ks *keyState, until time.Time, throttled bool) {
	if until.After(ks.until) {
		ks.until = until
	}
	if throttled && !ks.held {
		ks.held = true
		s.d.throttledKeys.Add(1)
	}
	if !ks.listed {
		ks.listed = true
		s.quarantined = append(s.quarantined, ks)
	}
}

func (s *shard) releaseQuarantine() {
	if len(s.quarantined) == 0 {
		return
	}
	now := s.d.opts.Now()
	// drain may hold the key it releases again (Batch pacing ran out of
	// tokens, or its user is still held), and hold appends to
	// s.quarantined: so the list is rebuilt in place as it is walked, never
	// replaced afterwards, or such a key would be marked listed without
	// being in the list, and never released. Each step appends at most one
	// key (the one it visits), so the writes never overtake the reads.
	list := s.quarantined
	s.quarantined = list[:0]
	for _, ks := range list {
		if now.Before(ks.until) {
			s.quarantined = append(s.quarantined, ks)
			continue
		}
		ks.listed = false
		if ks.held {
			ks.held = false
			s.d.throttledKeys.Add(-1)
		}
		s.drain(ks, now)
	}
	clear(list[len(s.quarantined):])
}

// drain moves a key's waiting events into open requests, in order, until one
// has to wait; then forgets the key if nothing of it is left.
func (s *shard) drain(ks *keyState, now time.Time) {
	if now.Before(ks.until) {
		return
	}
	i := 0
	for ; i < len(ks.waiting); i++ {
		if !s.tryAdd(ks, ks.waiting[i], now) {
			break
		}
	}
	if i > 0 {
		clear(ks.waiting[:i])
		ks.waiting = ks.waiting[i:]
		if len(ks.waiting) == 0 {
			ks.waiting = nil
		}
	}
	if ks.pending == 0 && len(ks.waiting) == 0 && !ks.listed {
		s.keys.del(ks.hash)
	}
}

// finish applies a completed job: deferred (throttled) events go back to the
// front of their key's queue under a hold, and every touched key drains.
func (s *shard) finish(j *job) {
	now := s.d.opts.Now()
	// Each key once, however many of its events the request carried (a hot
	// key has hundreds in a Batch request).
	touched := s.touched[:0]
	for _, it := range j.items {
		ks := it.ks
		ks.pending--
		if ks.open != nil && ks.pending == 0 {
			ks.open = nil
		}
		if !ks.touched {
			ks.touched = true
			touched = append(touched, ks)
		}
	}
	if j.deferred > 0 {
		// Put deferred events back in front of anything that arrived while
		// they were in flight, keeping their relative order.
		byKey := map[*keyState][]*Item{}
		for i, it := range j.items {
			if j.res[i] == resDeferred {
				byKey[it.ks] = append(byKey[it.ks], it)
			}
		}
		for ks, items := range byKey {
			ks.waiting = append(items, ks.waiting...)
			s.hold(ks, j.until, true)
		}
	}
	for _, ks := range touched {
		ks.touched = false
		if ks.pending == 0 {
			s.drain(ks, now)
		}
	}
	clear(touched)
	s.touched = touched[:0]
	// Done with: a reference to the job left anywhere must not keep its
	// items' events alive.
	clear(j.items)
	j.items, j.res, j.run = nil, nil, nil
}
