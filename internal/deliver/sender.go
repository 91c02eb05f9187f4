package deliver

import (
	"context"
	"time"

	"github.com/ampstream/ampstream/internal/amplitude"
	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/route"
)

type result uint8

const (
	resPending   result = iota
	resAccepted         // Amplitude took it
	resRejected         // handed to the owner for the DLQ
	resDeferred         // throttled: back to its key's queue under a hold
	resAbandoned        // shutdown or revocation: never acknowledged, Kafka redelivers
)

// job is one sealed request. A sender owns it until it hands it back to its
// shard with every item resolved.
type job struct {
	shard    *shard
	lane     route.Lane
	items    []*Item
	res      []result
	deferred int
	until    time.Time // end of the hold for deferred items
	// deferredKeys are the keys with deferred items: their later events in
	// this job are deferred too, whichever segment they are in.
	deferredKeys map[*keyState]bool
	run          []*Item // accept's scratch space
}

func (d *Deliverer) laneOpts(l route.Lane) LaneOptions {
	if l == route.Batch {
		return d.opts.Batch
	}
	return d.opts.Realtime
}

func (d *Deliverer) sender(l route.Lane) {
	var b bodies
	for {
		select {
		case <-d.ctx.Done():
			return
		case j := <-d.jobs[l]:
			d.execute(d.ctx, j, &b)
			j.shard.complete(j)
		}
	}
}

// bodies is a sender's memory for the requests it writes, reused from one
// request to the next.
type bodies struct {
	events []amplitude.Event
	heads  []byte // the insert_id heads of items with NoInsertID
}

// fill sets b.events to the events of items, in order. An item with
// NoInsertID gets its owner's insert_id as the first member of its object:
// its owner's head, written here, in place of its opening brace, then the
// rest of its event, which is not copied (nor read here): the request is
// the same, byte for byte, as if the event had been rewritten with it.
func (b *bodies) fill(items []*Item, seg []int) []amplitude.Event {
	b.events, b.heads = b.events[:0], b.heads[:0]
	for _, i := range seg {
		it := items[i]
		if !it.NoInsertID {
			b.events = append(b.events, amplitude.Event{Body: it.Raw})
			continue
		}
		// When append moves heads, those written before stay where they
		// were, intact: nothing writes there again during this request.
		start := len(b.heads)
		b.heads = it.Owner.AppendInsertIDHead(b.heads, it)
		b.events = append(b.events, amplitude.Event{Head: b.heads[start:len(b.heads):len(b.heads)], Body: it.Raw[1:]})
	}
	return b.events
}

// done drops the request's references to its events, which must not pin
// them (big batches' blocks, a megabyte each) once they are resolved.
func (b *bodies) done() {
	clear(b.events)
	b.events = b.events[:0]
}

func apiRoute(l route.Lane) amplitude.Route {
	if l == route.Batch {
		return amplitude.Batch
	}
	return amplitude.HTTPAPI
}

// execute resolves every item of j. Segments of the request are sent in
// order; a segment is only replaced by its own remainder or halves, so the
// events of one key always leave in arrival order.
func (d *Deliverer) execute(ctx context.Context, j *job, b *bodies) {
	j.res = make([]result, len(j.items))
	lane := j.lane.String()
	r := apiRoute(j.lane)

	all := make([]int, 0, len(j.items))
	for i, it := range j.items {
		if it.Owner.Revoked() {
			j.res[i] = resAbandoned
			continue
		}
		all = append(all, i)
	}
	segs := [][]int{all}
	attempt := 0
	for len(segs) > 0 {
		seg := segs[0]
		if len(seg) == 0 {
			segs = segs[1:]
			continue
		}
		if len(j.deferredKeys) > 0 {
			// A segment queued behind a throttled one (a 413 half) must not
			// carry a deferred key's later events ahead of its deferred ones.
			if seg = d.deferKeys(j, seg); len(seg) == 0 {
				segs = segs[1:]
				continue
			}
			segs[0] = seg
		}
		if ctx.Err() != nil {
			break
		}
		if b := d.share.maxEvents(); b > 0 && len(seg) > b {
			// Larger than a second of this replica's share: sent in order,
			// in pieces, so the group stays under its cap over any second
			// (plus one request), not only on average.
			segs = append([][]int{seg[:b:b], seg[b:]}, segs[1:]...)
			seg = segs[0]
		}
		if !d.share.wait(ctx, len(seg)) {
			break
		}
		if d.share.limited() {
			// The wait may have outlasted a revocation: what the partition's
			// next owner redelivers must not go out here too, on top of
			// the next owner's share.
			if seg = d.dropRevoked(j, seg); len(seg) == 0 {
				segs = segs[1:]
				continue
			}
			segs[0] = seg
		}
		res := d.send.Send(ctx, r, b.fill(j.items, seg))
		b.done()
		if res.Class != amplitude.Fatal && d.fatal.CompareAndSwap(true, false) {
			d.m.Unauthorized.Set(0)
			d.log.Info().Msg("amplitude accepts requests again; delivery resumed")
		}
		switch res.Class {
		case amplitude.Accepted:
			d.accept(j, seg)
			segs, attempt = segs[1:], 0

		case amplitude.Rejected:
			d.log.Warn().Str("lane", lane).Str("code", res.Code).Str("error", res.Message).Int("events", len(seg)).
				Msg("amplitude rejected a request without naming events; dead-lettering it")
			for _, i := range seg {
				d.reject(j, i, amplitude.ReasonRejected, "amplitude "+res.Code+": "+res.Message)
			}
			segs, attempt = segs[1:], 0

		case amplitude.TooLarge:
			if len(seg) == 1 {
				d.reject(j, seg[0], amplitude.ReasonTooLarge, "amplitude 413 for a single event")
				segs = segs[1:]
				continue
			}
			h := len(seg) / 2
			segs = append([][]int{seg[:h:h], seg[h:]}, segs[1:]...)

		case amplitude.InvalidEvents, amplitude.Throttled:
			rest := d.splitListed(j, seg, res)
			if len(rest) == len(seg) {
				// The lists named none of our events (indexes out of range):
				// resending the same request would loop, so it is rejected.
				for _, i := range seg {
					d.reject(j, i, amplitude.ReasonRejected, "amplitude "+res.Code+" named no event of the request: "+res.Message)
				}
				rest = nil
			}
			segs = append([][]int{rest}, segs[1:]...)
			attempt = 0

		case amplitude.Retryable:
			d.m.EventsForwarded.WithLabelValues(lane, metrics.OutcomeRetried).Add(float64(len(seg)))
			wait := d.backoff(attempt)
			if res.Status == 429 {
				// A 429 naming no event is a project-level limit: hold the whole request.
				wait = max(wait, d.opts.ThrottlePause)
			}
			if res.RetryAfter > 0 {
				wait = res.RetryAfter
			}
			attempt++
			if attempt == 1 || attempt%10 == 0 {
				d.log.Warn().Str("lane", lane).Str("code", res.Code).Str("error", res.Message).Int("attempt", attempt).
					Dur("backoff", wait).Msg("amplitude request failed; retrying the same events in order")
			}
			if !sleepCtx(ctx, wait) {
				segs = segs[:1]
			}

		case amplitude.Fatal:
			if d.fatal.CompareAndSwap(false, true) {
				d.m.Unauthorized.Set(1)
				d.log.Error().Str("code", res.Code).Str("error", res.Message).
					Msg("amplitude refuses the API key or URL; delivery stopped, nothing is committed; retrying slowly")
			}
			// Not a hot loop: retry at the backoff cap until the key is fixed
			// (for example a rotated secret) or shutdown.
			if !sleepCtx(ctx, d.opts.RetryMax) {
				segs = segs[:1]
			}
		}
	}
	for i := range j.res {
		if j.res[i] == resPending {
			j.res[i] = resAbandoned
		}
	}
}

// dropRevoked abandons the items of seg whose partition was given up and
// returns the others.
func (d *Deliverer) dropRevoked(j *job, seg []int) []int {
	var rest []int
	for k, i := range seg {
		if j.items[i].Owner.Revoked() {
			if rest == nil {
				rest = append(make([]int, 0, len(seg)), seg[:k]...)
			}
			j.res[i] = resAbandoned
			continue
		}
		if rest != nil {
			rest = append(rest, i)
		}
	}
	if rest == nil {
		return seg
	}
	return rest
}

// splitListed resolves the events a 400 or 429 names: dead-letters invalid
// ones and those over the daily quota, defers throttled ones (and every later
// event of a deferred key, so a key's order survives), and returns the rest
// to resend now.
func (d *Deliverer) splitListed(j *job, seg []int, res amplitude.Result) []int {
	lane := j.lane.String()
	throttled := make(map[int]bool, len(res.ThrottledEvents))
	for _, k := range res.ThrottledEvents {
		throttled[k] = true
	}
	now := d.opts.Now()
	// The pause of the longest-held id this 429 names; a Retry-After is
	// taken as it is.
	pause := d.opts.ThrottlePause
	if res.RetryAfter > 0 {
		pause = res.RetryAfter
	}
	idPause := func(id string) time.Duration {
		if res.RetryAfter > 0 {
			return res.RetryAfter
		}
		return d.throttles.pause(id, d.opts.ThrottlePause, now)
	}
	for dev := range res.ThrottledDevices {
		pause = max(pause, idPause("device\x00"+dev))
	}
	for u := range res.ThrottledUsers {
		p := idPause("user\x00" + u)
		pause = max(pause, p)
		d.holdUser(u, now.Add(p))
	}
	deferredBefore := j.deferred
	rest := make([]int, 0, len(seg))
	for k, i := range seg {
		it := j.items[i]
		if reason, ok := res.Invalid[k]; ok {
			d.reject(j, i, reason, "amplitude 400: "+res.Message)
			continue
		}
		if throttled[k] && overQuota(it, res) {
			d.m.ThrottledEvents.WithLabelValues(lane, amplitude.ReasonDailyQuota).Inc()
			d.reject(j, i, amplitude.ReasonDailyQuota, "id over Amplitude's daily quota")
			continue
		}
		if throttled[k] || j.deferredKeys[it.ks] {
			if throttled[k] {
				d.m.ThrottledEvents.WithLabelValues(lane, "eps").Inc()
			}
			if j.deferredKeys == nil {
				j.deferredKeys = map[*keyState]bool{}
			}
			j.deferredKeys[it.ks] = true
			d.deferItem(j, i)
			continue
		}
		rest = append(rest, i)
	}
	// The hold covers the longest pause of the job's 429s, so a shorter
	// pause of a later segment does not release an earlier deferred key early.
	if until := now.Add(pause); j.deferred > deferredBefore && until.After(j.until) {
		j.until = until
	}
	return rest
}

// deferKeys defers the events of seg whose key already has deferred events
// in j, and returns the others.
func (d *Deliverer) deferKeys(j *job, seg []int) []int {
	rest := make([]int, 0, len(seg))
	for _, i := range seg {
		if j.deferredKeys[j.items[i].ks] {
			d.deferItem(j, i)
			continue
		}
		rest = append(rest, i)
	}
	return rest
}

func (d *Deliverer) deferItem(j *job, i int) {
	j.res[i] = resDeferred
	j.deferred++
	d.m.EventsForwarded.WithLabelValues(j.lane.String(), metrics.OutcomeThrottled).Inc()
}

func overQuota(it *Item, res amplitude.Result) bool {
	if len(it.DeviceID) > 0 {
		if _, ok := res.QuotaDevices[string(it.DeviceID)]; ok {
			return true
		}
	}
	if len(it.UserID) > 0 {
		if _, ok := res.QuotaUsers[string(it.UserID)]; ok {
			return true
		}
	}
	return false
}

// accept resolves the items of seg as accepted, one Accepted call per run
// of consecutive items with the same owner: a shard takes its events from
// the partition goroutines in bursts, so runs are long, and finding each
// item's owner among all of the request's costs more than a call per run.
func (d *Deliverer) accept(j *job, seg []int) {
	d.acceptedCtr[j.lane].Add(float64(len(seg)))
	run := j.run[:0]
	for _, i := range seg {
		j.res[i] = resAccepted
		it := j.items[i]
		if len(run) > 0 && run[0].Owner != it.Owner {
			run[0].Owner.Accepted(run)
			clear(run)
			run = run[:0]
		}
		run = append(run, it)
	}
	if len(run) > 0 {
		run[0].Owner.Accepted(run)
		clear(run)
	}
	j.run = run[:0]
}

func (d *Deliverer) reject(j *job, i int, reason, detail string) {
	j.res[i] = resRejected
	it := j.items[i]
	d.m.EventsForwarded.WithLabelValues(j.lane.String(), metrics.OutcomeDLQ).Inc()
	it.Owner.Rejected(it, reason, detail)
}
