package consume

import (
	"context"
	"sync"
)

// budget caps the events and bytes fetched but not yet resolved, across all
// partitions. When it is exhausted, partitions stop fetching: lag stays in
// Kafka, not in memory.
type budget struct {
	mu        sync.Mutex
	events    int
	bytes     int
	maxEvents int
	maxBytes  int
	waiters   int
	wake      chan struct{}
}

func newBudget(maxEvents, maxBytes int) *budget {
	return &budget{maxEvents: maxEvents, maxBytes: maxBytes, wake: make(chan struct{})}
}

// acquireN takes events events of total size n at once, blocking until
// there is room or ctx ends. A group that exceeds a cap on its own (one
// event larger than the byte cap) is let through when nothing else is
// held, or it could never be consumed. It reports whether it had to wait.
func (b *budget) acquireN(ctx context.Context, events, n int) (waited bool, err error) {
	for {
		b.mu.Lock()
		if b.events == 0 || (b.events+events <= b.maxEvents && b.bytes+n <= b.maxBytes) {
			b.events += events
			b.bytes += n
			b.mu.Unlock()
			return waited, nil
		}
		b.waiters++
		wake := b.wake
		b.mu.Unlock()
		waited = true
		select {
		case <-ctx.Done():
			b.mu.Lock()
			if b.wake == wake { // not woken yet: still counted
				b.waiters--
			}
			b.mu.Unlock()
			return waited, ctx.Err()
		case <-wake:
		}
	}
}

// release returns one event of size n.
func (b *budget) release(n int) { b.releaseN(1, n) }

// releaseN returns events events of total size n.
func (b *budget) releaseN(events, n int) {
	b.mu.Lock()
	b.events -= events
	b.bytes -= n
	if b.waiters > 0 {
		// Wake every waiter; each re-checks. Only done when someone waits, so
		// the common path allocates nothing.
		close(b.wake)
		b.wake = make(chan struct{})
		b.waiters = 0
	}
	b.mu.Unlock()
}

func (b *budget) usage() (events, bytes int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.events, b.bytes
}
