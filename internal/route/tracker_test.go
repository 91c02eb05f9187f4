package route

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// t0 is a whole second, so t0.Add(n*time.Second) is the n-th bucket.
var t0 = time.Unix(1_800_000_000, 0)

func sec(n int) time.Time { return t0.Add(time.Duration(n) * time.Second) }

func testTracker(o TrackerOptions) *Tracker {
	if o.Window == 0 {
		o.Window = 10 * time.Second
	}
	if o.HotEPS == 0 {
		o.HotEPS = 25
	}
	if o.CoolEPS == 0 {
		o.CoolEPS = 15
	}
	if o.CoolHold == 0 {
		o.CoolHold = 10 * time.Second
	}
	return NewTracker(o)
}

// observeN counts n events for key within second s and returns the last observation
// and how many times the hot state changed.
func observeN(tr *Tracker, key string, s, n int, hotEPS float64) (last Observation, changes int) {
	for i := range n {
		// Spread the events over the second; the bucket is the same.
		now := sec(s).Add(time.Duration(i) * time.Second / time.Duration(n+1))
		last = tr.Observe([]byte(key), now, hotEPS)
		if last.Changed {
			changes++
		}
	}
	return last, changes
}

func TestTrackerMarksAKeyHotOnTheFirstEventAboveHotEPSWithinTheFirstSecond(t *testing.T) {
	tr := testTracker(TrackerOptions{})
	k := []byte("device-1")
	for i := range 25 {
		o := tr.Observe(k, sec(0), 25)
		require.False(t, o.Hot, "event %d: 25 events/s is not above HotEPS 25", i+1)
		require.False(t, o.Changed)
	}
	o := tr.Observe(k, sec(0), 25)
	require.True(t, o.Hot, "the 26th event in the first second makes the key hot, without waiting for the window")
	require.True(t, o.Changed)
	o = tr.Observe(k, sec(0), 25)
	require.True(t, o.Hot)
	require.False(t, o.Changed, "Changed reports the transition only once")

	tracked, hot := tr.Stats(sec(0))
	require.Equal(t, 1, tracked)
	require.Equal(t, 1, hot)
}

func TestTrackerKeepsASteadyKeyJustBelowHotEPSCool(t *testing.T) {
	tr := testTracker(TrackerOptions{})
	for s := range 60 {
		o, changes := observeN(tr, "steady", s, 25, 25)
		require.False(t, o.Hot, "second %d", s)
		require.Zero(t, changes)
	}
}

func TestTrackerCoolsAKeyOnlyAfterCoolHoldBelowCoolEPS(t *testing.T) {
	tr := testTracker(TrackerOptions{}) // window 10 s, cool below 15 for 10 s
	o, _ := observeN(tr, "k", 0, 26, 25)
	require.True(t, o.Hot)
	// One event per second from second 1: the window average is (26+s)/10 < 15,
	// so the key starts cooling at second 1 and is cool at second 1+10.
	for s := 1; s <= 10; s++ {
		o, changes := observeN(tr, "k", s, 1, 25)
		require.True(t, o.Hot, "second %d: still inside CoolHold", s)
		require.Zero(t, changes, "second %d", s)
	}
	o, changes := observeN(tr, "k", 11, 1, 25)
	require.False(t, o.Hot, "CoolHold (10 s) has passed below CoolEPS")
	require.Equal(t, 1, changes)
}

func TestTrackerDoesNotFlapBetweenCoolEPSAndHotEPS(t *testing.T) {
	tr := testTracker(TrackerOptions{})
	total := 0
	o, c := observeN(tr, "k", 0, 40, 25)
	require.True(t, o.Hot)
	total += c
	// Between CoolEPS (15) and HotEPS (25), alternating 16 and 25 events/s
	// for a minute: the key stays hot and never changes state.
	for s := 1; s <= 60; s++ {
		n := 16
		if s%2 == 0 {
			n = 25
		}
		o, c = observeN(tr, "k", s, n, 25)
		require.True(t, o.Hot, "second %d", s)
		total += c
	}
	require.Equal(t, 1, total, "exactly one transition (to hot)")
}

func TestTrackerRestartsCoolHoldWhenTheRateRisesAboveCoolEPSAgain(t *testing.T) {
	tr := testTracker(TrackerOptions{Window: time.Second, CoolHold: 5 * time.Second})
	o, _ := observeN(tr, "k", 0, 30, 25)
	require.True(t, o.Hot)
	// Cool (1/s) for 4 s: cooling started at second 1, 4 s < 5 s hold.
	for s := 1; s <= 4; s++ {
		o, _ = observeN(tr, "k", s, 1, 25)
		require.True(t, o.Hot)
	}
	// One second at 20/s (above CoolEPS 15, below HotEPS 25) resets the hold.
	o, _ = observeN(tr, "k", 5, 20, 25)
	require.True(t, o.Hot)
	// Cooling restarts at second 6 and needs 5 full seconds again.
	for s := 6; s <= 10; s++ {
		o, _ = observeN(tr, "k", s, 1, 25)
		require.True(t, o.Hot, "second %d: the hold restarted at second 6", s)
	}
	o, c := observeN(tr, "k", 11, 1, 25)
	require.False(t, o.Hot)
	require.Equal(t, 1, c)
}

func TestTrackerScalesTheCoolThresholdWithALowerHotThreshold(t *testing.T) {
	// A user key uses HotEPS×margin; its cool threshold scales with it
	// (CoolEPS×margin), or a user key could never cool below CoolEPS.
	tr := testTracker(TrackerOptions{Window: time.Second, CoolHold: 2 * time.Second})
	o, _ := observeN(tr, "U\x00u", 0, 13, 12.5) // hot above 12.5
	require.True(t, o.Hot)
	// 10/s is above CoolEPS×0.5 = 7.5: stays hot however long.
	for s := 1; s <= 10; s++ {
		o, _ = observeN(tr, "U\x00u", s, 10, 12.5)
		require.True(t, o.Hot, "second %d", s)
	}
	// 7/s is below 7.5: cools after the 2 s hold.
	for s := 11; s <= 12; s++ {
		o, _ = observeN(tr, "U\x00u", s, 7, 12.5)
		require.True(t, o.Hot, "second %d", s)
	}
	o, _ = observeN(tr, "U\x00u", 13, 7, 12.5)
	require.False(t, o.Hot)
}

func TestTrackerSeesAWindowAverageAboveHotEPSEvenWithoutABurstySecond(t *testing.T) {
	// The rate is max(current second, window average): a key that sent 300
	// events in the previous seconds of the window is hot on a quiet second.
	tr := testTracker(TrackerOptions{Window: 10 * time.Second, HotEPS: 25})
	for s := range 9 {
		observeN(tr, "k", s, 25, 1e9) // count with a huge threshold: never hot
	}
	o := tr.Observe([]byte("k"), sec(9), 25)
	require.False(t, o.Hot, "226 events / 10 s = 22.6/s")
	tr2 := testTracker(TrackerOptions{Window: 10 * time.Second, HotEPS: 25})
	for s := range 9 {
		observeN(tr2, "k", s, 28, 1e9)
	}
	o = tr2.Observe([]byte("k"), sec(9), 25)
	require.True(t, o.Hot, "253 events / 10 s = 25.3/s, although this second has 1")
}

func TestTrackerForgetsBucketsOlderThanTheRing(t *testing.T) {
	tr := testTracker(TrackerOptions{Window: 10 * time.Second})
	observeN(tr, "k", 0, 200, 1e9)
	// 32 s later the ring wrapped: the old second must not alias the new one.
	o := tr.Observe([]byte("k"), sec(numBuckets), 25)
	require.False(t, o.Hot)
	o = tr.Observe([]byte("k"), sec(numBuckets+10), 25)
	require.False(t, o.Hot)
}

func TestTrackerEvictionBoundsTheKeysAtMaxKeys(t *testing.T) {
	const maxKeys = 640
	tr := testTracker(TrackerOptions{MaxKeys: maxKeys})
	for i := range 100_000 {
		tr.Observe(fmt.Appendf(nil, "device-%d", i), sec(i/1000), 25)
	}
	tracked, _ := tr.Stats(sec(100))
	// Each of the 64 shards holds at most MaxKeys/64+1 keys.
	require.LessOrEqual(t, tracked, maxKeys+len(tr.shards))
	require.Greater(t, tracked, maxKeys/2, "eviction drops one key per insert, not whole shards")
}

func TestTrackerEvictsIdleKeysBeforeActiveOnes(t *testing.T) {
	tr := testTracker(TrackerOptions{MaxKeys: 640})
	active := []byte("active-device")
	// One new key per second; the active key is seen every second too, so
	// it is always the most recently seen key of its shard and never the
	// least recently seen of a sample.
	for i := 1; i <= 20_000; i++ {
		tr.Observe(active, sec(i), 1e9)
		tr.Observe(fmt.Appendf(nil, "idle-%d", i), sec(i), 25)
	}
	h := tr.Hash(active)
	sh := tr.shard(h)
	sh.mu.Lock()
	e := sh.tab.find(h)
	sh.mu.Unlock()
	require.NotNil(t, e, "the active key survived 20000 evictions")
	require.Equal(t, sec(20_000).Unix(), e.last, "and kept its state")
}

func TestTrackerStatsDropsKeysIdleLongerThanWindowPlusCoolHold(t *testing.T) {
	tr := testTracker(TrackerOptions{Window: 10 * time.Second, CoolHold: 5 * time.Second})
	observeN(tr, "hot", 0, 30, 25)
	observeN(tr, "cool", 0, 1, 25)
	observeN(tr, "recent", 10, 1, 25)

	tracked, hot := tr.Stats(sec(16)) // idle 16 s = window + hold + 1: kept
	require.Equal(t, 3, tracked)
	require.Equal(t, 1, hot)

	tracked, hot = tr.Stats(sec(17))
	require.Equal(t, 1, tracked, "only the key seen at second 10 is left")
	require.Zero(t, hot)

	// A dropped key starts again from nothing.
	o := tr.Observe([]byte("hot"), sec(17), 25)
	require.False(t, o.Hot)
}

func TestTrackerSetLaneReportsSwitchesOnly(t *testing.T) {
	tr := testTracker(TrackerOptions{})
	k := []byte("k")
	require.False(t, tr.SetLane(k, uint8(Realtime)), "an untracked key has no lane")
	tr.Observe(k, sec(0), 25)
	require.False(t, tr.SetLane(k, uint8(Realtime)), "the first lane is not a switch")
	require.False(t, tr.SetLane(k, uint8(Realtime)))
	require.True(t, tr.SetLane(k, uint8(Batch)))
	require.False(t, tr.SetLane(k, uint8(Batch)))
	require.True(t, tr.SetLane(k, uint8(Realtime)))
}

func TestTrackerBatchDelayPacesAKeyAtBatchEPS(t *testing.T) {
	tr := testTracker(TrackerOptions{BatchEPS: 10}) // bucket of 300 tokens
	k := []byte("k")
	require.Zero(t, tr.BatchDelay(k, 1, sec(0)), "an untracked key is not paced")
	tr.Observe(k, sec(0), 25)

	require.Zero(t, tr.BatchDelay(k, 300, sec(0)), "a full bucket holds 30 s worth")
	require.Equal(t, 100*time.Millisecond, tr.BatchDelay(k, 1, sec(0)))
	require.Equal(t, time.Second, tr.BatchDelay(k, 10, sec(0)))
	// A refused request takes no tokens: after 1 s, 10 tokens are there.
	require.Zero(t, tr.BatchDelay(k, 10, sec(1)))
	require.Equal(t, 100*time.Millisecond, tr.BatchDelay(k, 1, sec(1)))
	require.Zero(t, tr.BatchDelay(k, 1, sec(1).Add(100*time.Millisecond)))
	// The bucket refills to its cap and no further.
	require.Zero(t, tr.BatchDelay(k, 300, sec(100)))
	require.Greater(t, tr.BatchDelay(k, 1, sec(100)), time.Duration(0))

	off := testTracker(TrackerOptions{})
	off.Observe(k, sec(0), 25)
	require.Zero(t, off.BatchDelay(k, 1_000_000, sec(0)), "BatchEPS 0 disables pacing")
}

func TestNewTrackerBoundsTheWindowToTheRing(t *testing.T) {
	tr := NewTracker(TrackerOptions{Window: time.Hour, HotEPS: 1, CoolEPS: 1})
	require.Equal(t, int64(numBuckets-1), tr.win)
	tr = NewTracker(TrackerOptions{Window: 100 * time.Millisecond, HotEPS: 1, CoolEPS: 1})
	require.Equal(t, int64(1), tr.win)
}

func TestTrackerIsSafeForConcurrentUse(t *testing.T) {
	tr := testTracker(TrackerOptions{MaxKeys: 1000, BatchEPS: 10})
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 5000 {
				k := fmt.Appendf(nil, "k%d", (i*(g+1))%1500)
				tr.Observe(k, sec(i/100), 25)
				tr.SetLane(k, uint8(Batch))
				tr.BatchDelay(k, 1, sec(i/100))
				if i%1000 == 0 {
					tr.Stats(sec(i / 100))
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	tracked, _ := tr.Stats(sec(50))
	require.LessOrEqual(t, tracked, 1000+len(tr.shards))
}

func TestTrackerDoesNotCoolABurstingKeyInTheMiddleOfItsBurst(t *testing.T) {
	// 40 events at the start of every 10th second: each burst is above
	// HotEPS within its second, the window average (4/s) is below CoolEPS.
	// The key is hot once and stays hot: cooling it on a burst's first
	// event and heating it again 26 events later would switch its lane
	// twice per burst.
	tr := testTracker(TrackerOptions{})
	changes := 0
	for s := 0; s <= 60; s += 10 {
		o, c := observeN(tr, "bursty", s, 40, 25)
		require.True(t, o.Hot, "second %d", s)
		changes += c
	}
	require.Equal(t, 1, changes)
}

func TestTrackerCountsIdleTimeTowardsCoolHold(t *testing.T) {
	// Window 10 s, hold 10 s. After a burst at second 0 the window holds
	// no event from second 10 on: the key has been cooling since then, and
	// a key back after an idle spell is not held hot for another CoolHold.
	tr := testTracker(TrackerOptions{})
	o, _ := observeN(tr, "k", 0, 40, 25)
	require.True(t, o.Hot)
	o, _ = observeN(tr, "k", 15, 1, 25)
	require.True(t, o.Hot, "cooling since second 10, 5 s < hold")
	o, c := observeN(tr, "k", 20, 1, 25)
	require.False(t, o.Hot, "cool since second 10, for the 10 s hold")
	require.Equal(t, 1, c)

	tr2 := testTracker(TrackerOptions{})
	observeN(tr2, "k", 0, 40, 25)
	o, _ = observeN(tr2, "k", 20, 1, 25)
	require.False(t, o.Hot, "back after 20 s idle: cool at once")
}

func TestTrackerEntryAndShardKeepTheirSizes(t *testing.T) {
	// entry's size is the tracker's memory per key (see entry); a shard
	// fills a cache line, so neighbouring locks don't share one.
	require.Equal(t, uintptr(104), unsafe.Sizeof(entry{}))
	require.Equal(t, uintptr(64), unsafe.Sizeof(trackerShard{}))
	require.Equal(t, uintptr(16), unsafe.Sizeof(slot{}))
	require.Zero(t, 104*chunkSize%8192, "a chunk fills whole pages")
	// Neither holds a pointer, so the collector does not scan them.
	for _, typ := range []reflect.Type{reflect.TypeFor[entry](), reflect.TypeFor[slot]()} {
		for f := range typ.Fields() {
			k := f.Type.Kind()
			if k == reflect.Array {
				k = f.Type.Elem().Kind()
			}
			require.True(t, k >= reflect.Bool && k <= reflect.Float64, "%s.%s holds no pointer", typ, f.Name)
		}
	}
}

func TestTableEvictsTheLeastRecentlySeenKeyNearTheHome(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 2))
	for round := range 200 {
		tb := table{a: newArena(4096)}
		// Seconds around the wrap of the slots' 32 bits in half the rounds.
		base := uint32(1_800_000_000)
		if round%2 == 1 {
			base = 1<<32 - 300
		}
		lasts := map[uint64]uint32{}
		for range 1000 {
			h := r.Uint64()
			last := base + uint32(r.IntN(600))
			tb.insertSlot(h, last)
			lasts[h] = last
		}
		for range 100 {
			h := r.Uint64()
			mask := uint64(len(tb.slots) - 1)
			block := h & mask &^ 7
			var near []slot // the keys in the 8 slots around h's home
			for p := block; p < block+8; p++ {
				if s := tb.slots[p]; s.i != 0 {
					near = append(near, s)
				}
			}
			n := tb.n
			tb.evictNear(h)
			require.Equal(t, n-1, tb.n)
			var gone []uint64
			for k := range lasts {
				if tb.findSlot(k) == nil {
					gone = append(gone, k)
				}
			}
			require.Len(t, gone, 1, "one key evicted")
			victim := lasts[gone[0]]
			delete(lasts, gone[0])
			for _, s := range near {
				require.LessOrEqual(t, int32(victim-s.last), int32(0),
					"evicted a key seen at %d, the home's block had one seen at %d", victim, s.last)
			}
		}
	}
}

func TestTrackerEvictionKeepsTheRecentKeys(t *testing.T) {
	const maxKeys = 6400
	tr := testTracker(TrackerOptions{MaxKeys: maxKeys})
	const keys = 20 * maxKeys
	for i := range keys {
		tr.Observe(fmt.Appendf(nil, "device-%d", i), sec(i/100), 25)
		if i%1000 == 0 {
			for j := range tr.shards {
				require.LessOrEqual(t, tr.shards[j].tab.n, tr.perCap)
			}
		}
	}
	// Keys are seen once each, in order: LRU keeps the last maxKeys. Count
	// how many of the survivors are among the last 2×maxKeys: 98% or more
	// (random eviction would keep 1-e⁻² ≈ 86%).
	recent, tracked := 0, 0
	for i := range keys {
		k := fmt.Appendf(nil, "device-%d", i)
		h := tr.Hash(k)
		if tr.shard(h).tab.find(h) != nil {
			tracked++
			if i >= keys-2*maxKeys {
				recent++
			}
		}
	}
	require.LessOrEqual(t, tracked, maxKeys+len(tr.shards))
	require.Greater(t, tracked, maxKeys*9/10)
	t.Logf("%d of %d survivors among the last %d keys", recent, tracked, 2*maxKeys)
	require.Greater(t, recent, tracked*98/100, "evicts the least recently seen keys first, approximately")
}
