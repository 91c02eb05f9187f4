package deliver

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/ampstream/ampstream/internal/metrics"
)

// share enforces this replica's part of the project-wide caps
// (Options.EventsPerSecond and RequestsPerSecond). Replicas of one consumer
// group split a cap by the partitions they own: a replica owning o of the
// t partitions of the consumed topics may send cap × o/t, so the shares of
// the group add up to the cap whatever its size, and each replica's share
// follows the events it is given to send (partitions carry comparable
// traffic; see README "Limits across replicas" for skewed ones).
//
// A replica that gives up every partition keeps its last share for
// hold (the drain timeout): with Kafka's eager rebalancing every member
// gives up all its partitions at once and drains them before any member is
// given partitions again, so the shares in force while members drain are
// still those of the old assignment, which add up to the cap. Dropping to
// zero at once would stall every drain of the group. After the hold it has
// nothing left to send and its share is 0.
//
// The burst of each limiter is one second of the share (at least one event
// or request): a request larger than that is split first (maxEvents), so a
// replica never sends more than its share over any second plus one request.
type share struct {
	evCap, reqCap float64
	hold          time.Duration
	m             *metrics.Metrics

	mu       sync.Mutex
	fraction float64       // owned/total; 1 until the first ownership report
	told     bool          // an ownership report came
	holdEnd  time.Time     // set while keeping the share of a drained assignment
	changed  chan struct{} // closed and replaced when fraction changes
	ev, req  *rate.Limiter // nil when the cap is off
}

func newShare(evCap, reqCap float64, hold time.Duration, m *metrics.Metrics) *share {
	s := &share{evCap: evCap, reqCap: reqCap, hold: hold, m: m, fraction: 1, changed: make(chan struct{})}
	if evCap > 0 {
		s.ev = rate.NewLimiter(0, 1)
	}
	if reqCap > 0 {
		s.req = rate.NewLimiter(0, 1)
	}
	s.apply()
	return s
}

// burst is one second of rate, at least 1.
func burst(r float64) int {
	return max(1, int(math.Min(r, math.MaxInt32)))
}

// apply sets the limiters and gauges to the current fraction, with empty
// buckets: a share change is a rebalance, during which every replica
// idled and saved up tokens; spent all at once as the new assignment
// starts, they would add a second's worth of the cap on top of it. Called
// with mu held, or before s is shared.
func (s *share) apply() {
	now := time.Now()
	set := func(l *rate.Limiter, r float64, g interface{ Set(float64) }) {
		l.SetLimitAt(now, rate.Limit(r))
		l.SetBurstAt(now, burst(r))
		if tok := int(l.TokensAt(now)); tok > 0 {
			l.AllowN(now, tok)
		}
		g.Set(r)
	}
	if s.ev != nil {
		set(s.ev, s.evCap*s.fraction, s.m.BudgetShareEvents)
	}
	if s.req != nil {
		set(s.req, s.reqCap*s.fraction, s.m.BudgetShareRequests)
	}
	s.m.BudgetShareRatio.Set(s.fraction)
	close(s.changed)
	s.changed = make(chan struct{})
}

// setOwnership records that this replica owns owned of total partitions.
func (s *share) setOwnership(owned, total int, now time.Time) {
	if total <= 0 || owned < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	first := !s.told
	s.told = true
	if owned == 0 && first {
		// A member given nothing to start with has nothing to drain.
		s.fraction = 0
		s.apply()
		return
	}
	if owned == 0 {
		if s.fraction > 0 && s.holdEnd.IsZero() {
			s.holdEnd = now.Add(s.hold)
		}
		return
	}
	s.holdEnd = time.Time{}
	s.fraction = float64(min(owned, total)) / float64(total)
	s.apply()
}

// tick ends an expired hold.
func (s *share) tick(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.holdEnd.IsZero() && !now.Before(s.holdEnd) {
		s.holdEnd = time.Time{}
		s.fraction = 0
		s.apply()
	}
}

// maxEvents is the most events one request may carry under the share: one
// second of it. 0 when there is no events cap.
func (s *share) maxEvents() int {
	if s.ev == nil {
		return 0
	}
	return s.ev.Burst()
}

// limited reports whether a cap is on.
func (s *share) limited() bool { return s.ev != nil || s.req != nil }

// wait blocks until the share allows one more request of n events, or ctx
// ends (false). With a share of 0 it waits for the share to change.
func (s *share) wait(ctx context.Context, n int) bool {
	if s.ev == nil && s.req == nil {
		return true
	}
	reqDone := s.req == nil
	for {
		s.mu.Lock()
		f, changed := s.fraction, s.changed
		s.mu.Unlock()
		if f == 0 {
			select {
			case <-ctx.Done():
				return false
			case <-changed:
				continue
			}
		}
		if !reqDone {
			if s.req.Wait(ctx) != nil {
				if ctx.Err() != nil {
					return false
				}
				continue // the share changed under the wait
			}
			reqDone = true
		}
		for n > 0 && s.ev != nil {
			// In pieces of at most the burst, which may have shrunk since
			// the request was cut.
			k := min(n, s.ev.Burst())
			if s.ev.WaitN(ctx, k) != nil {
				if ctx.Err() != nil {
					return false
				}
				break // the share changed under the wait: start over
			}
			n -= k
		}
		if n <= 0 || s.ev == nil {
			return true
		}
	}
}
