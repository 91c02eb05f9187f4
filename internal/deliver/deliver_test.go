package deliver

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/ampstream/ampstream/internal/amplitude"
	"github.com/ampstream/ampstream/internal/route"
)

// Timers (linger, backoff, holds) run in fake time: every test but the Stop
// test runs in a synctest bubble, where time.Now is the bubble's clock and
// time advances only when every goroutine of the bubble is blocked.

func TestDeliversManyKeysOnBothLanesInSubmitOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testOptions(), route.TrackerOptions{}, always200)
		defer h.d.Stop()
		const producers, keysPer, perKey = 8, 8, 60
		var wg sync.WaitGroup
		for p := range producers {
			wg.Go(func() {
				// A producer owns its keys, as a partition does.
				for range perKey {
					for k := range keysPer {
						h.submit(fmt.Sprintf("p%d-k%d", p, k), laneOfKey(k))
					}
				}
			})
		}
		wg.Wait()
		total := producers * keysPer * perKey
		h.waitResolved(total)
		require.Empty(t, h.check(false))

		for _, r := range h.amp.requests() {
			lane := route.Realtime
			if r.route == amplitude.Batch {
				lane = route.Batch
			}
			require.LessOrEqual(t, len(r.evs), h.d.laneOpts(lane).MaxEvents)
			for _, e := range r.evs {
				var p, k int
				_, err := fmt.Sscanf(e.Key, "p%d-k%d", &p, &k)
				require.NoError(t, err)
				require.Equal(t, apiRoute(laneOfKey(k)), r.route, "%s went on the lane its override named", e.Key)
			}
		}
		require.Equal(t, total/2, h.events(route.Realtime))
		require.Equal(t, total/2, h.events(route.Batch))
		require.InDelta(t, float64(total/2), testutil.ToFloat64(h.d.acceptedCtr[route.Realtime]), 0)
		require.InDelta(t, float64(total/2), testutil.ToFloat64(h.d.acceptedCtr[route.Batch]), 0)
	})
}

// laneOfKey forces even keys to Realtime and odd keys to Batch.
func laneOfKey(k int) route.Lane {
	if k%2 == 1 {
		return route.Batch
	}
	return route.Realtime
}

func TestSealsARequestAfterLingerWhenItIsNotFull(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := testOptions()
		opts.Shards = 1
		opts.Realtime.Linger = 250 * time.Millisecond
		h := newHarness(t, opts, route.TrackerOptions{}, always200)
		defer h.d.Stop()
		start := time.Now()
		h.submit("a", route.Realtime)
		h.submit("b", route.Realtime)
		h.waitResolved(2)
		reqs := h.amp.requests()
		require.Len(t, reqs, 1, "both events in one request")
		require.Len(t, reqs[0].evs, 2)
		require.Equal(t, 250*time.Millisecond, reqs[0].at.Sub(start), "sent when the linger ran out")
	})
}

func TestSplits413RecursivelyAndRejectsTheOneTooLargeEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Amplitude takes at most 4 events per request and no event over 500 bytes.
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			if len(evs) > 4 || len(indexes(evs, func(e ev) bool { return e.size > 500 })) > 0 {
				return answer(413, `{"code":413,"error":"Payload too large"}`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		var big *Item
		for n := range 15 {
			for _, k := range []string{"a", "b", "c"} {
				pad := 0
				if k == "b" && n == 7 {
					pad = 600
				}
				it := h.submitItem(h.item(k, "", route.Batch, pad, false))
				if pad > 0 {
					big = it
				}
			}
		}
		h.waitResolved(45)
		rej := h.check(false)
		require.Equal(t, map[*Item]string{big: amplitude.ReasonTooLarge}, rej)
		require.Equal(t, forwarded(map[string]float64{"batch,accepted": 44, "batch,dlq": 1}),
			h.series("ampstream_events_forwarded_total"))
		for _, r := range h.amp.requests() {
			if r.res.Class == amplitude.Accepted {
				require.LessOrEqual(t, len(r.evs), 4)
			}
		}
	})
}

func TestRejectsTheEventsA400ListsAndResendsTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			bad := indexes(evs, func(e ev) bool { return e.Bad })
			if len(bad) > 0 {
				return answer(400, `{"code":400,"error":"Request missing required field","events_with_invalid_fields":{"time":`+jsonList(bad)+`}}`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		want := map[*Item]string{}
		for n := range 30 {
			for _, k := range []string{"a", "b"} {
				bad := n%7 == 3 && k == "a" || n == 12 && k == "b"
				it := h.submitItem(h.item(k, "", route.Realtime, 0, bad))
				if bad {
					want[it] = amplitude.ReasonInvalidField
				}
			}
		}
		h.waitResolved(60)
		require.Equal(t, want, h.check(false))
		// Every rejected event was sent exactly once: rejection is final.
		sent := map[string]int{}
		for _, r := range h.amp.requests() {
			for _, e := range r.evs {
				if e.Bad {
					sent[fmt.Sprint(e.Key, e.N)]++
				}
			}
		}
		for k, n := range sent {
			require.Equal(t, 1, n, k)
		}
	})
}

func TestRejectsAWhole400WithoutListsAndNeverResendsIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			if len(indexes(evs, func(e ev) bool { return e.Key == "doomed" })) > 0 {
				return answer(400, `{"code":400,"error":"Invalid request body"}`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		var doomed []*Item
		for range 25 {
			doomed = append(doomed, h.submit("doomed", route.Realtime))
		}
		h.submit("fine", route.Batch)
		h.waitResolved(26)
		rej := h.check(false)
		require.Len(t, rej, 25)
		for _, it := range doomed {
			require.Equal(t, amplitude.ReasonRejected, rej[it])
		}
		// 25 events at 10 per request: 3 requests for "doomed", each sent once.
		n := 0
		for _, r := range h.amp.requests() {
			if r.has("doomed") {
				n++
			}
		}
		require.Equal(t, 3, n, "a 400 that names no event is not retried")
	})
}

func TestHolds429dDeviceForThrottlePauseWhileOthersFlow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pause = 30 * time.Second
		var throttledAt time.Time
		var mu sync.Mutex
		opts := testOptions()
		opts.Shards = 1 // "hot" shares requests with the cold devices
		h := newHarness(t, opts, route.TrackerOptions{}, func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			mu.Lock()
			defer mu.Unlock()
			// Amplitude throttles "hot" for the first call it sees it in
			// and for 30 s after (the fake checks the deliverer waited).
			if slices := indexes(evs, func(e ev) bool { return e.Key == "hot" }); len(slices) > 0 {
				if throttledAt.IsZero() {
					throttledAt = time.Now()
					return throttle429(evs, "hot")
				}
				if time.Since(throttledAt) < pause {
					return throttle429(evs, "hot")
				}
			}
			return ok200(evs)
		})
		defer h.d.Stop()

		// Round 1: "hot" and two cold devices interleaved in the same requests.
		for range 6 {
			for _, k := range []string{"cold1", "hot", "cold2"} {
				h.submit(k, route.Realtime)
			}
		}
		h.waitResolved(12) // the cold devices, resent at once without "hot"
		start := time.Now()
		mu.Lock()
		throttled := throttledAt
		mu.Unlock()
		require.False(t, throttled.IsZero())
		require.Less(t, start.Sub(throttled), time.Second, "the cold devices did not wait for the pause")
		for _, it := range h.own.byKey["hot"] {
			require.Zero(t, h.own.fate(it), "hot is held")
		}

		// Round 2, during the hold: new events of "hot" queue behind the
		// held ones; the cold devices keep flowing.
		for range 6 {
			for _, k := range []string{"cold1", "hot", "cold2"} {
				h.submit(k, route.Realtime)
			}
		}
		h.waitResolved(24)
		require.Less(t, time.Since(start), pause, "round 2's cold events did not wait for hot")

		h.waitResolved(36)
		h.check(false)
		for _, it := range h.own.byKey["hot"] {
			f := h.own.fate(it)
			require.False(t, f.at.Before(throttledAt.Add(pause)), "hot#%d accepted inside the pause", it.Seq)
		}
		for _, r := range h.amp.requests() {
			if r.has("hot") && r.at.After(throttledAt) {
				require.False(t, r.at.Before(throttledAt.Add(pause)), "hot resent inside the pause")
			}
		}
		require.Zero(t, h.d.throttledKeys.Load(), "every hold was released")
		// The 429 answered once (the first call), "hot" then went through in one go.
		n := 0
		for _, r := range h.amp.requests() {
			if r.res.Status == 429 {
				n++
			}
		}
		require.Equal(t, 1, n)
	})
}

// A device throttled again each time its pause ends is held twice, four
// and eight times the pause (plus up to a quarter), never longer; one
// throttled long after its last pause starts again from the pause. With a
// fixed pause, the resends of a group's replicas could keep an id over
// Amplitude's limit for ever (throttleBackoff).
func TestRepeated429sDoubleTheThrottlePause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const pause = 30 * time.Second
		var mu sync.Mutex
		refuse := 5 // the next calls carrying "hot" that get a 429
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			mu.Lock()
			defer mu.Unlock()
			if refuse > 0 {
				refuse--
				return throttle429(evs, "hot")
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		h.submit("hot", route.Realtime)
		h.waitResolved(1)
		reqs := h.amp.requests()
		require.Len(t, reqs, 6)
		// Holds are released on the shard's 50 ms tick.
		for i, want := range []time.Duration{pause, 2 * pause, 4 * pause, 8 * pause, 8 * pause} {
			gap := reqs[i+1].at.Sub(reqs[i].at)
			require.GreaterOrEqual(t, gap, want, "resend %d", i+1)
			require.Less(t, gap, want+want/4+100*time.Millisecond, "resend %d", i+1)
		}

		// Long after: the next 429 pauses it for the pause again.
		time.Sleep(time.Hour)
		mu.Lock()
		refuse = 1
		mu.Unlock()
		h.submit("hot", route.Realtime)
		h.waitResolved(2)
		h.check(false)
		reqs = h.amp.requests()
		require.Len(t, reqs, 8)
		gap := reqs[7].at.Sub(reqs[6].at)
		require.GreaterOrEqual(t, gap, pause)
		require.Less(t, gap, pause+100*time.Millisecond)
	})
}

func TestRetryAfterOverridesTheThrottlePause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var first time.Time
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			if call == 0 {
				first = time.Now()
				r := throttle429(evs, "hot")
				r.RetryAfter = 90 * time.Second
				return r
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		h.submit("hot", route.Realtime)
		h.waitResolved(1)
		h.check(false)
		reqs := h.amp.requests()
		require.Len(t, reqs, 2)
		// Holds are released on the shard's 50 ms tick.
		require.GreaterOrEqual(t, reqs[1].at.Sub(first), 90*time.Second)
		require.Less(t, reqs[1].at.Sub(first), 90*time.Second+100*time.Millisecond)
	})
}

func TestRejectsDailyQuotaEventsAndDefersOnlyTheThrottledOnes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			spam := indexes(evs, func(e ev) bool { return e.Key == "spam" })
			if len(spam) > 0 {
				return answer(429, `{"code":429,"error":"Too many requests for some devices and users","throttled_devices":{"spam":1200},`+
					`"exceeded_daily_quota_devices":{"spam":500900},"throttled_events":`+jsonList(spam)+`}`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		for range 5 {
			h.submit("spam", route.Batch)
			h.submit("ok", route.Batch)
		}
		h.waitResolved(10)
		rej := h.check(false)
		require.Len(t, rej, 5)
		for _, it := range h.own.byKey["spam"] {
			require.Equal(t, amplitude.ReasonDailyQuota, rej[it])
		}
		require.Equal(t, map[string]float64{
			"ampstream_amplitude_throttled_events_total{lane=batch,reason=daily_quota}": 5,
		}, h.series("ampstream_amplitude_throttled_events_total"))
		require.Equal(t, forwarded(map[string]float64{"batch,accepted": 5, "batch,dlq": 5}),
			h.series("ampstream_events_forwarded_total"))
	})
}

func TestRetriesThe5xxRequestInOrderUntilItSucceeds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const failures = 3
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			if call < failures {
				return answer(503, `<html>Service Unavailable</html>`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		for range 10 {
			h.submit("a", route.Realtime)
		}
		h.waitResolved(10)
		h.check(false)
		reqs := h.amp.requests()
		require.Len(t, reqs, failures+1, "the same request, resent until the 200")
		for i, r := range reqs {
			require.Equal(t, reqs[0].evs, r.evs, "call %d resent the same events in the same order", i)
		}
		require.Equal(t, forwarded(map[string]float64{"realtime,accepted": 10, "realtime,retried": 30}),
			h.series("ampstream_events_forwarded_total"))
		for i := 1; i < len(reqs); i++ {
			gap := reqs[i].at.Sub(reqs[i-1].at)
			require.GreaterOrEqual(t, gap, h.d.opts.RetryInitial<<(i-1)/2, "backoff before call %d", i)
			require.LessOrEqual(t, gap, h.d.opts.RetryMax)
		}
	})
}

func TestHoldsAWholeRequestForThrottlePauseOnA429ThatNamesNoEvent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := testOptions()
		opts.Shards = 1
		h := newHarness(t, opts, route.TrackerOptions{}, func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			if call == 0 {
				return answer(429, `{"code":429,"error":"Rate limit exceeded"}`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		h.submit("a", route.Realtime)
		h.submit("b", route.Realtime)
		h.waitResolved(2)
		h.check(false)
		reqs := h.amp.requests()
		require.Len(t, reqs, 2)
		require.Equal(t, reqs[0].evs, reqs[1].evs)
		require.GreaterOrEqual(t, reqs[1].at.Sub(reqs[0].at), h.d.opts.ThrottlePause)
	})
}

func TestALaneSwitchWaitsForTheKeysEventsOnTheOtherLane(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Realtime answers 503 twice, then 200: the key's realtime events
		// stay unresolved for a while; its Batch events must wait (the fake
		// reports any request sent before the key's earlier events resolved).
		var rtCalls atomic.Int32
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, _ int, r amplitude.Route, evs []ev) amplitude.Result {
			if r == amplitude.HTTPAPI && rtCalls.Add(1) <= 2 {
				return answer(503, ``)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		for _, k := range []string{"a", "b", "c"} {
			for range 5 {
				h.submit(k, route.Realtime)
			}
			for range 5 {
				h.submit(k, route.Batch)
			}
			for range 3 {
				h.submit(k, route.Realtime)
			}
		}
		h.waitResolved(39)
		h.check(false)
		// Each key: realtime, then batch, then realtime again.
		for _, k := range []string{"a", "b", "c"} {
			var lanes []amplitude.Route
			for _, r := range h.amp.requests() {
				if r.has(k) && r.res.Class == amplitude.Accepted && (len(lanes) == 0 || lanes[len(lanes)-1] != r.route) {
					lanes = append(lanes, r.route)
				}
			}
			require.Equal(t, []amplitude.Route{amplitude.HTTPAPI, amplitude.Batch, amplitude.HTTPAPI}, lanes, k)
		}
	})
}

func TestPausesOnFatalAnswersWithoutAHotLoopAndRecovers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const fatalCalls = 5
		var healthDuring error
		var gaugeDuring map[string]float64
		var h *harness
		opts := testOptions()
		opts.RetryMax = 3 * time.Second
		h = newHarness(t, opts, route.TrackerOptions{}, func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			if call < fatalCalls {
				if call == fatalCalls-1 {
					healthDuring = h.d.Healthy()
					gaugeDuring = h.series("ampstream_amplitude_unauthorized")
				}
				return answer(401, `{"code":401,"error":"Invalid API key"}`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		require.NoError(t, h.d.Healthy())
		for range 5 {
			h.submit("a", route.Realtime)
		}
		h.waitResolved(5)
		require.Error(t, healthDuring, "unhealthy while Amplitude refuses the key")
		require.NoError(t, h.d.Healthy(), "healthy again after the first 200")
		require.Equal(t, map[string]float64{"ampstream_amplitude_unauthorized": 1}, gaugeDuring)
		require.Equal(t, map[string]float64{"ampstream_amplitude_unauthorized": 0}, h.series("ampstream_amplitude_unauthorized"))
		require.Empty(t, h.check(false), "nothing dead-lettered for a fatal answer")
		reqs := h.amp.requests()
		require.Len(t, reqs, fatalCalls+1)
		for i := 1; i < len(reqs); i++ {
			require.GreaterOrEqual(t, reqs[i].at.Sub(reqs[i-1].at), opts.RetryMax, "call %d came too soon: a hot loop", i)
		}
	})
}

func TestStopReturnsPromptlyWithARequestBlockedAndLeavesItsItemsUnresolved(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	started := make(chan struct{}, 1)
	h := newHarness(t, testOptions(), route.TrackerOptions{}, func(ctx context.Context, _ int, _ amplitude.Route, _ []ev) amplitude.Result {
		select {
		case started <- struct{}{}:
		default:
		}
		<-ctx.Done()
		return amplitude.Result{Class: amplitude.Retryable, Code: "timeout", Message: ctx.Err().Error()}
	})
	for range 5 {
		h.submit("a", route.Realtime)
	}
	h.submit("b", route.Batch)
	select {
	case <-started:
	case <-time.After(10 * time.Second):
		t.Fatal("no request reached Amplitude")
	}
	stopped := make(chan struct{})
	go func() { h.d.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("Stop is blocked behind an in-flight request")
	}
	require.Zero(t, h.own.resolvedCount(), "nothing accepted, nothing dead-lettered: Kafka redelivers")
	h.check(true)
	require.ErrorIs(t, h.d.Submit(context.Background(), h.item("c", "", route.Realtime, 0, false)), ErrStopped)
}

func TestSubmitAfterStopAlwaysReturnsErrStopped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testOptions(), route.TrackerOptions{}, always200)
		h.d.Stop()
		for range 50 {
			require.ErrorIs(t, h.d.Submit(context.Background(), h.item("a", "", route.Realtime, 0, false)), ErrStopped)
		}
	})
}

// revokedOwner is an owner that gave its partition up.
type revokedOwner struct{ *fakeOwner }

func (revokedOwner) Revoked() bool { return true }

func TestDropsRevokedItemsUnsentAndUnresolved(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := testOptions()
		opts.Shards = 1
		h := newHarness(t, opts, route.TrackerOptions{}, always200)
		defer h.d.Stop()
		var revoked []*Item
		for range 5 {
			it := h.item("a", "", route.Realtime, 0, false)
			it.Owner = revokedOwner{h.own}
			revoked = append(revoked, h.submitItem(it))
		}
		// The partition's next owner redelivers; its events flow.
		next := h.submit("a", route.Realtime)
		h.waitResolved(1)
		require.Equal(t, 1, h.own.fate(next).accepted)
		for _, it := range revoked {
			require.Zero(t, h.own.fate(it), "a revoked item is neither accepted nor rejected")
		}
		reqs := h.amp.requests()
		require.Len(t, reqs, 1)
		require.Equal(t, []ev{{Key: "a", N: 5, size: len(next.Raw)}}, reqs[0].evs, "revoked items were never sent")
	})
}

func TestRoutesAnEventTooLargeForRealtimeToBatchAndRejectsOneTooLargeForBatch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := testOptions()
		opts.Realtime.MaxBytes = 1000
		opts.Batch.MaxBytes = 5000
		h := newHarness(t, opts, route.TrackerOptions{}, always200)
		defer h.d.Stop()
		small := h.submitItem(h.item("a", "", route.Realtime, 0, false))
		mid := h.submitItem(h.item("a", "", route.Realtime, 2000, false))
		huge := h.submitItem(h.item("a", "", route.Realtime, 6000, false))
		last := h.submitItem(h.item("a", "", route.Realtime, 0, false))
		h.waitResolved(4)
		require.Equal(t, map[*Item]string{huge: amplitude.ReasonTooLarge}, h.check(false))
		require.Equal(t, route.Realtime, small.Lane())
		require.Equal(t, route.Batch, mid.Lane())
		require.Equal(t, route.Realtime, last.Lane())
	})
}

func TestSubmitBatchRejectsTheTooLargeEventInPlaceAndKeepsEachKeysOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		opts := testOptions()
		opts.Batch.MaxBytes = 5000
		h := newHarness(t, opts, route.TrackerOptions{}, always200)
		defer h.d.Stop()
		var items []*Item
		for i := range 40 {
			pad := 0
			if i == 17 {
				pad = 6000
			}
			items = append(items, h.item(fmt.Sprintf("k%d", i%7), "", route.Auto, pad, false))
		}
		unhanded, err := h.d.SubmitBatch(context.Background(), items, time.Time{})
		require.NoError(t, err)
		require.Empty(t, unhanded)
		h.waitResolved(40)
		require.Equal(t, map[*Item]string{items[17]: amplitude.ReasonTooLarge}, h.check(false))
	})
}

func TestSubmitBatchAfterStopHandsNothingOver(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testOptions(), route.TrackerOptions{}, always200)
		h.d.Stop()
		items := []*Item{h.item("a", "", route.Auto, 0, false), h.item("b", "", route.Auto, 0, false)}
		unhanded, err := h.d.SubmitBatch(context.Background(), items, time.Time{})
		require.ErrorIs(t, err, ErrStopped)
		require.Equal(t, items, unhanded)
	})
}

func TestPacesABatchKeyAtBatchEPSAndDeliversEveryEventInOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 2 events/s into a bucket of 60: 100 events need ≈ 20 s more.
		h := newHarness(t, testOptions(), route.TrackerOptions{BatchEPS: 2}, always200)
		defer h.d.Stop()
		start := time.Now()
		for range 100 {
			h.submit("paced", route.Batch)
		}
		h.submit("other", route.Batch)
		h.waitResolved(101)
		h.check(false)
		last := h.own.fate(h.own.byKey["paced"][99]).at
		require.GreaterOrEqual(t, last.Sub(start), 19*time.Second, "paced at BatchEPS")
		require.Less(t, h.own.fate(h.own.byKey["other"][0]).at.Sub(start), time.Second, "other keys are not paced")
	})
}

func TestHoldsEveryEventOfAThrottledUser(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var first time.Time
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			if call == 0 {
				first = time.Now()
				idx := indexes(evs, func(e ev) bool { return e.User == "alice" })
				return answer(429, `{"code":429,"error":"Too many requests for some devices and users","throttled_users":{"alice":31},"throttled_events":`+jsonList(idx)+`}`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		h.submitItem(h.item("d1", "alice", route.Realtime, 0, false))
		h.waitCalls(1)
		synctest.Wait() // the deliverer has read the 429
		// alice's other devices are held too, until the pause ends.
		late := h.submitItem(h.item("d2", "alice", route.Realtime, 0, false))
		bob := h.submitItem(h.item("d3", "bob", route.Realtime, 0, false))
		h.waitResolved(3)
		h.check(false)
		require.Less(t, h.own.fate(bob).at.Sub(first), time.Second)
		require.GreaterOrEqual(t, h.own.fate(late).at.Sub(first), h.d.opts.ThrottlePause)
	})
}

func TestDefersAThrottledKeysEventsInTheOther413HalfToo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// One request [a0 b0 a1 b1 a2 b2 a3 b3]: 413, then a 429 for "a" in
		// the first half. a2 and a3, in the second half, must wait behind
		// a0 and a1 instead of going out with b2 and b3.
		opts := testOptions()
		opts.Shards = 1
		opts.Batch.MaxEvents = 8
		h := newHarness(t, opts, route.TrackerOptions{}, func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			switch {
			case len(evs) > 4:
				return answer(413, `{"code":413,"error":"Payload too large"}`)
			case call == 1:
				return throttle429(evs, "a")
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		for range 4 {
			h.submit("a", route.Batch)
			h.submit("b", route.Batch)
		}
		h.waitResolved(8)
		h.check(false)
		var sent [][]string
		for _, r := range h.amp.requests() {
			var evs []string
			for _, e := range r.evs {
				evs = append(evs, fmt.Sprint(e.Key, e.N))
			}
			sent = append(sent, evs)
		}
		require.Equal(t, [][]string{
			{"a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3"}, // 413
			{"a0", "b0", "a1", "b1"},                         // 429 for a
			{"b0", "b1"},
			{"b2", "b3"}, // a2 and a3 deferred with a0 and a1
			{"a0", "a1", "a2", "a3"},
		}, sent)
	})
}

func TestKeepsTheLongestPauseWhenTwo429sOfOneRequestDeferKeys(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 413 splits [a b c d] into [a b] and [c d]; the first half's 429
		// says Retry-After 120 s for a, the second's the default 30 s for c.
		// a must not come back after 30 s.
		opts := testOptions()
		opts.Shards = 1
		opts.Batch.MaxEvents = 4
		var first time.Time
		h := newHarness(t, opts, route.TrackerOptions{}, func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			switch call {
			case 0:
				first = time.Now()
				return answer(413, `{"code":413,"error":"Payload too large"}`)
			case 1:
				r := throttle429(evs, "a")
				r.RetryAfter = 120 * time.Second
				return r
			case 3:
				return throttle429(evs, "c")
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		for _, k := range []string{"a", "b", "c", "d"} {
			h.submit(k, route.Batch)
		}
		h.waitResolved(4)
		h.check(false)
		require.GreaterOrEqual(t, h.own.fate(h.own.byKey["a"][0]).at.Sub(first), 120*time.Second)
	})
}

// lingerOptions is one shard with the default lingers: 5 ms realtime, 200 ms
// Batch.
func lingerOptions() Options {
	opts := testOptions()
	opts.Shards = 1
	opts.Realtime.Linger = 5 * time.Millisecond
	opts.Batch.Linger = 200 * time.Millisecond
	return opts
}

func TestARealtimeRequestLeavesAfterItsOwnLingerWhileABatchRequestLingers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// The shard has one timer. A Batch request (200 ms linger) opened
		// first must not delay a realtime request (5 ms) opened after it.
		opts := lingerOptions()
		h := newHarness(t, opts, route.TrackerOptions{}, always200)
		defer h.d.Stop()
		start := time.Now()
		h.submit("hot", route.Batch)
		h.submit("cold", route.Realtime)
		h.waitResolved(2)
		h.check(false)
		for _, r := range h.amp.requests() {
			want := 200 * time.Millisecond
			if r.route == amplitude.HTTPAPI {
				want = 5 * time.Millisecond
			}
			require.Equal(t, want, r.at.Sub(start), "%v request", r.route.Lane())
		}
	})
}

func TestARequestThatAnotherLanesEventWaitsBehindLeavesOnceIdle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// A device alternates lanes and nothing else arrives: each Batch
		// request it waits behind leaves after the realtime linger of
		// idleness, not after the Batch linger. Before, its four events took
		// 200 + 5 + 200 + 5 ms.
		opts := lingerOptions()
		h := newHarness(t, opts, route.TrackerOptions{}, always200)
		defer h.d.Stop()
		start := time.Now()
		for _, l := range []route.Lane{route.Batch, route.Realtime, route.Batch, route.Realtime} {
			h.submit("a", l)
		}
		h.waitResolved(4)
		h.check(false)
		var got []time.Duration
		var routes []amplitude.Route
		for _, r := range h.amp.requests() {
			got, routes = append(got, r.at.Sub(start)), append(routes, r.route)
		}
		require.Equal(t, []amplitude.Route{amplitude.Batch, amplitude.HTTPAPI, amplitude.Batch, amplitude.HTTPAPI}, routes)
		ms := time.Millisecond
		require.Equal(t, []time.Duration{5 * ms, 10 * ms, 15 * ms, 20 * ms}, got)
	})
}

func TestABatchRequestStillFillsUpWhileEventsKeepJoiningIt(t *testing.T) {
	// A backlog: a realtime event of "a" waits behind the Batch request, but
	// other keys' events join it every 500 µs, so it leaves full (50
	// events), not after the realtime linger with a handful. A realtime
	// linger of 0 must not seal it after every share either.
	for _, rtLinger := range []time.Duration{5 * time.Millisecond, 0} {
		t.Run(rtLinger.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				opts := lingerOptions()
				opts.Realtime.Linger = rtLinger
				h := newHarness(t, opts, route.TrackerOptions{}, always200)
				defer h.d.Stop()
				start := time.Now()
				h.submit("a", route.Batch)
				h.submit("a", route.Realtime)
				const every = 500 * time.Microsecond
				for i := range opts.Batch.MaxEvents - 1 {
					time.Sleep(every) // fake time
					h.submit(fmt.Sprintf("k%02d", i), route.Batch)
				}
				h.waitResolved(opts.Batch.MaxEvents + 1)
				h.check(false)
				reqs := h.amp.requests()
				require.Len(t, reqs, 2)
				require.Equal(t, amplitude.Batch, reqs[0].route)
				require.Len(t, reqs[0].evs, opts.Batch.MaxEvents)
				require.Equal(t, time.Duration(opts.Batch.MaxEvents-1)*every, reqs[0].at.Sub(start))
				require.Equal(t, amplitude.HTTPAPI, reqs[1].route)
			})
		})
	}
}

func TestARequestWaitedBehindStillFillsUpWhileTheLaneIsBusy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Both Batch senders are busy and a full request waits for one: the
		// request that "a"'s realtime event waits behind would only queue
		// behind it if it left early, so it keeps filling. Once the lane
		// caught up, it leaves after the realtime linger of idleness.
		opts := lingerOptions()
		release := make(chan struct{})
		h := newHarness(t, opts, route.TrackerOptions{}, func(ctx context.Context, _ int, r amplitude.Route, evs []ev) amplitude.Result {
			if r == amplitude.Batch {
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		busy := (opts.Batch.Concurrency + 1) * opts.Batch.MaxEvents
		for i := range busy {
			h.submit(fmt.Sprintf("busy%03d", i), route.Batch)
		}
		synctest.Wait()
		start := time.Now()
		h.submit("a", route.Batch)
		h.submit("a", route.Realtime)
		time.Sleep(50 * time.Millisecond) // fake time
		for i := range 10 {
			h.submit(fmt.Sprintf("late%02d", i), route.Batch)
		}
		close(release)
		h.waitResolved(busy + 12)
		h.check(false)
		for _, r := range h.amp.requests() {
			if r.route == amplitude.Batch && r.has("a") {
				require.True(t, r.has("late09"), "a's Batch request left before the events submitted 50 ms later: %v", r.keys())
				require.Equal(t, 55*time.Millisecond, r.at.Sub(start), "released at 50 ms, idle for 5 ms")
				return
			}
		}
		t.Fatal("no Batch request carried a")
	})
}

func TestStopReturnsPromptlyDuringARetryBackoff(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	opts := testOptions()
	opts.RetryInitial, opts.RetryMax = time.Hour, time.Hour
	h := newHarness(t, opts, route.TrackerOptions{}, func(context.Context, int, amplitude.Route, []ev) amplitude.Result {
		return answer(503, ``)
	})
	h.submit("a", route.Realtime)
	h.waitCalls(1)
	stopped := make(chan struct{})
	go func() { h.d.Stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(2 * time.Second):
		t.Fatal("Stop waits for an hour-long backoff")
	}
	require.Zero(t, h.own.resolvedCount())
	require.Len(t, h.amp.requests(), 1)
}

// A key that turns hot switches to Batch once, and is counted once, under
// the lane it switched to.
func TestALaneSwitchIsCountedUnderItsNewLane(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testOptions(), route.TrackerOptions{}, always200)
		defer h.d.Stop()
		for range 40 { // 30 events/s is the harness's hot threshold
			h.submit("hot-device", route.Auto)
		}
		h.waitResolved(40)
		require.InDelta(t, 1, testutil.ToFloat64(h.d.m.LaneSwitches.WithLabelValues(route.Batch.String())), 0)
		require.InDelta(t, 0, testutil.ToFloat64(h.d.m.LaneSwitches.WithLabelValues(route.Realtime.String())), 0)
	})
}

// An item with NoInsertID leaves with its owner's insert_id as the first
// member of its event, written into each request (a 413's halves too), and
// the others exactly as they came.
func TestItemsWithoutInsertIDGetTheirOwnersInEveryRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHarness(t, testOptions(), route.TrackerOptions{}, func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			if len(evs) > 3 {
				return answer(413, `{"code":413,"error":"Payload too large"}`)
			}
			return ok200(evs)
		})
		defer h.d.Stop()
		var items []*Item
		for n := range 10 {
			for _, k := range []string{"a", "b"} {
				it := h.item(k, "", route.Batch, 0, false)
				it.NoInsertID = n%2 == 0
				items = append(items, h.submitItem(it))
			}
		}
		h.waitResolved(len(items))
		require.Empty(t, h.check(false))
		sent := map[string]int{}
		for _, r := range h.amp.requests() {
			for _, e := range r.evs {
				it := h.own.byKey[e.Key][e.N]
				want := ""
				if it.NoInsertID {
					want = "iid-" + strconv.Itoa(int(it.Seq))
				}
				require.Equal(t, want, e.IID, "insert_id of %s#%d", e.Key, e.N)
				if it.NoInsertID {
					require.Equal(t, len(it.Raw)+len(`"insert_id":"",`)+len(want), e.size, "%s#%d: the event and its member", e.Key, e.N)
				} else {
					require.Equal(t, len(it.Raw), e.size)
				}
				if r.res.Class == amplitude.Accepted {
					sent[e.Key]++
				}
			}
		}
		require.Equal(t, map[string]int{"a": 10, "b": 10}, sent)
		require.Greater(t, len(h.amp.requests()), 7, "the 413s were split")
	})
}

// Once its items are resolved, delivery keeps no reference to their events
// (a sender's reused request memory, a shard's queues): an event's bytes may
// be a view of a record batch of a megabyte, which the consumer's budget
// stops counting when its events are resolved. Checked for plain 200s, 413
// splits, 429 holds and retried 503s, on both lanes.
func TestResolvedEventsAreNotKeptAlive(t *testing.T) {
	var calls atomic.Int64
	for _, tc := range []struct {
		name    string
		answer  answerFunc
		senders int // per lane; 0: testOptions'
	}{
		{"200", always200, 0},
		{"slow 200, one sender", func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			time.Sleep(5 * time.Millisecond) // Amplitude's latency: sealed requests queue in their shards
			return ok200(evs)
		}, 1},
		{"413 split", func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			if len(evs) > 3 {
				return answer(413, `{"code":413,"error":"Payload too large"}`)
			}
			return ok200(evs)
		}, 0},
		{"429 hold", func(_ context.Context, call int, _ amplitude.Route, evs []ev) amplitude.Result {
			if call < 3 {
				return throttle429(evs, "b")
			}
			return ok200(evs)
		}, 0},
		{"503 retried", func(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
			if calls.Add(1)%3 == 0 {
				return answer(503, `{"code":503,"error":"unavailable"}`)
			}
			return ok200(evs)
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := testOptions()
			opts.ThrottlePause, opts.RetryInitial, opts.RetryMax = 20*time.Millisecond, 5*time.Millisecond, 20*time.Millisecond
			if tc.senders > 0 {
				opts.Shards, opts.Realtime.Concurrency, opts.Batch.Concurrency = 1, tc.senders, tc.senders
				opts.Realtime.MaxEvents, opts.Batch.MaxEvents = 2, 2
			}
			h := newHarness(t, opts, route.TrackerOptions{}, tc.answer)
			defer h.d.Stop()
			var events []weak.Pointer[byte]
			for n := range 40 {
				for i, k := range []string{"a", "b", "c"} {
					lane := []route.Lane{route.Auto, route.Batch, route.Realtime}[(n+i)%3]
					it := h.item(k, "", lane, 0, false)
					it.NoInsertID = n%2 == 0
					it.Raw = append(make([]byte, 0, 4096), it.Raw...) // an allocation of its own
					events = append(events, weak.Make(&it.Raw[:1][0]))
					h.submitItem(it)
				}
			}
			h.waitResolved(len(events))
			// The test's own references: the owner's record of every item.
			// An item delivery still holds keeps its event alive.
			h.own.mu.Lock()
			h.own.byKey, h.own.fates = nil, nil
			h.own.mu.Unlock()
			deadline := time.Now().Add(10 * time.Second)
			for {
				runtime.GC()
				alive := 0
				for _, w := range events {
					if w.Value() != nil {
						alive++
					}
				}
				if alive == 0 {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d resolved events are still reachable", alive, len(events))
				}
				time.Sleep(10 * time.Millisecond) // polled: the collector has no completion signal to wait on
			}
		})
	}
}
