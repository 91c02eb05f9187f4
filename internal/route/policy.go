package route

import (
	"sync/atomic"
	"time"
)

// Lane is where an event goes.
type Lane uint8

const (
	// Auto lets the policy decide (only valid as an override value).
	Auto Lane = iota
	// Realtime is Amplitude's HTTP V2 API.
	Realtime
	// Batch is Amplitude's Batch Event Upload API.
	Batch
)

func (l Lane) String() string {
	switch l {
	case Realtime:
		return "realtime"
	case Batch:
		return "batch"
	}
	return "auto"
}

// ParseLane reads the `amplitude-api` message header value.
func ParseLane(v []byte) Lane {
	switch string(v) {
	case "batch", "Batch", "BATCH":
		return Batch
	case "realtime", "Realtime", "REALTIME", "httpapi":
		return Realtime
	}
	return Auto
}

// PolicyOptions configure the routing policy.
type PolicyOptions struct {
	// UserEPSMargin scales HotEPS for user keys while the group's user
	// rates are unknown (SetGroup(false)): a user's devices may be consumed
	// by other replicas, each of which sees only part of the user's rate,
	// so a user key runs hot earlier than a device key.
	UserEPSMargin float64
	// BackfillAge sends events whose own time is older than this to Batch; 0 = off.
	BackfillAge time.Duration
}

// Policy decides lanes. It is safe for concurrent use.
type Policy struct {
	tr      *Tracker
	opts    PolicyOptions
	userLim limits // for user keys: HotEPS×UserEPSMargin
	// group: the other replicas' user rates reach the tracker (SetGroup).
	group atomic.Bool
}

// SetGroup says whether the group's user rates reach the tracker
// (Tracker.SetRemote, from package userrate). While they do, a user key is
// hot above HotEPS summed over the group; while they do not, above
// HotEPS×UserEPSMargin of this replica's share of it.
func (p *Policy) SetGroup(on bool) { p.group.Store(on) }

// NewPolicy returns a Policy using tr for rates.
func NewPolicy(tr *Tracker, o PolicyOptions) *Policy {
	if o.UserEPSMargin <= 0 || o.UserEPSMargin > 1 {
		o.UserEPSMargin = 1
	}
	return &Policy{tr: tr, opts: o, userLim: tr.limitsFor(tr.opts.HotEPS * o.UserEPSMargin)}
}

// Input is what the policy looks at for one event.
type Input struct {
	Device   []byte // ordering key (device_id, or the user key when there is none)
	User     []byte // user_id, may be empty
	TimeMS   int64  // the event's own time; 0 when absent
	Override Lane   // from the amplitude-api header
	Lagging  bool   // the event's partition is catching up on lag

	// The keys' hashes, when Prefetch has computed them.
	hashed         bool
	deviceH, userH uint64
}

// Decision is the policy's answer.
type Decision struct {
	Lane     Lane
	Switched bool // the device key changed lane with this event
	Pace     bool // the device key runs fast enough that Batch pacing applies
	HotDelta int  // change in the number of hot keys caused by this event (−2..2)
	// Hash is the device key's Tracker.Hash, for callers that shard by key:
	// one hash per event serves both.
	Hash uint64
}

// Prefetch hashes in's keys into in, for Decide, and starts loading their
// table slots. A caller deciding a run of events calls it a few events
// ahead of Decide: the slots' cache misses then overlap each other and the
// work in between, instead of stalling each Decide in turn.
func (p *Policy) Prefetch(in *Input) {
	t := p.tr
	in.hashed = true
	in.deviceH = t.Hash(in.Device)
	t.prefetch(in.deviceH)
	if len(in.User) > 0 {
		in.userH = t.UserHash(in.User)
		t.prefetch(in.userH)
	}
}

// Decide counts the event against its keys' rates and picks its lane. Rates
// are counted whatever the lane, so a key that is forced to Batch by a header
// or a backfill still has an accurate rate when it returns to Auto.
func (p *Policy) Decide(in Input, now time.Time) Decision {
	t := p.tr
	sec := now.Unix()
	var d Decision
	userHot := false
	if len(in.User) > 0 {
		// Tracker.observe spelled out (see there), with the user seed.
		h := in.userH
		if !in.hashed {
			h = t.UserHash(in.User)
		}
		lim := &p.userLim
		if p.group.Load() {
			// The group's rate is known (SetRemote): a user is hot at
			// HotEPS, as a device is, counting every replica's events.
			lim = &t.lim
		}
		sh := t.shard(h)
		sh.mu.Lock()
		e := t.get(sh, h, sec)
		e.user = true
		changed, _, _ := t.count(e, sec, lim)
		userHot = e.hot
		sh.mu.Unlock()
		if changed {
			d.HotDelta += delta(userHot)
		}
	}
	var forced Lane
	switch {
	case in.Override != Auto:
		forced = in.Override
	case p.opts.BackfillAge > 0 && in.TimeMS > 0 && now.UnixMilli()-in.TimeMS > p.opts.BackfillAge.Milliseconds():
		forced = Batch
	case in.Lagging:
		forced = Batch
	}
	// Tracker.ObserveRoute, and Tracker.NeedsPacing on its rate.
	h := in.deviceH
	if !in.hashed {
		h = t.Hash(in.Device)
	}
	sh := t.shard(h)
	sh.mu.Lock()
	e := t.get(sh, h, sec)
	changed, cur, sum := t.count(e, sec, &t.lim)
	hot := e.hot
	lane, switched := e.route(uint8(forced), userHot)
	sh.mu.Unlock()
	if changed {
		d.HotDelta += delta(hot)
	}
	d.Lane, d.Switched, d.Hash = Lane(lane), switched, h
	d.Pace = cur >= t.lim.paceCur || sum >= t.lim.paceSum
	return d
}

func delta(hot bool) int {
	if hot {
		return 1
	}
	return -1
}
