package deliver

import (
	"context"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/route"
)

func TestShareFollowsOwnedPartitions(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	s := newShare(400, 30, m)
	// No ownership report yet: the whole cap (a replica on its own).
	require.Equal(t, 400.0, testutil.ToFloat64(m.BudgetShareEvents))
	require.Equal(t, 400, s.maxEvents())

	s.setOwnership(4, 12)
	require.InDelta(t, 400.0/3, testutil.ToFloat64(m.BudgetShareEvents), 1e-9)
	require.InDelta(t, 10.0, testutil.ToFloat64(m.BudgetShareRequests), 1e-9)
	require.InDelta(t, 1.0/3, testutil.ToFloat64(m.BudgetShareRatio), 1e-9)
	require.Equal(t, 133, s.maxEvents(), "a request carries at most one second of the share")

	// Released (the consumer reports it once drained): a share of 0.
	s.setOwnership(0, 12)
	require.Equal(t, 0.0, testutil.ToFloat64(m.BudgetShareRatio))
	require.Equal(t, 0.0, testutil.ToFloat64(m.BudgetShareEvents))

	// With a share of 0 a request waits for the next assignment.
	done := make(chan bool, 1)
	go func() { done <- s.wait(context.Background(), 10) }()
	select {
	case <-done:
		t.Fatal("a request went out with a share of 0")
	case <-time.After(100 * time.Millisecond):
	}
	s.setOwnership(6, 12)
	select {
	case ok := <-done:
		require.True(t, ok)
	case <-time.After(5 * time.Second):
		t.Fatal("the request still waits after the share became positive")
	}
	require.InDelta(t, 200.0, testutil.ToFloat64(m.BudgetShareEvents), 1e-9)

	// A waiting request gives up when its context ends.
	s.setOwnership(0, 12)
	ctx, cancel := context.WithCancel(context.Background())
	go func() { done <- s.wait(ctx, 1) }()
	cancel()
	select {
	case ok := <-done:
		require.False(t, ok)
	case <-time.After(5 * time.Second):
		t.Fatal("wait ignored its context")
	}
}

func TestShareOfAMemberWithoutPartitionsIsZero(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	s := newShare(400, 0, m)
	s.setOwnership(0, 12) // more replicas than partitions
	require.Equal(t, 0.0, testutil.ToFloat64(m.BudgetShareRatio))
	require.Equal(t, 0.0, testutil.ToFloat64(m.BudgetShareEvents))
}

func TestShareRateHoldsOverTime(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	s := newShare(200, 0, m)
	s.setOwnership(1, 4) // 50 events/s, bursts of 50
	start := time.Now()
	sent := 0
	for time.Since(start) < 1500*time.Millisecond {
		n := min(s.maxEvents(), 20)
		require.True(t, s.wait(context.Background(), n))
		sent += n
	}
	el := time.Since(start).Seconds()
	// A full bucket (one second of share) plus the rate.
	require.LessOrEqual(t, float64(sent), 50+50*el+20, "sent %d in %.2fs", sent, el)
	require.GreaterOrEqual(t, float64(sent), 50*el-20)
}

// Under a budget, requests queue for their share: those whose partition is
// given up while they wait are abandoned, never sent on top of the share of
// the partition's next owner; the share splits a request larger than one
// second of it.
func TestBudgetDropsRevokedWaitersAndSplitsLargeRequests(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := testOptions()
		opts.EventsPerSecond = 40
		h := newHarness(t, opts, route.TrackerOptions{}, always200)
		defer h.d.Stop()
		h.d.SetOwnership(1, 4) // 10 events/s, requests of at most 10
		for k := range 50 {
			h.submit(fmt.Sprintf("k%d", k), route.Batch) // Batch requests hold up to 50
		}
		h.waitCalls(2)
		start := time.Now()
		h.own.mu.Lock()
		h.own.revoked = true
		h.own.mu.Unlock()
		time.Sleep(10 * time.Second) // fake time: every waiter wakes
		synctest.Wait()
		reqs := h.amp.requests()
		for _, r := range reqs {
			require.LessOrEqual(t, len(r.evs), 10)
		}
		sent := 0
		for _, r := range reqs {
			sent += len(r.evs)
		}
		require.LessOrEqual(t, sent, 30, "requests sent after the revocation at %s", start)
		require.Equal(t, 20.0, testutil.ToFloat64(h.d.acceptedCtr[route.Batch]))
	})
}
