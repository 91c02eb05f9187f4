package emulator

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func debugCall(t *testing.T, h http.Handler, method, target, body string) answer {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return answer{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

func TestDebugEndpoints(t *testing.T) {
	t.Parallel()

	t.Run("events lists one device's stored events in arrival order", func(t *testing.T) {
		t.Parallel()
		emu, clk := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "a", device: "device-1", insert: "i-1"})).status)
		clk.Advance(time.Second)
		require.Equal(t, 200, do(t, emu, PathBatch, body(ev{typ: "b", device: "device-1", user: "user-1", insert: "i-2"})).status)

		got := debugCall(t, emu, http.MethodGet, "/debug/events?device_id=device-1", "")
		require.Equal(t, 200, got.status)
		assert.Equal(t, "application/json", got.header.Get("Content-Type"))
		assert.JSONEq(t, `{"device_id":"device-1","events":[
			{"seq":1,"route":"httpapi","arrival":"2026-11-27T12:00:00Z","index":0,"insert_id":"i-1","device_id":"device-1","event_type":"a",
			 "event":{"event_type":"a","device_id":"device-1","insert_id":"i-1"}},
			{"seq":2,"route":"batch","arrival":"2026-11-27T12:00:01Z","index":0,"insert_id":"i-2","user_id":"user-1","device_id":"device-1","event_type":"b",
			 "event":{"event_type":"b","user_id":"user-1","device_id":"device-1","insert_id":"i-2"}}]}`, got.body)
	})

	t.Run("events of an unknown device is an empty list", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		got := debugCall(t, emu, http.MethodGet, "/debug/events?device_id=nobody", "")
		assert.Equal(t, 200, got.status)
		assert.JSONEq(t, `{"device_id":"nobody","events":[]}`, got.body)
	})

	t.Run("events without device_id is 400", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		got := debugCall(t, emu, http.MethodGet, "/debug/events", "")
		assert.Equal(t, 400, got.status)
		assert.JSONEq(t, `{"code":400,"error":"device_id query parameter required"}`, got.body)
	})

	t.Run("devices lists every device with events", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "a", device: "device-2"}, ev{typ: "a", user: "user-1"}, ev{typ: "a", device: "device-1"})).status)
		got := debugCall(t, emu, http.MethodGet, "/debug/devices", "")
		assert.JSONEq(t, `{"devices":["$user:user-1","device-1","device-2"]}`, got.body)
	})

	t.Run("stats counts requests, statuses and events", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "a", device: "device-1", insert: "i-1"}, ev{typ: "a", device: "device-1", insert: "i-1"})).status)
		require.Equal(t, 400, do(t, emu, PathBatch, body(ev{device: "device-1"})).status)
		require.Equal(t, 429, do(t, emu, PathHTTPAPI, body(deviceEvents("device-2", "x", 301)...)).status)
		got := debugCall(t, emu, http.MethodGet, "/debug/stats", "")
		assert.JSONEq(t, `{"requests":3,"by_status":{"200":1,"400":1,"429":1},"accepted":2,"ingested":1,
			"ingested_by_route":{"httpapi":1},"duplicates":1,"throttled":301,"invalid":1,"faults":0,"resets":0,
			"abandoned":0,"devices":1,"log_dropped":0}`, got.body)
	})

	t.Run("reset empties the store", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "a", device: "device-1"})).status)
		got := debugCall(t, emu, http.MethodPost, "/debug/reset", "")
		assert.JSONEq(t, `{"code":200}`, got.body)
		assert.Empty(t, emu.AllDevices())
	})

	t.Run("faults can be scheduled, randomised, shown and cleared", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		got := debugCall(t, emu, http.MethodPost, "/debug/faults",
			`{"next":[{"count":2,"fault":{"status":504,"ingest":true,"delay":"1ms"}},{"count":1,"fault":{"route":"batch","reset":true,"body":"empty"}}]}`)
		require.Equal(t, 200, got.status, got.body)
		assert.JSONEq(t, `{"next":[{"count":2,"fault":{"status":504,"ingest":true,"delay":"1ms"}},{"count":1,"fault":{"route":"batch","body":"empty","reset":true}}],
			"rate":0,"seed":0,"choices":`+string(mustJSON(DefaultFaultChoices()))+`}`, got.body)

		got = debugCall(t, emu, http.MethodPost, "/debug/faults", `{"rate":0.25,"seed":9,"choices":[{"status":503}]}`)
		require.Equal(t, 200, got.status, got.body)
		state := emu.Faults()
		assert.InEpsilon(t, 0.25, state.Rate, 1e-9)
		assert.Equal(t, uint64(9), state.Seed)
		assert.Equal(t, []Fault{{Status: 503}}, state.Choices)
		assert.Len(t, state.Next, 2, "setting the rate keeps the schedule")

		got = debugCall(t, emu, http.MethodGet, "/debug/faults", "")
		assert.Equal(t, 200, got.status)
		assert.Contains(t, got.body, `"rate": 0.25`)

		got = debugCall(t, emu, http.MethodPost, "/debug/faults", `{"clear":true}`)
		require.Equal(t, 200, got.status)
		state = emu.Faults()
		assert.Empty(t, state.Next)
		assert.Zero(t, state.Rate)
	})

	t.Run("bad fault requests are 400 and change nothing", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		for _, b := range []string{
			`{"next":[{"count":1,"fault":{"status":500,"delay":"soon"}}]}`,
			`{"next":[{"count":1,"fault":{"body":"xml"}}]}`,
			`{"rate":2}`,
			`{"unknown":1}`,
			`not json`,
		} {
			got := debugCall(t, emu, http.MethodPost, "/debug/faults", b)
			assert.Equal(t, 400, got.status, b)
			var e struct {
				Code int `json:"code"`
			}
			require.NoError(t, json.Unmarshal([]byte(got.body), &e), b)
			assert.Equal(t, 400, e.Code)
		}
		assert.Empty(t, emu.Faults().Next)
	})

	t.Run("an unknown debug endpoint is 404", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		got := debugCall(t, emu, http.MethodDelete, "/debug/events", "")
		assert.Equal(t, 404, got.status)
		assert.JSONEq(t, `{"code":404,"error":"unknown debug endpoint DELETE /debug/events"}`, got.body)
	})
}

func TestServer(t *testing.T) {
	t.Parallel()

	t.Run("Start listens on a free port and serves until Close", func(t *testing.T) {
		t.Parallel()
		emu := New(DefaultConfig(), zerolog.Nop())
		srv, err := Start(context.Background(), "127.0.0.1:0", emu)
		require.NoError(t, err)
		assert.NotEqual(t, "127.0.0.1:0", srv.Addr())
		assert.Equal(t, "http://"+srv.Addr(), srv.URL())
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		got, err := post(t, client, srv.URL()+PathBatch, body(ev{typ: "a", device: "device-1"}))
		require.NoError(t, err)
		assert.Equal(t, 200, got.status)
		require.NoError(t, srv.Close())
		_, err = post(t, client, srv.URL()+PathBatch, body())
		assert.Error(t, err, "nothing listens after Close")
	})

	t.Run("cancelling the context stops the server", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		srv, err := Start(ctx, "127.0.0.1:0", New(DefaultConfig(), zerolog.Nop()))
		require.NoError(t, err)
		cancel()
		assert.NoError(t, srv.Wait())
	})

	t.Run("a busy port fails Start", func(t *testing.T) {
		t.Parallel()
		first, err := Start(context.Background(), "127.0.0.1:0", New(DefaultConfig(), zerolog.Nop()))
		require.NoError(t, err)
		defer first.Close()
		_, err = Start(context.Background(), first.Addr(), New(DefaultConfig(), zerolog.Nop()))
		assert.ErrorContains(t, err, "listen on "+first.Addr())
	})
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"the default config is valid", func(*Config) {}, ""},
		{"a zero event limit is refused", func(c *Config) { c.HTTPAPI.MaxEvents = 0 }, "httpapi: max events must be positive, is 0"},
		{"a zero byte limit is refused", func(c *Config) { c.Batch.MaxBytes = 0 }, "batch: max bytes must be positive, is 0"},
		{"a negative rate is refused", func(c *Config) { c.Batch.EPS = -1 }, "batch: rates and quotas must not be negative"},
		{"a sub-second window is refused", func(c *Config) { c.HTTPAPI.Window = time.Millisecond }, "httpapi: window must be at least 1s, is 1ms"},
		{"a burst window longer than the window is refused", func(c *Config) { c.HTTPAPI.BurstEPS, c.HTTPAPI.BurstWindow = 50, time.Minute }, "httpapi: burst window must be in (0, window], is 1m0s"},
		{"a fault rate above 1 is refused", func(c *Config) { c.FaultRate = 2 }, "fault rate must be in [0, 1], is 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := DefaultConfig()
			tt.mutate(&cfg)
			err := cfg.Validate()
			if tt.want == "" {
				assert.NoError(t, err)
				return
			}
			assert.EqualError(t, err, tt.want)
			assert.Panics(t, func() { New(cfg, zerolog.Nop()) })
		})
	}
}
