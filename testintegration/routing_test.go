package testintegration

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/traffic"
)

// percentile returns the p-th percentile of ds (sorted in place).
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[min(len(ds)-1, int(float64(len(ds))*p))]
}

// The issue-4 workload: thousands of low-rate devices, a few devices bursting
// thousands of events within seconds, and a backfill, all produced live
// against the emulator with its real throttling. Hot keys must reach Batch
// before Amplitude throttles them; low-rate devices stay on HTTP V2.
func TestMixedWorkloadSendsHotKeysToBatchBeforeAmplitudeThrottles(t *testing.T) {
	if testing.Short() {
		t.Skip("produces live traffic for ~10 s")
	}
	t.Parallel()
	h := newHarness(t, 12, nil)
	g := traffic.New(11, 3000, 0.3, nil)
	r := h.start(h.config())

	const (
		ticks     = 80 // × 100 ms
		perTick   = 60 // 600 events/s over 3000 devices: 0.2 events/s each
		bursters  = 4
		burstSize = 2000 // each within ~2 s
		backfill  = 3000
	)
	var valid int
	pace := time.NewTicker(100 * time.Millisecond)
	defer pace.Stop()
	for n := 0; n < ticks; n++ {
		var batch []traffic.Msg
		for i := 0; i < perTick; i++ {
			batch = append(batch, g.Normal())
		}
		if n >= 20 && n < 40 { // bursts during seconds 2–4
			for b := 0; b < bursters; b++ {
				for k := 0; k < burstSize/20; k++ {
					batch = append(batch, g.Burst(b))
				}
			}
		}
		if n == 50 {
			for i := 0; i < backfill; i++ {
				batch = append(batch, g.Backfill())
			}
		}
		valid += len(batch)
		h.produce(batch)
		<-pace.C
	}
	eventually(t, 90*time.Second, "all delivered and committed", func() bool {
		return traffic.Check(h.emu, g.Expected()).Delivered == valid && h.committedAll()
	})
	r.Stop(t)

	rep := traffic.Check(h.emu, g.Expected())
	if !rep.OK() {
		t.Fatalf("delivery: %s", rep)
	}
	st := h.emu.Stats()
	if st.ByStatus[429] != 0 {
		t.Errorf("emulator answered 429 %d times (%d events), want 0", st.ByStatus[429], st.Throttled)
	}
	burstBatch, burstAll := 0, 0
	for b := 0; b < bursters; b++ {
		for _, in := range h.emu.Events(traffic.BurstDeviceID(b)) {
			burstAll++
			if in.Route == "batch" {
				burstBatch++
			}
		}
	}
	share := float64(burstBatch) / float64(burstAll)
	if share < 0.9 {
		t.Errorf("%.1f%% of the bursting devices' events went through Batch, want ≥ 90%%", 100*share)
	}
	// Realtime latency of the low-rate devices: event time (set when
	// produced) to arrival at the emulator.
	var lat []time.Duration
	normalRT, normalAll := 0, 0
	for _, dev := range h.emu.AllDevices() {
		if !strings.HasPrefix(dev, "device-") {
			continue
		}
		for _, in := range h.emu.Events(dev) {
			normalAll++
			if in.Route != "httpapi" {
				continue
			}
			normalRT++
			var ev struct {
				Time int64 `json:"time"`
			}
			if json.Unmarshal(in.Event, &ev) == nil && ev.Time > 0 {
				lat = append(lat, in.Arrival.Sub(time.UnixMilli(ev.Time)))
			}
		}
	}
	t.Logf("ROUTING events=%d http429=%d burst_via_batch=%.1f%% lowrate_on_realtime=%.1f%% lowrate_rt_latency_p50=%s p99=%s (produce→Amplitude, -race)",
		valid, st.ByStatus[429], 100*share, 100*float64(normalRT)/float64(max(normalAll, 1)),
		percentile(append([]time.Duration(nil), lat...), 0.5).Round(time.Millisecond), percentile(lat, 0.99).Round(time.Millisecond))
	if float64(normalRT) < 0.9*float64(normalAll) {
		t.Errorf("only %d of %d low-rate events used HTTP V2", normalRT, normalAll)
	}
}

// Amplitude throttles per user too, but a user's devices hash to different
// partitions, so each replica sees only part of the user's rate. This
// measures the effect with four replicas for two user-key margins, and
// checks that the 429 backstop keeps delivery exact either way.
func TestUsersSpreadOverReplicasAreHandled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs four replicas with live traffic for ~15 s")
	}
	t.Parallel()
	for _, margin := range []float64{1.0, 0.5} {
		t.Run(fmt.Sprintf("user margin %.1f", margin), func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, 8, nil)
			cfg := h.config()
			cfg.Router.UserEPSMargin = margin
			var reps []*running
			for i := 0; i < 4; i++ {
				reps = append(reps, h.start(cfg))
			}
			// 4 users × 8 devices × 4.5 events/s = 36 events/s per user, above
			// Amplitude's 30; a replica owning two of a user's devices sees 9/s.
			const users, devs, ticks = 4, 8, 120
			seq := map[string]int{}
			valid := 0
			var mu sync.Mutex
			pace := time.NewTicker(100 * time.Millisecond)
			defer pace.Stop()
			for n := 0; n < ticks; n++ {
				var msgs []kafka.Message
				for u := 0; u < users; u++ {
					for d := 0; d < devs; d++ {
						if (n+d)%2 == 1 && n%10 >= 1 { // 4.5 events/s per device
							continue
						}
						dev := fmt.Sprintf("ud-%d-%d", u, d)
						mu.Lock()
						seq[dev]++
						s := seq[dev]
						mu.Unlock()
						msgs = append(msgs, kafka.Message{Key: []byte(dev), Value: []byte(fmt.Sprintf(
							`{"event_type":"tap","device_id":%q,"user_id":"spread-user-%d","event_id":%d,"time":%d,"insert_id":"%s-%d"}`,
							dev, u, s, time.Now().UnixMilli(), dev, s))})
					}
				}
				valid += len(msgs)
				h.kafka.Produce(t, h.topic, msgs...)
				<-pace.C
			}
			eventually(t, 120*time.Second, "all delivered and committed", func() bool {
				return traffic.Check(h.emu, seq).Delivered == valid && h.committedAll()
			})
			for _, r := range reps {
				r.Stop(t)
			}
			rep := traffic.Check(h.emu, seq)
			if !rep.OK() {
				t.Fatalf("delivery: %s", rep)
			}
			st := h.emu.Stats()
			t.Logf("USERS margin=%.1f events=%d http429=%d throttled_events=%d via_batch=%.1f%%",
				margin, valid, st.ByStatus[429], st.Throttled, 100*float64(rep.ByRoute["batch"])/float64(rep.Delivered))
		})
	}
}
