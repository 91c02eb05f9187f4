package route

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// A user whose rate is mostly on other replicas is hot once SetRemote adds
// their part, and only while that part is fresh; Users reports the local
// part of user keys alone.
func TestPolicyCountsTheGroupsUserRate(t *testing.T) {
	tr := NewTracker(TrackerOptions{Window: 10 * time.Second, HotEPS: 10, CoolEPS: 5, CoolHold: 3 * time.Second, UserSeed: 42})
	p := NewPolicy(tr, PolicyOptions{UserEPSMargin: 0.5})
	p.SetGroup(true)
	user := []byte("user-spread-1")
	base := time.Unix(1_700_000_000, 0)
	// 4 events/s locally, one device each: below HotEPS, and below the
	// margin's 5/s too.
	send := func(sec int64) Decision {
		var d Decision
		for i := range 4 {
			d = p.Decide(Input{Device: fmt.Appendf(nil, "dev-%d", i), User: user}, base.Add(time.Duration(sec)*time.Second))
		}
		return d
	}
	for sec := int64(0); sec < 5; sec++ {
		require.Equal(t, Realtime, send(sec).Lane, "second %d", sec)
	}
	var got map[uint64]float64
	users := func(sec int64) {
		got = map[uint64]float64{}
		tr.Users(base.Add(time.Duration(sec)*time.Second), 1, func(h uint64, eps float64) { got[h] = eps })
	}
	users(5)
	require.Equal(t, map[uint64]float64{tr.UserHash(user): 4}, got, "the user at its local rate; devices (1/s each, and not users) are not reported")
	require.Equal(t, tr.UserHash(user), NewTracker(TrackerOptions{HotEPS: 10, UserSeed: 42}).UserHash(user), "same seed, same hash on every replica")

	// Other replicas send 8/s: 12/s in all is above HotEPS.
	tr.SetRemote(tr.UserHash(user), 8, base.Add(8*time.Second))
	require.Equal(t, Batch, send(5).Lane)
	users(6)
	require.Equal(t, 4.0, got[tr.UserHash(user)], "the report leaves the remote rate out")
	// The remote part expires at second 8; the user cools after the hold.
	lane := Batch
	for sec := int64(6); sec < 20 && lane == Batch; sec++ {
		lane = send(sec).Lane
		require.False(t, sec < 8 && lane == Realtime, "cooled at second %d while the group's rate is fresh", sec)
	}
	require.Equal(t, Realtime, lane)

	// Without the group's rates the margin applies: 6/s locally is hot.
	p.SetGroup(false)
	for sec := int64(30); sec < 32; sec++ {
		send(sec)
		d := p.Decide(Input{Device: []byte("dev-4"), User: user}, base.Add(time.Duration(sec)*time.Second))
		d = p.Decide(Input{Device: []byte("dev-5"), User: user}, base.Add(time.Duration(sec)*time.Second))
		if sec == 31 {
			require.Equal(t, Batch, d.Lane)
		}
	}
}

func TestUserHashDoesNotAllocate(t *testing.T) {
	tr := NewTracker(TrackerOptions{HotEPS: 10})
	u := []byte("some-user-id-of-typical-length-36chars")
	require.Zero(t, testing.AllocsPerRun(100, func() { _ = tr.UserHash(u) }))
}
