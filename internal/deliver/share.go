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
// The consumer reports a revoked partition only once it is released
// (drained and committed, consume.Options.OwnershipChanged), and the group
// gives it to its next owner only after that (cooperative rebalancing): a
// partition counts in exactly one replica's share at a time, while it
// drains too, so the shares add up to the cap through a rebalance.
//
// The burst of each limiter is one second of the share (at least one event
// or request): a request larger than that is split first (maxEvents), so a
// replica never sends more than its share over any second plus one request.
type share struct {
	evCap, reqCap float64
	m             *metrics.Metrics

	mu       sync.Mutex
	fraction float64       // owned/total; 1 until the first ownership report
	told     bool          // an ownership report came
	changed  chan struct{} // closed and replaced when fraction changes
	ev, req  *rate.Limiter // nil when the cap is off
}

func newShare(evCap, reqCap float64, m *metrics.Metrics) *share {
	s := &share{evCap: evCap, reqCap: reqCap, m: m, fraction: 1, changed: make(chan struct{})}
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
func (s *share) setOwnership(owned, total int) {
	if total <= 0 || owned < 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fraction = float64(min(owned, total)) / float64(total)
	s.apply()
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
