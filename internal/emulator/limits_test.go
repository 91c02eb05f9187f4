package emulator

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestThrottling(t *testing.T) {
	t.Parallel()

	t.Run("a device may send 300 events in one HTTP V2 window and the 301st is throttled", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", "a", 300)...)).status)
		clk.Advance(9 * time.Second)
		got := do(t, emu, PathHTTPAPI, body(ev{typ: "e", device: "device-1", user: "user-1"}, ev{typ: "e", device: "device-2"}))
		assert.Equal(t, 429, got.status)
		// 301 events over 10 s is 30.1 EPS, reported rounded up.
		assert.JSONEq(t, `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,
			"throttled_devices":{"device-1":31},"throttled_users":{},"throttled_events":[0]}`, got.body)
		assert.Len(t, emu.Events("device-1"), 300)
		assert.Empty(t, emu.Events("device-2"), "a throttled request is not ingested at all")
	})

	t.Run("a device sending 1000 events in 2 s over HTTP V2 is throttled", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		var statuses []int
		for i := range 10 {
			statuses = append(statuses, do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", strconv.Itoa(i), 100)...)).status)
			clk.Advance(200 * time.Millisecond)
		}
		assert.Equal(t, []int{200, 200, 200, 429, 429, 429, 429, 429, 429, 429}, statuses)
	})

	t.Run("a device at 10 events/s over HTTP V2 is never throttled", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		for i := range 1200 { // two minutes
			got := do(t, emu, PathHTTPAPI, body(ev{typ: "e", device: "device-1", insert: strconv.Itoa(i)}))
			require.Equal(t, 200, got.status, "event %d", i)
			clk.Advance(100 * time.Millisecond)
		}
		assert.Len(t, emu.Events("device-1"), 1200)
	})

	t.Run("a device at exactly 30 events/s over HTTP V2 is never throttled", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		for i := range 60 {
			got := do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", strconv.Itoa(i), 30)...))
			require.Equal(t, 200, got.status, "second %d", i)
			clk.Advance(time.Second)
		}
	})

	t.Run("retrying within the window keeps getting 429 and a pause of one window clears it", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", "a", 300)...)).status)
		retry := body(deviceEvents("device-1", "b", 200)...)
		for i := range 20 {
			clk.Advance(2 * time.Second)
			// The rejected 200 of the previous try are still in the window.
			require.Equal(t, 429, do(t, emu, PathHTTPAPI, retry).status, "retry %d", i)
		}
		clk.Advance(10 * time.Second)
		assert.Equal(t, 200, do(t, emu, PathHTTPAPI, retry).status)
	})

	t.Run("without CountRejected a retry succeeds once the accepted events leave the window", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, func(c *Config) { c.CountRejected = false })
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", "a", 300)...)).status)
		retry := body(deviceEvents("device-1", "b", 10)...)
		clk.Advance(5 * time.Second)
		require.Equal(t, 429, do(t, emu, PathHTTPAPI, retry).status)
		clk.Advance(5 * time.Second) // the first 300 are now exactly one window old
		assert.Equal(t, 200, do(t, emu, PathHTTPAPI, retry).status)
	})

	t.Run("users are limited across devices and listed in throttled_users", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		evs := make([]ev, 301)
		for i := range evs {
			evs[i] = ev{typ: "e", user: "user-1", device: fmt.Sprintf("device-%d", i)}
		}
		evs = append(evs, ev{typ: "e", user: "user-2", device: "device-x"})
		got := do(t, emu, PathHTTPAPI, body(evs...))
		assert.Equal(t, 429, got.status)
		want := `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,
			"throttled_devices":{},"throttled_users":{"user-1":31},"throttled_events":[`
		for i := range 301 {
			if i > 0 {
				want += ","
			}
			want += strconv.Itoa(i)
		}
		assert.JSONEq(t, want+"]}", got.body)
		st := emu.Stats()
		assert.Equal(t, map[string]int64{RouteHTTPAPI: 1}, st.UserThrottles)
		assert.Equal(t, map[string]int64{"user-1": 1}, st.UserThrottled)
	})

	t.Run("limits are per route so Batch still accepts a device HTTP V2 throttles", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.Equal(t, 429, do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", "a", 1000)...)).status)
		assert.Equal(t, 200, do(t, emu, PathBatch, body(deviceEvents("device-1", "a", 1000)...)).status)
	})

	t.Run("limits are per project", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", "a", 300)...)).status)
		other := `{"api_key":"another-project-key","events":[{"event_type":"e","device_id":"device-1"}]}`
		assert.Equal(t, 200, do(t, emu, PathHTTPAPI, other).status)
	})

	t.Run("Batch allows 30000 events per device in 30 s and reports its threshold of 1000", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		for i := range 15 {
			require.Equal(t, 200, do(t, emu, PathBatch, body(deviceEvents("device-1", strconv.Itoa(i), 2000)...)).status)
			clk.Advance(time.Second)
		}
		got := do(t, emu, PathBatch, body(ev{typ: "e", device: "device-1"}))
		assert.Equal(t, 429, got.status)
		assert.JSONEq(t, `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":1000,
			"throttled_devices":{"device-1":1001},"throttled_users":{},"throttled_events":[0]}`, got.body)
	})

	t.Run("an optional burst window throttles short spikes", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, func(c *Config) { c.HTTPAPI.BurstEPS, c.HTTPAPI.BurstWindow = 60, time.Second })
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", "a", 60)...)).status)
		got := do(t, emu, PathHTTPAPI, body(ev{typ: "e", device: "device-1"}))
		assert.Equal(t, 429, got.status)
		assert.JSONEq(t, `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,
			"throttled_devices":{"device-1":61},"throttled_users":{},"throttled_events":[0]}`, got.body)
		clk.Advance(time.Second)
		assert.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "e", device: "device-1"})).status)
	})

	t.Run("the reported threshold and Retry-After are configurable", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, func(c *Config) { c.HTTPAPI.ReportedEPSThreshold = 100; c.RetryAfter = 1500 * time.Millisecond })
		got := do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", "a", 301)...))
		assert.Equal(t, 429, got.status)
		assert.Equal(t, "2", got.header.Get("Retry-After"))
		assert.Contains(t, got.body, `"eps_threshold":100`)
	})

	t.Run("no Retry-After header by default", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		got := do(t, emu, PathHTTPAPI, body(deviceEvents("device-1", "a", 301)...))
		assert.Equal(t, 429, got.status)
		assert.Empty(t, got.header.Values("Retry-After"))
	})
}

func TestDailyQuota(t *testing.T) {
	t.Parallel()
	quota := func(c *Config) { c.Batch.DailyQuota = 10 }

	t.Run("the event over the quota is 429 with the daily counts and its indexes", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, quota)
		evs := make([]ev, 10)
		for i := range evs {
			evs[i] = ev{typ: "e", device: "device-1", user: "user-1"}
		}
		require.Equal(t, 200, do(t, emu, PathBatch, body(evs...)).status)
		clk.Advance(time.Hour)
		got := do(t, emu, PathBatch, body(ev{typ: "e", device: "device-2"}, ev{typ: "e", device: "device-1", user: "user-1"}))
		assert.Equal(t, 429, got.status)
		assert.JSONEq(t, `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":1000,
			"throttled_devices":{},"throttled_users":{},"throttled_events":[1],
			"exceeded_daily_quota_devices":{"device-1":11},"exceeded_daily_quota_users":{"user-1":11}}`, got.body)
		assert.Empty(t, emu.Events("device-2"))
	})

	t.Run("the quota rolls over hourly buckets of the last 24 hours", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, quota)
		require.Equal(t, 200, do(t, emu, PathBatch, body(deviceEvents("device-1", "a", 10)...)).status)
		clk.Advance(23 * time.Hour)
		require.Equal(t, 429, do(t, emu, PathBatch, body(ev{typ: "e", device: "device-1"})).status)
		clk.Advance(time.Hour)
		assert.Equal(t, 200, do(t, emu, PathBatch, body(ev{typ: "e", device: "device-1"})).status)
	})

	t.Run("events ingested over HTTP V2 count toward the Batch quota", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, quota)
		for i := range 10 {
			require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "e", device: "device-1", insert: strconv.Itoa(i)})).status)
			clk.Advance(time.Minute)
		}
		assert.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "e", device: "device-1"})).status, "HTTP V2 has no quota by default")
		assert.Equal(t, 429, do(t, emu, PathBatch, body(ev{typ: "e", device: "device-1"})).status)
	})
}

func TestLimiterForgetsIdleIDs(t *testing.T) {
	t.Parallel()
	emu, clk := newTest(t, nil)
	for i := range 100 {
		require.Equal(t, 200, do(t, emu, PathBatch, body(ev{typ: "e", device: fmt.Sprintf("device-%d", i)})).status)
	}
	clk.Advance(25 * time.Hour)
	require.Equal(t, 200, do(t, emu, PathBatch, body(ev{typ: "e", device: "device-new"})).status)
	emu.mu.Lock()
	defer emu.mu.Unlock()
	assert.Len(t, emu.limiter.rates[routeIndex(RouteBatch)], 1)
	assert.Len(t, emu.limiter.daily, 1)
}
