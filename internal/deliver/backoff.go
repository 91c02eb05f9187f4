package deliver

import (
	"math/rand/v2"
	"sync"
	"time"
)

// maxThrottleDoublings bounds how far a repeatedly throttled id's pause
// grows: ThrottlePause × 2^3 (4 min with the default 30 s pause).
const maxThrottleDoublings = 3

// throttleBackoff grows the pause of a device or user id that Amplitude
// throttles again as soon as its previous pause is over: ThrottlePause,
// then twice, four and eight times it, each with up to a quarter more at
// random.
//
// Why: the replicas of a group each hold their own events of a throttled
// user and resend them together when the pause ends. If Amplitude counts
// throttled events toward the id's rate (the emulator does by default;
// its guidance to pause 30 s implies it), resends that add up to more than
// the limit within its window keep the id throttled for ever, however
// little the id offers meanwhile: a fixed pause never gets out of that.
// Doubling halves the group's resend rate each round until it fits the
// limit, and the jitter spreads the replicas' resends over the window.
type throttleBackoff struct {
	mu  sync.Mutex
	ids map[string]throttleStrike
}

type throttleStrike struct {
	n     int           // doublings of the current pause
	pause time.Duration // the current pause
	end   time.Time     // when it ends
}

// pause returns how long id must be held after a 429 at now, base being
// ThrottlePause. A 429 that arrives while the id's pause is still running
// (another request carried it meanwhile) keeps that pause; one that arrives
// within a pause's length after it ended doubles it; any later one starts
// again from base.
func (b *throttleBackoff) pause(id string, base time.Duration, now time.Time) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ids == nil {
		b.ids = map[string]throttleStrike{}
	}
	s, ok := b.ids[id]
	switch {
	case ok && now.Before(s.end):
		return s.end.Sub(now)
	case ok && now.Before(s.end.Add(s.pause)):
		s.n = min(s.n+1, maxThrottleDoublings)
	default:
		s.n = 0
	}
	s.pause = base
	if s.n > 0 {
		p := base << s.n
		s.pause = p + rand.N(p/4+1)
	}
	s.end = now.Add(s.pause)
	b.ids[id] = s
	return s.pause
}

// forget drops the ids whose last pause ended more than a pause ago: their
// next 429 starts from base anyway.
func (b *throttleBackoff) forget(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for id, s := range b.ids {
		if !now.Before(s.end.Add(s.pause)) {
			delete(b.ids, id)
		}
	}
}
