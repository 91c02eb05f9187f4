package emulator

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDeduplication(t *testing.T) {
	t.Parallel()

	t.Run("a resent insert_id is answered 200 and counted but stored once", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		b := body(ev{typ: "a", device: "device-1", insert: "i-1"}, ev{typ: "b", device: "device-1", insert: "i-2"})
		require.JSONEq(t, ok200(2, len(b), clk), do(t, emu, PathHTTPAPI, b).body)
		clk.Advance(time.Second)
		b2 := body(ev{typ: "b", device: "device-1", insert: "i-2"}, ev{typ: "c", device: "device-1", insert: "i-3"})
		require.JSONEq(t, ok200(2, len(b2), clk), do(t, emu, PathBatch, b2).body, "duplicates count in events_ingested")

		var types []string
		for _, e := range emu.Events("device-1") {
			types = append(types, e.EventType+"/"+e.InsertID)
		}
		assert.Equal(t, []string{"a/i-1", "b/i-2", "c/i-3"}, types)
		st := emu.Stats()
		assert.Equal(t, int64(3), st.Ingested)
		assert.Equal(t, int64(1), st.Duplicates)
		assert.Equal(t, int64(4), st.Accepted)
	})

	t.Run("duplicates within one request are stored once", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathBatch, body(ev{typ: "a", device: "device-1", insert: "i-1"}, ev{typ: "a", device: "device-1", insert: "i-1"})).status)
		assert.Len(t, emu.Events("device-1"), 1)
	})

	t.Run("the same insert_id on another device or project is a different event", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathBatch, body(ev{typ: "a", device: "device-1", insert: "i-1"}, ev{typ: "a", device: "device-2", insert: "i-1"})).status)
		other := `{"api_key":"another-project-key","events":[{"event_type":"a","device_id":"device-1","insert_id":"i-1"}]}`
		require.Equal(t, 200, do(t, emu, PathBatch, other).status)
		assert.Len(t, emu.Events("device-1"), 2)
		assert.Len(t, emu.Events("device-2"), 1)
		assert.Zero(t, emu.Stats().Duplicates)
	})

	t.Run("without device_id the user_id stands in for the device", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		b := body(ev{typ: "a", user: "user-1", insert: "i-1"})
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, b).status)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, b).status)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "a", user: "user-2", insert: "i-1"})).status)
		assert.Len(t, emu.Events(UserDeviceID("user-1")), 1)
		assert.Len(t, emu.Events(UserDeviceID("user-2")), 1)
	})

	t.Run("events without insert_id are never deduplicated", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		b := body(ev{typ: "a", device: "device-1"})
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, b).status)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, b).status)
		assert.Len(t, emu.Events("device-1"), 2)
	})

	t.Run("an insert_id is forgotten after the dedup window", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		b := body(ev{typ: "a", device: "device-1", insert: "i-1"})
		require.Equal(t, 200, do(t, emu, PathBatch, b).status)
		clk.Advance(7*24*time.Hour - time.Second)
		require.Equal(t, 200, do(t, emu, PathBatch, b).status)
		require.Len(t, emu.Events("device-1"), 1, "still inside 7 days")
		clk.Advance(time.Second)
		require.Equal(t, 200, do(t, emu, PathBatch, b).status)
		assert.Len(t, emu.Events("device-1"), 2, "7 days later it is new again")
	})

	t.Run("MaxDedupKeys forgets the oldest insert_ids first", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, func(c *Config) { c.MaxDedupKeys = 2 })
		for _, id := range []string{"i-1", "i-2", "i-3", "i-1", "i-3"} {
			require.Equal(t, 200, do(t, emu, PathBatch, body(ev{typ: "a", device: "device-1", insert: id})).status)
		}
		// i-1 was forgotten when i-3 arrived, so its resend is stored; i-3 was not.
		var ids []string
		for _, e := range emu.Events("device-1") {
			ids = append(ids, e.InsertID)
		}
		assert.Equal(t, []string{"i-1", "i-2", "i-3", "i-1"}, ids)
	})

	t.Run("a zero window turns deduplication off", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, func(c *Config) { c.DedupWindow = 0 })
		b := body(ev{typ: "a", device: "device-1", insert: "i-1"})
		require.Equal(t, 200, do(t, emu, PathBatch, b).status)
		require.Equal(t, 200, do(t, emu, PathBatch, b).status)
		assert.Len(t, emu.Events("device-1"), 2)
	})

	t.Run("Reset forgets events, insert_ids, rates and counters", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		b := body(deviceEvents("device-1", "a", 300)...)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, b).status)
		require.Equal(t, 429, do(t, emu, PathHTTPAPI, body(ev{typ: "a", device: "device-1"})).status)
		emu.Reset()
		assert.Empty(t, emu.AllDevices())
		assert.Equal(t, Stats{ByStatus: map[int]int64{}, IngestedByRoute: map[string]int64{}}, emu.Stats())
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, b).status)
		assert.Len(t, emu.Events("device-1"), 300)
	})
}

func TestConcurrentRequestsAreIngestedAtomically(t *testing.T) {
	t.Parallel()
	emu, _ := newTest(t, func(c *Config) { c.HTTPAPI.EPS = 0 })
	const senders, requests, perRequest = 8, 20, 10
	done := make(chan struct{})
	for s := range senders {
		go func() {
			defer func() { done <- struct{}{} }()
			for r := range requests {
				evs := make([]ev, perRequest)
				for i := range evs {
					evs[i] = ev{typ: "e", device: "device-1", insert: fmt.Sprintf("%d-%d-%d", s, r, i)}
				}
				if got := do(t, emu, PathHTTPAPI, body(evs...)); got.status != 200 {
					t.Errorf("status %d: %s", got.status, got.body)
				}
			}
		}()
	}
	for range senders {
		<-done
	}
	evs := emu.Events("device-1")
	require.Len(t, evs, senders*requests*perRequest)
	for i := range evs {
		assert.Equal(t, uint64(i+1), evs[i].Seq, "one device's log is in arrival order")
		// A request's events are never interleaved with another's.
		assert.Equal(t, i%perRequest, evs[i].Index)
		assert.Equal(t, evs[i-i%perRequest].Arrival, evs[i].Arrival)
	}
}
