package userrate

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/ampstream/ampstream/internal/kafkatest"
	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/route"
)

// replica is one Sharer with its own tracker and policy, as in one app.
type replica struct {
	tr     *route.Tracker
	policy *route.Policy
	m      *metrics.Metrics
	sh     *Sharer
	stop   context.CancelFunc
	done   chan struct{}
	tp     *kafka.Transport
}

func startReplica(t *testing.T, brokers []string, topic string, seed uint64) *replica {
	t.Helper()
	tr := route.NewTracker(route.TrackerOptions{Window: 10 * time.Second, HotEPS: 10, CoolEPS: 5, CoolHold: 30 * time.Second, UserSeed: seed})
	r := &replica{tp: &kafka.Transport{}, tr: tr, policy: route.NewPolicy(tr, route.PolicyOptions{UserEPSMargin: 1}), m: metrics.New(prometheus.NewRegistry()), done: make(chan struct{})}
	r.sh = New(Options{
		Brokers: brokers, Dialer: &kafka.Dialer{Timeout: 5 * time.Second}, Transport: r.tp,
		Topic: topic, Interval: 500 * time.Millisecond, HotEPS: 10, Seed: seed,
	}, tr, r.policy, r.m, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() { defer close(r.done); _ = r.sh.Run(ctx) }()
	t.Cleanup(r.Stop)
	return r
}

func (r *replica) Stop() {
	r.stop()
	<-r.done
	r.tp.CloseIdleConnections() // the caller's, as the app's is
}

// Two replicas each see 6 events/s of one user, 12/s in all: each alone
// keeps it on HTTP V2 (below 10/s), together they move it to Batch.
func TestReplicasSeeTheGroupsUserRate(t *testing.T) {
	k := kafkatest.Start(t)
	topic := kafkatest.UniqueName("userrate")
	seed := Seed("test-key")
	a := startReplica(t, k.Brokers, topic, seed)
	b := startReplica(t, k.Brokers, topic, seed)
	user := []byte("user-on-two-replicas")
	n := 0
	send := func(r *replica) route.Lane {
		n++
		return r.policy.Decide(route.Input{Device: fmt.Appendf(nil, "dev-%d", n%8), User: user}, time.Now()).Lane
	}
	// 3 events per 500 ms on each replica: 6/s.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(30 * time.Second)
	var laneA, laneB route.Lane
	for laneA != route.Batch || laneB != route.Batch {
		require.True(t, time.Now().Before(deadline), "the user never moved to Batch on both replicas (a %s, b %s)", laneA, laneB)
		<-tick.C
		for range 3 {
			laneA, laneB = send(a), send(b)
		}
	}
	require.True(t, a.sh.Healthy() && b.sh.Healthy())
	require.Equal(t, 2.0, testutil.ToFloat64(b.m.UserRateReplicas))
	require.Equal(t, 1.0, testutil.ToFloat64(b.m.UserRateTrackedKeys))
	require.Positive(t, testutil.ToFloat64(a.m.UserRatePublished))
	require.Zero(t, testutil.ToFloat64(a.m.UserRateErrors.WithLabelValues("decode")))

	// A stops: its tombstone removes its rate from b at once.
	a.Stop()
	require.Eventually(t, func() bool { return testutil.ToFloat64(b.m.UserRateTrackedKeys) == 0 }, 5*time.Second, 20*time.Millisecond)
	require.Equal(t, 1.0, testutil.ToFloat64(b.m.UserRateReplicas))
}

// With no broker the channel is unhealthy and the policy keeps the margin.
func TestUnreachableChannelFallsBack(t *testing.T) {
	r := startReplica(t, []string{"127.0.0.1:1"}, "userrate", 7)
	r.policy.SetGroup(true) // as if it had been healthy
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(r.m.UserRateErrors.WithLabelValues("publish")) > 0
	}, 20*time.Second, 20*time.Millisecond)
	require.False(t, r.sh.Healthy())
	require.Equal(t, 0.0, testutil.ToFloat64(r.m.UserRateHealthy))
	// The fallback: 8/s locally is hot under a margin of 0.5.
	tr := route.NewTracker(route.TrackerOptions{HotEPS: 10, CoolEPS: 5})
	p := route.NewPolicy(tr, route.PolicyOptions{UserEPSMargin: 0.5})
	var d route.Decision
	now := time.Now()
	for i := range 8 {
		d = p.Decide(route.Input{Device: fmt.Appendf(nil, "d%d", i), User: []byte("u1234")}, now)
	}
	require.Equal(t, route.Batch, d.Lane)
}

func TestReportRoundTripAndBounds(t *testing.T) {
	keys := []keyRate{{h: 1, eps: 2.5}, {h: 1 << 63, eps: 40}}
	b := encode(77, 3*time.Second, keys)
	require.Len(t, b, headerSize+keySize*2)
	fp, ttl, got, err := decode(b, 10)
	require.NoError(t, err)
	require.Equal(t, uint32(77), fp)
	require.Equal(t, 3*time.Second, ttl)
	require.Equal(t, keys, got)
	_, _, got, err = decode(b, 1)
	require.NoError(t, err)
	require.Len(t, got, 1, "a report is cut to MaxPublish keys")
	for _, bad := range [][]byte{nil, {2}, b[:len(b)-1], encode(77, 0, keys), encode(77, time.Second, []keyRate{{eps: -1}})} {
		_, _, _, err := decode(bad, 10)
		require.Error(t, err)
	}

	// Reports of another project are ignored; memory stays bounded.
	s := New(Options{Seed: 5, MaxKeys: 3}, route.NewTracker(route.TrackerOptions{HotEPS: 10}), nil, metrics.New(prometheus.NewRegistry()), zerolog.Nop())
	now := time.Now()
	s.receive([]byte("other"), encode(s.fp+1, time.Second, keys), now)
	require.Empty(t, s.reports)
	for i := range maxReplicas + 5 {
		s.receive(fmt.Appendf(nil, "r%d", i), encode(s.fp, time.Second, []keyRate{{h: uint64(i), eps: 3}}), now.Add(time.Duration(i)))
	}
	require.Len(t, s.reports, maxReplicas)
	s.policy = route.NewPolicy(s.tr, route.PolicyOptions{})
	s.apply(now.Add(time.Millisecond))
	require.Len(t, s.sums, 3, "at most MaxKeys remote keys")
}
