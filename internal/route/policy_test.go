package route

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func testPolicy(o PolicyOptions) (*Policy, *Tracker) {
	tr := testTracker(TrackerOptions{HotEPS: 30, CoolEPS: 20})
	return NewPolicy(tr, o), tr
}

func TestPolicySendsACoolKeyToRealtimeAndAHotKeyToBatch(t *testing.T) {
	p, _ := testPolicy(PolicyOptions{})
	in := Input{Device: []byte("d")}
	for i := range 30 {
		d := p.Decide(in, sec(0))
		require.Equal(t, Realtime, d.Lane, "event %d", i+1)
		require.False(t, d.Switched)
	}
	d := p.Decide(in, sec(0))
	require.Equal(t, Batch, d.Lane, "the 31st event in one second")
	require.True(t, d.Switched, "the key moved from realtime to batch")
	require.Equal(t, 1, d.HotDelta)
	d = p.Decide(in, sec(0))
	require.Equal(t, Batch, d.Lane)
	require.False(t, d.Switched)
	require.Zero(t, d.HotDelta)
}

func TestPolicyMakesAUserKeyHotAtHotEPSTimesTheMargin(t *testing.T) {
	p, _ := testPolicy(PolicyOptions{UserEPSMargin: 0.5}) // user hot above 15/s
	// Sixteen devices of one user, one event each: every device is cool.
	for i := range 15 {
		d := p.Decide(Input{Device: fmt.Appendf(nil, "dev-%d", i), User: []byte("alice")}, sec(0))
		require.Equal(t, Realtime, d.Lane, "event %d", i+1)
	}
	d := p.Decide(Input{Device: []byte("dev-15"), User: []byte("alice")}, sec(0))
	require.Equal(t, Batch, d.Lane, "alice's 16th event/s is above 30×0.5")
	require.Equal(t, 1, d.HotDelta, "the user key became hot")
	d = p.Decide(Input{Device: []byte("dev-0"), User: []byte("alice")}, sec(0))
	require.Equal(t, Batch, d.Lane, "every device of a hot user goes to Batch")
	d = p.Decide(Input{Device: []byte("dev-0"), User: []byte("bob")}, sec(0))
	require.Equal(t, Realtime, d.Lane, "another user on the same device is cool")
}

func TestPolicyUserMarginOutOfRangeMeansOne(t *testing.T) {
	for _, m := range []float64{0, -1, 2} {
		p, _ := testPolicy(PolicyOptions{UserEPSMargin: m})
		for i := range 30 {
			d := p.Decide(Input{Device: fmt.Appendf(nil, "dev-%d", i), User: []byte("u")}, sec(0))
			require.Equal(t, Realtime, d.Lane, "margin %v event %d", m, i+1)
		}
		d := p.Decide(Input{Device: []byte("dev-x"), User: []byte("u")}, sec(0))
		require.Equal(t, Batch, d.Lane, "margin %v", m)
	}
}

func TestPolicyHeaderOverrideWinsOverEveryRule(t *testing.T) {
	p, _ := testPolicy(PolicyOptions{BackfillAge: time.Hour})
	hot := []byte("hot")
	for range 40 {
		p.Decide(Input{Device: hot}, sec(0))
	}
	old := sec(0).Add(-2 * time.Hour).UnixMilli()

	d := p.Decide(Input{Device: hot, Override: Realtime, TimeMS: old, Lagging: true}, sec(0))
	require.Equal(t, Realtime, d.Lane, "a realtime header beats hot, backfill and lag")
	require.True(t, d.Switched)

	d = p.Decide(Input{Device: []byte("cold"), Override: Batch}, sec(0))
	require.Equal(t, Batch, d.Lane, "a batch header sends a cold key to Batch")
	require.False(t, d.Switched, "a key's first lane is no switch")
}

func TestPolicySendsBackfillOlderThanBackfillAgeToBatch(t *testing.T) {
	p, _ := testPolicy(PolicyOptions{BackfillAge: time.Hour})
	now := sec(0)
	cases := []struct {
		name   string
		timeMS int64
		want   Lane
	}{
		{"no event time", 0, Realtime},
		{"fresh", now.Add(-time.Minute).UnixMilli(), Realtime},
		{"exactly BackfillAge old", now.Add(-time.Hour).UnixMilli(), Realtime},
		{"older than BackfillAge", now.Add(-time.Hour - time.Millisecond).UnixMilli(), Batch},
		{"in the future", now.Add(time.Hour).UnixMilli(), Realtime},
	}
	for i, c := range cases {
		d := p.Decide(Input{Device: fmt.Appendf(nil, "d%d", i), TimeMS: c.timeMS}, now)
		require.Equal(t, c.want, d.Lane, c.name)
	}

	off, _ := testPolicy(PolicyOptions{})
	d := off.Decide(Input{Device: []byte("d"), TimeMS: 1}, now)
	require.Equal(t, Realtime, d.Lane, "BackfillAge 0 disables the rule")
}

func TestPolicySendsLaggingPartitionsToBatchAndBackWhenCaughtUp(t *testing.T) {
	p, _ := testPolicy(PolicyOptions{})
	k := []byte("d")
	d := p.Decide(Input{Device: k, Lagging: true}, sec(0))
	require.Equal(t, Batch, d.Lane)
	d = p.Decide(Input{Device: k}, sec(0))
	require.Equal(t, Realtime, d.Lane)
	require.True(t, d.Switched)
}

func TestPolicyCountsRatesWhateverTheLane(t *testing.T) {
	// Forced to Batch by a header, a key is still counted, so it is known
	// hot when the header goes away.
	p, _ := testPolicy(PolicyOptions{})
	k := []byte("d")
	for range 31 {
		p.Decide(Input{Device: k, Override: Batch}, sec(0))
	}
	d := p.Decide(Input{Device: k}, sec(0))
	require.Equal(t, Batch, d.Lane)
	require.False(t, d.Switched)
}

func TestPolicyReportsHotDeltaForDeviceAndUserTogether(t *testing.T) {
	p, tr := testPolicy(PolicyOptions{})
	in := Input{Device: []byte("d"), User: []byte("u")}
	sum := 0
	for range 31 {
		sum += p.Decide(in, sec(0)).HotDelta
	}
	require.Equal(t, 2, sum, "device and user key both became hot")
	// One event a second until both cool (window 10 s, hold 10 s).
	for s := 1; s <= 30; s++ {
		sum += p.Decide(in, sec(s)).HotDelta
	}
	require.Zero(t, sum)
	_, hot := tr.Stats(sec(30))
	require.Zero(t, hot)
}

func TestParseLaneReadsTheHeaderValues(t *testing.T) {
	for v, want := range map[string]Lane{
		"batch": Batch, "Batch": Batch, "BATCH": Batch,
		"realtime": Realtime, "Realtime": Realtime, "REALTIME": Realtime, "httpapi": Realtime,
		"": Auto, "auto": Auto, "bAtCh": Auto,
	} {
		require.Equal(t, want, ParseLane([]byte(v)), v)
	}
	require.Equal(t, "realtime", Realtime.String())
	require.Equal(t, "batch", Batch.String())
	require.Equal(t, "auto", Auto.String())
}

// Prefetch only hashes ahead of time: a prefetched event is decided
// exactly as the same event unprefetched, on the same keys' entries,
// prefetched or not, and mixed.
func TestPolicyDecidesPrefetchedEventsAsOthers(t *testing.T) {
	plain, _ := testPolicy(PolicyOptions{UserEPSMargin: 0.5})
	pre, tr := testPolicy(PolicyOptions{UserEPSMargin: 0.5})
	lanes := map[Lane]int{}
	switches := 0
	for i := range 400 {
		// Four devices of two users, first at 100 events/s, then at 5:
		// keys turn hot, then cool, in both policies at the same events.
		in := Input{Device: fmt.Appendf(nil, "dev-%d", i%4), User: fmt.Appendf(nil, "user-%d", i%2)}
		if i%7 == 0 {
			in.User = nil
		}
		now := sec(i / 100)
		if i >= 200 {
			now = sec(2 + (i-200)/5)
		}
		want := plain.Decide(in, now)
		if i%3 != 0 { // the others decided unprefetched, on the same entries
			pre.Prefetch(&in)
			require.Equal(t, tr.Hash(in.Device), in.deviceH)
		}
		got := pre.Decide(in, now)
		want.Hash = tr.Hash(in.Device) // each tracker has its own seed
		require.Equal(t, want, got, "event %d", i)
		lanes[got.Lane]++
		if got.Switched {
			switches++
		}
	}
	require.Positive(t, lanes[Batch])
	require.Positive(t, lanes[Realtime])
	require.GreaterOrEqual(t, switches, 2, "keys went hot and cooled down")
}
