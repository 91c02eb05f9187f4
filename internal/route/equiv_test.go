package route

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// refTracker is the tracker as it was before counts replaced float rates,
// incremental sums the per-event window sum and the hash table the Go map:
// keys by their bytes (no collisions), the user key "U\x00"+user, the rate
// a float compared with float thresholds. The tests below check that the
// tracker decides as it does, event by event.
type refTracker struct {
	opts TrackerOptions
	win  int64
	m    map[string]*refEntry
}

type refEntry struct {
	buckets  [numBuckets]uint16
	last     int64
	coolFrom int64
	hot      bool
	lane     uint8
}

func newRefTracker(o TrackerOptions) *refTracker {
	// NewTracker's defaults, from the Tracker it built.
	t := NewTracker(o)
	return &refTracker{opts: t.opts, win: t.win, m: map[string]*refEntry{}}
}

func (e *refEntry) advance(now int64) {
	if e.last == 0 || now-e.last >= numBuckets {
		e.buckets = [numBuckets]uint16{}
		e.last = now
		return
	}
	for s := e.last + 1; s <= now; s++ {
		e.buckets[s%numBuckets] = 0
	}
	if now > e.last {
		e.last = now
	}
}

func (e *refEntry) sum(now, w int64) int {
	n := 0
	for s := now - w + 1; s <= now; s++ {
		if s > e.last || s <= e.last-numBuckets {
			continue
		}
		n += int(e.buckets[s%numBuckets])
	}
	return n
}

func (t *refTracker) observe(key string, now time.Time, hotEPS float64) (Observation, *refEntry) {
	sec := now.Unix()
	e := t.m[key]
	if e == nil {
		e = &refEntry{}
		t.m[key] = e
	}
	if e.hot && e.coolFrom == 0 && e.last != 0 && sec-e.last >= t.win {
		e.coolFrom = e.last + t.win
	}
	e.advance(sec)
	if e.buckets[sec%numBuckets] < 0xffff {
		e.buckets[sec%numBuckets]++
	}
	cur := float64(e.buckets[sec%numBuckets])
	avg := float64(e.sum(sec, t.win)) / float64(t.win)
	rate := max(cur, avg)
	var o Observation
	switch {
	case !e.hot && rate > hotEPS:
		e.hot, e.coolFrom, o.Changed = true, 0, true
	case e.hot && rate < t.opts.CoolEPS*hotEPS/t.opts.HotEPS:
		if e.coolFrom == 0 {
			e.coolFrom = sec
		} else if time.Duration(sec-e.coolFrom)*time.Second >= t.opts.CoolHold {
			e.hot, e.coolFrom, o.Changed = false, 0, true
		}
	case e.hot:
		e.coolFrom = 0
	}
	o.Hot, o.Rate = e.hot, rate
	return o, e
}

func (t *refTracker) decide(po PolicyOptions, in Input, now time.Time) Decision {
	if po.UserEPSMargin <= 0 || po.UserEPSMargin > 1 {
		po.UserEPSMargin = 1
	}
	var d Decision
	userHot := false
	if len(in.User) > 0 {
		uo, _ := t.observe("U\x00"+string(in.User), now, t.opts.HotEPS*po.UserEPSMargin)
		userHot = uo.Hot
		if uo.Changed {
			d.HotDelta += delta(uo.Hot)
		}
	}
	var forced Lane
	switch {
	case in.Override != Auto:
		forced = in.Override
	case po.BackfillAge > 0 && in.TimeMS > 0 && now.UnixMilli()-in.TimeMS > po.BackfillAge.Milliseconds():
		forced = Batch
	case in.Lagging:
		forced = Batch
	}
	o, e := t.observe(string(in.Device), now, t.opts.HotEPS)
	lane := uint8(forced)
	if lane == 0 {
		lane = 1
		if o.Hot || userHot {
			lane = 2
		}
	}
	prev := e.lane
	e.lane = lane
	if o.Changed {
		d.HotDelta += delta(o.Hot)
	}
	d.Lane, d.Switched = Lane(lane), prev != 0 && prev != lane
	d.Pace = t.opts.BatchEPS > 0 && o.Rate > t.opts.BatchEPS/4
	return d
}

func (t *refTracker) stats(now time.Time) (tracked, hot int) {
	sec := now.Unix()
	idle := t.win + int64(t.opts.CoolHold/time.Second) + 1
	for k, e := range t.m {
		if sec-e.last > idle {
			delete(t.m, k)
			continue
		}
		if e.hot {
			hot++
		}
	}
	return len(t.m), hot
}

// awkwardEPS are thresholds whose products and quotients round: thirds,
// tenths, values a float just above or below a whole rate.
var awkwardEPS = []float64{30, 25, 12.5, 1.0 / 3, 10.0 / 3, 0.1, 2.7, 7.3, 29.999999999999996, 30.000000000000004, 1, 0.5, 1e9, 0}

func TestTrackerDecidesAsTheFloatRatesOfTheReference(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	for round := range 300 {
		pick := func() float64 { return awkwardEPS[r.IntN(len(awkwardEPS))] }
		o := TrackerOptions{
			Window:   time.Duration(r.IntN(34)) * time.Second,
			HotEPS:   pick(),
			CoolEPS:  pick(),
			CoolHold: time.Duration(r.IntN(15)) * time.Second,
			MaxKeys:  1 << 20, // no eviction: the reference has none
		}
		if r.IntN(2) == 0 {
			o.BatchEPS = []float64{10, 100, 1000, 1000.0 / 3, 0.3}[r.IntN(5)]
		}
		po := PolicyOptions{UserEPSMargin: []float64{0, 0.8, 0.5, 1.0 / 3, 1, 2}[r.IntN(6)], BackfillAge: time.Duration(r.IntN(3)) * time.Minute}
		tr := NewTracker(o)
		p := NewPolicy(tr, po)
		ref := newRefTracker(o)
		msg := fmt.Sprintf("round %d: %+v %+v", round, o, po)

		now := time.Unix(1_800_000_000, 0)
		devices, users := 1+r.IntN(6), r.IntN(4)
		for i := range 3000 {
			switch x := r.IntN(1000); {
			case x < 600: // same second
				now = now.Add(time.Duration(r.IntN(3)) * time.Millisecond)
			case x < 900:
				now = now.Add(time.Duration(r.IntN(1500)) * time.Millisecond)
			case x < 970:
				now = now.Add(time.Duration(r.IntN(45)) * time.Second)
			default: // a caller whose clock is behind
				now = now.Add(-time.Duration(r.IntN(40)) * time.Second)
			}
			dev := fmt.Appendf(nil, "device-%d", r.IntN(devices))
			var user []byte
			if users > 0 && r.IntN(3) > 0 {
				user = fmt.Appendf(nil, "user-%d", r.IntN(users))
			}
			if r.IntN(10) == 0 {
				// Observe with any threshold, as a caller other than Decide may.
				eps := pick()
				want, _ := ref.observe(string(dev), now, eps)
				got := tr.Observe(dev, now, eps)
				require.Equal(t, want, got, "%s: event %d, Observe(%v)", msg, i, eps)
				continue
			}
			in := Input{Device: dev, User: user, Override: Lane(max(0, r.IntN(12)-9)), Lagging: r.IntN(20) == 0}
			if r.IntN(4) == 0 {
				in.TimeMS = now.Add(-time.Duration(r.IntN(180)) * time.Second).UnixMilli()
			}
			want := ref.decide(po, in, now)
			got := p.Decide(in, now)
			require.Equal(t, tr.Hash(dev), got.Hash, msg)
			got.Hash = 0
			require.Equal(t, want, got, "%s: event %d", msg, i)
			if i%500 == 0 {
				wt, wh := ref.stats(now)
				gt, gh := tr.Stats(now)
				require.Equal(t, []int{wt, wh}, []int{gt, gh}, "%s: Stats after event %d", msg, i)
			}
		}
	}
}

func TestTrackerCountsUpToTheBucketLimitAsTheReference(t *testing.T) {
	// 0xffff events in one second saturate the bucket; the window sum must
	// saturate with it and recover as the second leaves the window.
	o := TrackerOptions{Window: 3 * time.Second, HotEPS: 70000, CoolEPS: 60000, BatchEPS: 4 * 21845}
	tr, ref := NewTracker(o), newRefTracker(o)
	for s := range 6 {
		n := 0x10005
		if s > 1 {
			n = 3
		}
		for i := range n {
			want, _ := ref.observe("k", sec(s), 70000)
			got := tr.Observe([]byte("k"), sec(s), 70000)
			require.Equal(t, want, got, "second %d event %d", s, i)
			require.Equal(t, want.Rate > 21845, tr.NeedsPacing(got.Rate))
		}
	}
}

func TestLimitsDecideAsTheFloatComparisons(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 5))
	for range 2000 {
		w := int64(1 + r.IntN(31))
		hot := awkwardEPS[r.IntN(len(awkwardEPS))]
		if r.IntN(2) == 0 {
			// Near a whole rate per window, where rounding decides.
			hot = math.Nextafter(float64(r.IntN(2000))/float64(w), math.Inf(2*r.IntN(2)-1))
		}
		tr := &Tracker{opts: TrackerOptions{HotEPS: awkwardEPS[r.IntN(len(awkwardEPS))], CoolEPS: awkwardEPS[r.IntN(len(awkwardEPS))], BatchEPS: hot * 4}, win: w}
		l := tr.limitsFor(hot)
		cool := tr.opts.CoolEPS * hot / tr.opts.HotEPS
		for range 200 {
			// Counts around the thresholds, and anywhere.
			var n uint32
			switch r.IntN(4) {
			case 0:
				n = uint32(r.IntN(maxCount + 1))
			case 1:
				n = uint32(max(0, int(l.hotSum)+r.IntN(5)-2))
			case 2:
				n = uint32(max(0, int(l.coolSum)+r.IntN(5)-2))
			default:
				n = uint32(max(0, int(l.hotCur)+r.IntN(5)-2))
			}
			n = min(n, maxCount) // no count is larger
			avg := float64(n) / float64(w)
			require.Equal(t, avg > hot, n >= l.hotSum, "sum %d/%d > %v", n, w, hot)
			require.Equal(t, avg < cool, n < l.coolSum, "sum %d/%d < %v", n, w, cool)
			require.Equal(t, tr.NeedsPacing(avg), n >= l.paceSum, "sum %d/%d paces at %v", n, w, tr.opts.BatchEPS)
			require.Equal(t, float64(n) > hot, n >= l.hotCur, "cur %d > %v", n, hot)
			require.Equal(t, float64(n) < cool, n < l.coolCur, "cur %d < %v", n, cool)
			require.Equal(t, tr.NeedsPacing(float64(n)), n >= l.paceCur, "cur %d paces at %v", n, tr.opts.BatchEPS)
		}
	}
}

func TestTableFindsInsertsAndRemovesAsAMap(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	tb := table{a: newArena(3000 * 40)}
	// Each key's entry is told apart by its last, unique per insert: freed
	// entries are reused.
	model := map[uint64]int64{}
	// Few distinct low bits: long probe runs, which wrap around the end.
	key := func() uint64 { return uint64(r.IntN(3000))<<54 | uint64(r.IntN(40)) | 0xfff0 }
	evicted := 0 // keys evicted since the last check, still in model
	i := 0
	check := func() {
		t.Helper()
		for k, last := range model {
			e := tb.find(k)
			if e == nil && evicted > 0 {
				delete(model, k)
				evicted--
				continue
			}
			if e == nil || e.last != last {
				t.Fatalf("op %d: key %#x has entry %+v, want last %d", i, k, e, last)
			}
		}
		require.Zero(t, evicted, "op %d: evicted keys still found", i)
		require.Nil(t, tb.find(1<<40), "op %d", i)
	}
	for ; i < 40_000; i++ {
		h := key()
		// Mostly inserts, so the entries fill two chunks (up to ~1600 keys) and
		// the free list empties and fills again.
		switch op := r.IntN(64); {
		case op < 48:
			if _, ok := model[h]; !ok {
				e := tb.insert(h)
				require.Zero(t, *e, "op %d: a new key's entry, reused or not, starts zero", i)
				e.last = int64(i + 1)
				model[h] = e.last
			}
		case op < 63:
			if tb.n > 0 {
				tb.evict() // which key goes is random: the check below finds it
				evicted++
			}
		default:
			check()
			cut := int64(r.IntN(i + 1))
			tb.sweep(func(e *entry) bool { return e.last >= cut })
			for k, last := range model {
				if last < cut {
					delete(model, k)
				}
			}
		}
		require.Equal(t, len(model)-evicted, int(tb.n), "op %d", i)
		if i%64 == 0 { // a wrong table stays wrong: checking every key at every op is slow
			check()
		}
	}
}

func TestPolicyKeepsUserAndDeviceKeysApart(t *testing.T) {
	p, tr := testPolicy(PolicyOptions{UserEPSMargin: 0.5}) // user hot above 15/s
	for i := range 16 {
		p.Decide(Input{Device: fmt.Appendf(nil, "dev-%d", i), User: []byte("alice")}, sec(0))
	}
	// alice is a hot user; a device called alice is a new, cool key.
	o := tr.Observe([]byte("alice"), sec(0), 30)
	require.False(t, o.Hot)
	require.Equal(t, 1.0, o.Rate)
	d := p.Decide(Input{Device: []byte("alice")}, sec(0))
	require.Equal(t, Realtime, d.Lane)
}

func TestDecisionHashIsTheTrackersHashOfTheDeviceKey(t *testing.T) {
	p, tr := testPolicy(PolicyOptions{})
	tr.opts.BatchEPS = 10 // bucket of 300 tokens
	d := p.Decide(Input{Device: []byte("d"), User: []byte("u")}, sec(0))
	require.Equal(t, tr.Hash([]byte("d")), d.Hash)
	require.NotEqual(t, tr.Hash([]byte("u")), d.Hash)
	require.Zero(t, tr.BatchDelayHash(d.Hash, 300, sec(0)))
	require.Equal(t, time.Second, tr.BatchDelay([]byte("d"), 10, sec(0)), "BatchDelay and BatchDelayHash share the key's tokens")
}
