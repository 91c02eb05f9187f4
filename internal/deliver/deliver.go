// Package deliver carries events from the consumer to Amplitude on two lanes,
// realtime (HTTP V2) and Batch, and reports each event's fate back to its
// owner exactly once: accepted, or rejected (to be dead-lettered).
//
// Ordering. Events are sharded by their ordering key (device_id, or the user
// key when an event has none). A shard goroutine owns its keys' state and
// enforces one rule: at most one request holds a key's events at a time, and
// a key's events enter requests in arrival order. A key whose events are in
// flight (or held back after a 429, or on the other lane) queues its new
// events behind them, so retries, 429 pauses, 413 splits and lane switches
// never reorder a device's events.
//
// Concurrency. SubmitBatch may be called from many goroutines; events of one key
// must be submitted from one goroutine (the partition that owns them) to keep
// their order. Shards never block on HTTP: sealed requests go to a bounded
// pool of sender goroutines per lane, which report back through a
// non-blocking completion queue. Memory is bounded upstream: the consumer
// only submits events within its in-flight budget.
//
// Lifecycle. Start launches the shards and senders; Stop cancels in-flight
// requests (the hard phase of shutdown; draining is the consumer's job) and
// waits for every goroutine. Events not accepted by then are simply never
// acknowledged: Kafka redelivers them.
package deliver

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ampstream/ampstream/internal/amplitude"
	"github.com/ampstream/ampstream/internal/event"
	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/route"
)

// Owner learns the fate of its items. Methods are called from sender and
// shard goroutines and must not block for long.
type Owner interface {
	// Accepted: Amplitude accepted the items (or had them already). Every
	// item has this owner; there is at least one. Items come in runs (the
	// consecutive items of a request with one owner), so the owner can
	// resolve them under one lock.
	Accepted(items []*Item)
	// Rejected: the item can never be accepted; it must be dead-lettered.
	Rejected(it *Item, reason, detail string)
	// Revoked reports that the owner gave the item's partition up: the item
	// is dropped unsent, and the partition's next owner redelivers it.
	Revoked() bool
	// AppendInsertIDHead appends to dst what an item with NoInsertID is
	// sent with in place of its opening brace: {"insert_id":"<id>", (see
	// event.AppendInsertIDHead), the id at most event.MaxStableInsertID
	// ASCII letters, digits and '-', the same each time the item's event
	// is delivered.
	AppendInsertIDHead(dst []byte, it *Item) []byte
}

// Item is one event on its way to Amplitude.
type Item struct {
	Raw      []byte     // the event JSON sent to Amplitude
	Key      []byte     // ordering key: device_id, or the user key
	DeviceID []byte     // may be empty
	UserID   []byte     // may be empty
	TimeMS   int64      // the event's own time, 0 when absent
	Override route.Lane // from the amplitude-api header
	Lagging  bool       // its partition is catching up
	// NoInsertID: Raw is an object with members, none of them an
	// insert_id, that starts with its brace; the request gives it Owner's
	// insert_id as its first member (AppendInsertIDHead).
	NoInsertID bool
	Owner      Owner
	Seq        uint64 // the owner's bookkeeping
	Ref        any    // the owner's bookkeeping

	lane route.Lane
	pace bool   // subject to Batch pacing (a fast key)
	hash uint64 // of Key: shard selection and the shard's map key
	ks   *keyState
}

// size is the most the item takes in a request body.
func (it *Item) size() int {
	if it.NoInsertID {
		return len(it.Raw) + insertIDRoom
	}
	return len(it.Raw)
}

// insertIDRoom is the most an insert_id member adds to an event.
const insertIDRoom = len(`"insert_id":"",`) + event.MaxStableInsertID

// Lane returns the lane the item was routed to (after SubmitBatch).
func (it *Item) Lane() route.Lane { return it.lane }

// Sender posts a request to Amplitude (amplitude.Client).
type Sender interface {
	Send(ctx context.Context, r amplitude.Route, events []amplitude.Event) amplitude.Result
	BodySize(n, sum int) int
}

var _ Sender = (*amplitude.Client)(nil)

// LaneOptions size one lane's requests.
type LaneOptions struct {
	MaxEvents   int
	MaxBytes    int
	Linger      time.Duration
	Concurrency int
}

// Options configure a Deliverer.
type Options struct {
	// Shards is the number of key-owning goroutines. The default of 4 keeps
	// per-event handoff cheap on small machines; order holds for any value.
	Shards        int
	Realtime      LaneOptions
	Batch         LaneOptions
	ThrottlePause time.Duration // how long a 429'd key is held back
	RetryInitial  time.Duration // first backoff after a retryable failure
	RetryMax      time.Duration // backoff cap
	// EventsPerSecond and RequestsPerSecond cap what the whole consumer
	// group sends to Amplitude; 0 disables. The Deliverer enforces its
	// share of them (SetOwnership), the whole caps until it is told one.
	EventsPerSecond   float64
	RequestsPerSecond float64
	Now               func() time.Time
}

func (o *Options) defaults() {
	if o.Shards <= 0 {
		o.Shards = 4
	}
	o.Shards = min(o.Shards, maxShards)
	if o.Realtime.MaxEvents <= 0 {
		o.Realtime.MaxEvents = 100
	}
	if o.Realtime.MaxBytes <= 0 {
		o.Realtime.MaxBytes = 500_000
	}
	if o.Realtime.Concurrency <= 0 {
		o.Realtime.Concurrency = 16
	}
	if o.Batch.MaxEvents <= 0 {
		o.Batch.MaxEvents = amplitude.MaxEventsPerRequest
	}
	if o.Batch.MaxBytes <= 0 {
		o.Batch.MaxBytes = 8_000_000
	}
	if o.Batch.Concurrency <= 0 {
		o.Batch.Concurrency = 4
	}
	if o.ThrottlePause <= 0 {
		o.ThrottlePause = 30 * time.Second
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = 100 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 30 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// ErrStopped is returned by SubmitBatch after Stop.
var ErrStopped = errors.New("deliverer stopped")

// Deliverer routes and sends events.
type Deliverer struct {
	opts    Options
	send    Sender
	policy  *route.Policy
	tracker *route.Tracker
	m       *metrics.Metrics
	log     zerolog.Logger

	shards []*shard
	jobs   [3]chan *job // indexed by route.Lane

	share *share // this replica's part of the project-wide caps

	userHolds     sync.Map // string(user_id) → time.Time: users Amplitude throttled
	userHoldCount atomic.Int64
	throttles     throttleBackoff // pauses of ids throttled again and again
	throttledKeys atomic.Int64
	fatal         atomic.Bool // Amplitude refuses the key or the URL

	acceptedCtr [3]prometheus.Counter // per lane; resolved once, incremented per event
	switchCtr   [3]prometheus.Counter // lane switches, by the lane switched to: thousands a second

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New returns a Deliverer. Call Start before SubmitBatch.
func New(opts Options, send Sender, policy *route.Policy, tracker *route.Tracker, m *metrics.Metrics, log zerolog.Logger) *Deliverer {
	opts.defaults()
	d := &Deliverer{
		opts:    opts,
		send:    send,
		policy:  policy,
		tracker: tracker,
		m:       m,
		log:     log.With().Str("component", "deliver").Logger(),
	}
	d.share = newShare(opts.EventsPerSecond, opts.RequestsPerSecond, m)
	d.ctx, d.cancel = context.WithCancel(context.Background())
	for range opts.Shards {
		d.shards = append(d.shards, newShard(d))
	}
	for _, l := range []route.Lane{route.Realtime, route.Batch} {
		d.jobs[l] = make(chan *job)
		d.acceptedCtr[l] = m.EventsForwarded.WithLabelValues(l.String(), metrics.OutcomeAccepted)
		d.switchCtr[l] = m.LaneSwitches.WithLabelValues(l.String())
	}
	return d
}

// Start launches the shard and sender goroutines.
func (d *Deliverer) Start() {
	for _, s := range d.shards {
		d.wg.Add(1)
		go func() { defer d.wg.Done(); s.run(d.ctx) }()
	}
	for l, n := range map[route.Lane]int{route.Realtime: d.opts.Realtime.Concurrency, route.Batch: d.opts.Batch.Concurrency} {
		for range n {
			d.wg.Add(1)
			go func() { defer d.wg.Done(); d.sender(l) }()
		}
	}
	d.wg.Add(1)
	go func() { defer d.wg.Done(); d.housekeeping() }()
}

// Stop cancels in-flight requests and waits for every goroutine to return.
// Unaccepted items are never acknowledged; Kafka redelivers them.
func (d *Deliverer) Stop() {
	d.cancel()
	d.wg.Wait()
}

// SetOwnership tells the Deliverer that its replica owns owned of the total
// partitions of the consumed topics, which sets its share of the
// project-wide caps to owned/total of them (see share). Safe for concurrent
// use; consume.Options.OwnershipChanged calls it.
func (d *Deliverer) SetOwnership(owned, total int) {
	d.share.setOwnership(owned, total)
}

// Healthy returns an error while Amplitude refuses our API key or URL.
func (d *Deliverer) Healthy() error {
	if d.fatal.Load() {
		return errors.New("amplitude refuses the API key or URL (403, invalid key or invalid path); delivery is stopped")
	}
	return nil
}

// SubmitBatch routes items, in their order, to a lane each and hands them
// to their keys' shards: each shard gets its share in one handoff instead of
// one per item (a channel operation, and often a goroutine wakeup, each).
// It blocks while a shard's queue is full, until ctx ends. An item too large
// for any request is rejected through its owner. When ctx ends or the
// Deliverer stops first, it returns the error and the items that were
// never handed over (whose owner must settle them itself); the others are
// delivered as usual. The items slice is not retained.
//
// at is when the items were fetched, the time their keys' rates count them
// at; SubmitBatch reads the clock when it is zero. One time for the whole
// batch: a fetch chunk is read at one instant, and an Item stays 32 bytes
// smaller without a time of its own (one is allocated per event).
func (d *Deliverer) SubmitBatch(ctx context.Context, items []*Item, at time.Time) (unhanded []*Item, err error) {
	if d.ctx.Err() != nil {
		// Checked first: the select below picks at random among ready
		// cases, and a shard's buffer may have room after Stop.
		return items, ErrStopped
	}
	if at.IsZero() {
		at = d.opts.Now()
	}
	ns := uint64(len(d.shards))
	var counts [maxShards]int
	kept := 0
	// While an event is decided, the router's table slots of the keys
	// prefetchAhead events ahead are loading (route.Policy.Prefetch).
	var ahead [prefetchAhead]route.Input
	input := func(i int) {
		it := items[i]
		in := &ahead[i%prefetchAhead]
		*in = route.Input{Device: it.Key, User: it.UserID, TimeMS: it.TimeMS, Override: it.Override, Lagging: it.Lagging}
		d.policy.Prefetch(in)
	}
	for i := range min(prefetchAhead, len(items)) {
		input(i)
	}
	for i, it := range items {
		in := ahead[i%prefetchAhead]
		if j := i + prefetchAhead; j < len(items) {
			input(j)
		}
		dec := d.policy.Decide(in, at)
		it.lane, it.pace = dec.Lane, dec.Pace
		it.hash = dec.Hash // the tracker hashed the key already
		if dec.Switched {
			if c := d.switchCtr[dec.Lane]; c != nil {
				c.Inc()
			}
		}
		size := d.send.BodySize(1, it.size())
		if size > d.opts.Batch.MaxBytes {
			it.lane = route.Auto // rejected below, in order
			continue
		}
		if it.lane == route.Realtime && size > d.opts.Realtime.MaxBytes {
			// Too big for an HTTP V2 request of its own: the Batch lane takes up to 20 MB.
			it.lane = route.Batch
		}
		counts[it.hash%ns]++
		kept++
	}
	// One backing array holds every shard's share, in item order within
	// each share: per-key order is kept, since a key has one shard.
	var offs, fill [maxShards]int
	for i := uint64(1); i < ns; i++ {
		offs[i] = offs[i-1] + counts[i-1]
	}
	fill = offs
	all := make([]*Item, kept)
	for _, it := range items {
		if it.lane == route.Auto {
			it.Owner.Rejected(it, amplitude.ReasonTooLarge, "event larger than a request may carry")
			continue
		}
		si := it.hash % ns
		all[fill[si]] = it
		fill[si]++
	}
	for si := range ns {
		if counts[si] == 0 {
			continue
		}
		share := all[offs[si]:fill[si]:fill[si]]
		if err := d.handoff(ctx, d.shards[si], share); err != nil {
			for sj := si; sj < ns; sj++ {
				unhanded = append(unhanded, all[offs[sj]:fill[sj]]...)
			}
			return unhanded, err
		}
	}
	return nil, nil
}

// maxShards bounds Options.Shards: SubmitBatch's scratch lives on the stack.
const maxShards = 64

// prefetchAhead is how many events ahead of the one being decided
// SubmitBatch prefetches the router's table slots, and half of it its
// entries: each stage gets four events (a Decide takes 100–200 ns) for its
// memory accesses to complete, few enough that the lines are still in
// cache when used. Slots only, four ahead, measured the same as eight;
// entries as well, at two and four, no better than slots alone (the slot
// was not in yet when its entry was looked up); at four and eight,
// 2-4 % less CPU per event end to end.
const prefetchAhead = 8

func (d *Deliverer) handoff(ctx context.Context, s *shard, share []*Item) error {
	select {
	case s.in <- share: // the common case, without the cost of a three-way select
		return nil
	default:
	}
	select {
	case s.in <- share:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-d.ctx.Done():
		return ErrStopped
	}
}

// userHeld returns until when user's events are held back, if they are.
func (d *Deliverer) userHeld(user []byte, now time.Time) (time.Time, bool) {
	if d.userHoldCount.Load() == 0 || len(user) == 0 { // no hold: the item's ids stay untouched
		return time.Time{}, false
	}
	v, ok := d.userHolds.Load(string(user))
	if !ok {
		return time.Time{}, false
	}
	until := v.(time.Time)
	return until, now.Before(until)
}

func (d *Deliverer) holdUser(user string, until time.Time) {
	if prev, loaded := d.userHolds.Swap(user, until); !loaded {
		d.userHoldCount.Add(1)
	} else if p := prev.(time.Time); p.After(until) {
		d.userHolds.Store(user, p)
	}
}

// housekeeping refreshes gauges and forgets expired user holds.
func (d *Deliverer) housekeeping() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
		}
		now := d.opts.Now()
		tracked, hot := d.tracker.Stats(now)
		d.m.TrackedKeys.Set(float64(tracked))
		d.m.HotKeys.Set(float64(hot))
		users := 0
		d.userHolds.Range(func(k, v any) bool {
			if !now.Before(v.(time.Time)) {
				// Only the expired hold: a sender may have just renewed it.
				if d.userHolds.CompareAndDelete(k, v) {
					d.userHoldCount.Add(-1)
				}
			} else {
				users++
			}
			return true
		})
		d.m.ThrottledKeys.Set(float64(d.throttledKeys.Load()) + float64(users))
		d.throttles.forget(now)
	}
}

// backoff returns a jittered exponential delay for attempt n (0-based).
func (d *Deliverer) backoff(n int) time.Duration {
	b := d.opts.RetryInitial << min(n, 20)
	if b <= 0 || b > d.opts.RetryMax {
		b = d.opts.RetryMax
	}
	// Full jitter in [b/2, b): retries from many senders don't synchronise.
	return b/2 + time.Duration(rand.Int64N(int64(b/2)+1))
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
