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

// LogEntry is one remembered log line.
type LogEntry struct {
	Time    time.Time
	Level   string
	Message string
}

// NewRecentErrors keeps the last n warnings and errors.
func NewRecentErrors(n int) *RecentErrors { return &RecentErrors{ring: make([]LogEntry, n)} }

// Run implements zerolog.Hook.
func (r *RecentErrors) Run(_ *zerolog.Event, level zerolog.Level, msg string) {
	if level < zerolog.WarnLevel || level == zerolog.NoLevel {
		return
	}
	r.mu.Lock()
	r.ring[r.next] = LogEntry{Time: time.Now(), Level: level.String(), Message: msg}
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
