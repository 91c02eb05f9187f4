package deliver

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/ampstream/ampstream/internal/amplitude"
	"github.com/ampstream/ampstream/internal/route"
)

// randomAmp answers at random: 200, 413, 400 with index lists, 400 without,
// 429 naming devices, users or daily quotas (all of a device's indexes, or
// only some), a 429 naming nothing, 5xx, 403. It remembers the reason each
// rejected event should get.
type randomAmp struct {
	mu   sync.Mutex
	rng  *rand.Rand
	want map[string]string // "key#n" → the rejection reason the answer implies
}

func (a *randomAmp) answer(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
	a.mu.Lock()
	defer a.mu.Unlock()
	id := func(i int) string { return fmt.Sprintf("%s#%d", evs[i].Key, evs[i].N) }
	p := a.rng.IntN(100)
	switch {
	case p < 45:
		return ok200(evs)

	case p < 55: // 413
		if len(evs) == 1 && a.rng.IntN(4) != 0 {
			return ok200(evs) // a single event is rarely too large
		}
		if len(evs) == 1 {
			a.want[id(0)] = amplitude.ReasonTooLarge
		}
		return answer(413, `{"code":413,"error":"Payload too large"}`)

	case p < 65: // 400 naming events
		lists := map[string]map[string][]int{"events_with_invalid_fields": {}, "events_with_missing_fields": {}}
		reasons := map[string]string{"events_with_invalid_fields": amplitude.ReasonInvalidField, "events_with_missing_fields": amplitude.ReasonMissingField}
		var silenced []int
		named := false
		for i := range evs {
			if a.rng.IntN(5) != 0 {
				continue
			}
			named = true
			switch a.rng.IntN(3) {
			case 0:
				lists["events_with_invalid_fields"]["time"] = append(lists["events_with_invalid_fields"]["time"], i)
				a.want[id(i)] = reasons["events_with_invalid_fields"]
			case 1:
				lists["events_with_missing_fields"]["event_type"] = append(lists["events_with_missing_fields"]["event_type"], i)
				a.want[id(i)] = reasons["events_with_missing_fields"]
			default:
				silenced = append(silenced, i)
				a.want[id(i)] = amplitude.ReasonSilenced
			}
		}
		if !named {
			return ok200(evs)
		}
		inv, _ := json.Marshal(lists["events_with_invalid_fields"])
		miss, _ := json.Marshal(lists["events_with_missing_fields"])
		return answer(400, `{"code":400,"error":"Request missing required field","events_with_invalid_fields":`+string(inv)+
			`,"events_with_missing_fields":`+string(miss)+`,"silenced_events":`+jsonList(silenced)+`}`)

	case p < 68: // 400 naming nothing: the whole request is dead-lettered
		for i := range evs {
			a.want[id(i)] = amplitude.ReasonRejected
		}
		return answer(400, `{"code":400,"error":"Invalid request body"}`)

	case p < 82: // 429 for one device (and maybe its user, maybe over quota)
		dev := evs[a.rng.IntN(len(evs))].Key
		user := ""
		var idx []int
		partial := a.rng.IntN(3) == 0
		for i, e := range evs {
			if e.Key == dev && (!partial || a.rng.IntN(2) == 0 || len(idx) == 0) {
				idx = append(idx, i)
				user = e.User
			}
		}
		body := map[string]any{
			"code": 429, "error": "Too many requests for some devices and users",
			"throttled_devices": map[string]float64{dev: 31}, "throttled_events": idx,
		}
		if user != "" && a.rng.IntN(3) == 0 {
			body["throttled_users"] = map[string]float64{user: 31}
		}
		if a.rng.IntN(6) == 0 {
			body["exceeded_daily_quota_devices"] = map[string]float64{dev: 500_100}
			for _, i := range idx {
				a.want[id(i)] = amplitude.ReasonDailyQuota
			}
		}
		b, _ := json.Marshal(body)
		return answer(429, string(b))

	case p < 85: // a 429 naming nothing: the whole request waits
		return answer(429, `{"code":429,"error":"Rate limit exceeded"}`)

	case p < 98:
		return answer(503, ``)
	}
	return answer(403, `{"code":403,"error":"Forbidden"}`)
}

func TestRandomAnswersKeepPerKeyOrderAndResolveEveryItemOnce(t *testing.T) {
	seeds := 8
	if testing.Short() {
		seeds = 2
	}
	for s := range seeds {
		seed := uint64(time.Now().UnixNano()) + uint64(s)
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) { randomRun(t, seed) })
		})
	}
}

func randomRun(t *testing.T, seed uint64) {
	t.Logf("seed %d", seed)
	ra := &randomAmp{rng: rand.New(rand.NewPCG(seed, 1)), want: map[string]string{}}
	opts := testOptions()
	opts.RetryMax = 5 * time.Second
	h := newHarness(t, opts, route.TrackerOptions{BatchEPS: 20}, ra.answer)
	defer h.d.Stop()

	const producers, keysPer, perProducer = 3, 5, 400
	var wg sync.WaitGroup
	for p := range producers {
		rng := rand.New(rand.NewPCG(seed, uint64(p)+2))
		wg.Go(func() {
			// Items go in batches of random size, as a partition submits
			// its fetch chunks: one SubmitBatch spans keys and shards.
			var batch []*Item
			size := 1 + rng.IntN(64)
			for range perProducer {
				k := rng.IntN(keysPer)
				key := fmt.Sprintf("p%d-d%d", p, k)
				user := ""
				if k%3 != 0 {
					user = fmt.Sprintf("u%d", (p*keysPer+k)%4) // users span producers
				}
				lane := []route.Lane{route.Auto, route.Auto, route.Realtime, route.Batch}[rng.IntN(4)]
				pad := 0
				if rng.IntN(20) == 0 {
					pad = 2000
				}
				batch = append(batch, h.item(key, user, lane, pad, false))
				if len(batch) < size {
					continue
				}
				unhanded, err := h.d.SubmitBatch(context.Background(), batch, time.Time{})
				require.NoError(t, err)
				require.Empty(t, unhanded)
				batch, size = nil, 1+rng.IntN(64)
				if rng.IntN(10) == 0 {
					// Fake time: spread the submissions over lingers and holds.
					time.Sleep(time.Duration(rng.IntN(3000)) * time.Millisecond)
				}
			}
			if len(batch) > 0 {
				_, err := h.d.SubmitBatch(context.Background(), batch, time.Time{})
				require.NoError(t, err)
			}
		})
	}
	wg.Wait()
	// Far more 429s than Amplitude gives (one request in six), at random:
	// a key throttled again each time its pause ends waits up to eight
	// pauses (4 min) per round (throttleBackoff), and some keys take
	// dozens of rounds. Fake time: the bound costs nothing.
	h.waitResolvedWithin(producers*perProducer, 24*time.Hour)
	rejected := h.check(false)

	got := map[string]string{}
	for it, reason := range rejected {
		got[fmt.Sprintf("%s#%d", it.Key, it.Seq)] = reason
	}
	ra.mu.Lock()
	defer ra.mu.Unlock()
	require.Equal(t, ra.want, got, "every rejection has the reason Amplitude's answer gave")
	accepted := producers*perProducer - len(rejected)
	require.Positive(t, accepted)
	t.Logf("%d requests, %d accepted, %d rejected", len(h.amp.requests()), accepted, len(rejected))
}
