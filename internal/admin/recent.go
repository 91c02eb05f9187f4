package admin

import (
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// RecentErrors is a zerolog hook that keeps the last warnings and errors for
// the status page. It holds at most its capacity; older entries drop off.
type RecentErrors struct {
	mu   sync.Mutex
	ring []LogEntry
	next int
	full bool
}

// LogEntry is one remembered log line; repeats of the newest line are
// folded into it (Count), so a burst of one warning does not push every
// other one out.
type LogEntry struct {
	Time    time.Time
	Level   string
	Message string
	Count   int
}

// NewRecentErrors keeps the last n warnings and errors.
func NewRecentErrors(n int) *RecentErrors { return &RecentErrors{ring: make([]LogEntry, n)} }

// Run implements zerolog.Hook.
func (r *RecentErrors) Run(_ *zerolog.Event, level zerolog.Level, msg string) {
	if level < zerolog.WarnLevel || level == zerolog.NoLevel {
		return
	}
	r.mu.Lock()
	if last := &r.ring[(r.next-1+len(r.ring))%len(r.ring)]; (r.next > 0 || r.full) && last.Message == msg && last.Level == level.String() {
		last.Count++
		last.Time = time.Now()
		r.mu.Unlock()
		return
	}
	r.ring[r.next] = LogEntry{Time: time.Now(), Level: level.String(), Message: msg, Count: 1}
	r.next = (r.next + 1) % len(r.ring)
	if r.next == 0 {
		r.full = true
	}
	r.mu.Unlock()
}

// Entries returns the remembered lines, newest first.
func (r *RecentErrors) Entries() []LogEntry {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.ring)
	}
	out := make([]LogEntry, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, r.ring[(r.next-i+len(r.ring))%len(r.ring)])
	}
	return out
}
