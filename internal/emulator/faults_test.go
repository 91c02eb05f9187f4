package emulator

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// post sends body to url with client and returns the answer.
func post(t *testing.T, client *http.Client, url, body string) (answer, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: string(b)}, nil
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, cond func() bool, msg string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting: %s", msg)
		case <-tick.C:
		}
	}
}

func newFaultServer(t *testing.T, mutate func(*Config)) (*Emulator, *httptest.Server, *http.Client) {
	t.Helper()
	emu, _ := newTest(t, mutate)
	srv := httptest.NewServer(emu)
	t.Cleanup(srv.Close)
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	t.Cleanup(client.CloseIdleConnections)
	return emu, srv, client
}

func TestFaultAnswers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		fault       Fault
		status      int
		body        string // exact
		contentType string
		stored      int
	}{
		{"a 500 without ingestion stores nothing", Fault{Status: 500}, 500, `{"code":500,"error":"Internal Server Error"}`, "application/json", 0},
		{"a 500 after ingestion stores the events", Fault{Status: 500, Ingest: true}, 500, `{"code":500,"error":"Internal Server Error"}`, "application/json", 1},
		{"a 502 without ingestion stores nothing", Fault{Status: 502}, 502, `{"code":502,"error":"Bad Gateway"}`, "application/json", 0},
		{"a 502 after ingestion stores the events", Fault{Status: 502, Ingest: true}, 502, `{"code":502,"error":"Bad Gateway"}`, "application/json", 1},
		{"a 504 without ingestion stores nothing", Fault{Status: 504}, 504, `{"code":504,"error":"Gateway Timeout"}`, "application/json", 0},
		{"a 504 after ingestion stores the events", Fault{Status: 504, Ingest: true}, 504, `{"code":504,"error":"Gateway Timeout"}`, "application/json", 1},
		{"a 503 stores nothing", Fault{Status: 503}, 503, `{"code":503,"error":"Service Unavailable"}`, "application/json", 0},
		{"a 403 is the WAF body", Fault{Status: 403}, 403, `{"code":403,"error":"Forbidden"}`, "application/json", 0},
		{"a 500 may have an empty body", Fault{Status: 500, Body: BodyEmpty, Ingest: true}, 500, ``, "", 1},
		{"a 502 may be an HTML page", Fault{Status: 502, Body: BodyHTML}, 502,
			"<html><head><title>502 Bad Gateway</title></head><body><h1>Bad Gateway</h1></body></html>\n", "text/html", 0},
		{"a short delay then the real answer", Fault{Delay: 10 * time.Millisecond}, 200, "", "application/json", 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			emu, srv, client := newFaultServer(t, nil)
			require.NoError(t, emu.InjectFault(1, tt.fault))
			b := body(ev{typ: "e", device: "device-1", insert: "i-1"})
			got, err := post(t, client, srv.URL+PathHTTPAPI, b)
			require.NoError(t, err)
			assert.Equal(t, tt.status, got.status)
			if tt.status != 200 {
				assert.Equal(t, tt.body, got.body)
			}
			assert.Equal(t, tt.contentType, got.header.Get("Content-Type"))
			assert.Len(t, emu.Events("device-1"), tt.stored)

			again, err := post(t, client, srv.URL+PathHTTPAPI, b)
			require.NoError(t, err)
			assert.Equal(t, 200, again.status, "a fault scheduled once applies once")
			assert.Len(t, emu.Events("device-1"), 1, "the resend is stored or deduplicated")
			st := emu.Stats()
			assert.Equal(t, int64(1), st.Faults)
			assert.Equal(t, int64(2), st.Requests)
		})
	}
}

func TestFaultResets(t *testing.T) {
	t.Parallel()
	for _, ingest := range []bool{false, true} {
		name := "a reset before ingestion stores nothing"
		if ingest {
			name = "a reset after ingestion stores the events"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			emu, srv, client := newFaultServer(t, nil)
			require.NoError(t, emu.InjectFault(1, Fault{Reset: true, Ingest: ingest}))
			_, err := post(t, client, srv.URL+PathBatch, body(ev{typ: "e", device: "device-1"}))
			require.Error(t, err)
			if !errors.Is(err, syscall.ECONNRESET) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("want a reset connection, got %v", err)
			}
			want := 0
			if ingest {
				want = 1
			}
			assert.Len(t, emu.Events("device-1"), want)
			assert.Equal(t, int64(1), emu.Stats().Resets)
		})
	}
}

func TestSlowFaults(t *testing.T) {
	t.Parallel()

	t.Run("a slow answer ends when the client times out and stores nothing", func(t *testing.T) {
		t.Parallel()
		emu, srv, client := newFaultServer(t, nil)
		client.Timeout = 50 * time.Millisecond
		require.NoError(t, emu.InjectFault(1, Fault{Status: 504, Delay: time.Hour}))
		_, err := post(t, client, srv.URL+PathHTTPAPI, body(ev{typ: "e", device: "device-1"}))
		require.Error(t, err)
		eventually(t, func() bool { return emu.Stats().Abandoned == 1 }, "the handler notices the client left")
		assert.Empty(t, emu.Events("device-1"))
	})

	t.Run("a slow answer after ingestion has stored the events when the client times out", func(t *testing.T) {
		t.Parallel()
		emu, srv, client := newFaultServer(t, nil)
		client.Timeout = 50 * time.Millisecond
		require.NoError(t, emu.InjectFault(1, Fault{Ingest: true, Delay: time.Hour}))
		_, err := post(t, client, srv.URL+PathHTTPAPI, body(ev{typ: "e", device: "device-1"}))
		require.Error(t, err)
		eventually(t, func() bool { return emu.Stats().Abandoned == 1 }, "the handler notices the client left")
		assert.Len(t, emu.Events("device-1"), 1)
	})

	t.Run("a slow answer ends when the server stops", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		srv, err := Start(context.Background(), "127.0.0.1:0", emu)
		require.NoError(t, err)
		require.NoError(t, emu.InjectFault(1, Fault{Delay: time.Hour}))
		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		errc := make(chan error, 1)
		go func() {
			_, err := post(t, client, srv.URL()+PathHTTPAPI, body(ev{typ: "e", device: "device-1"}))
			errc <- err
		}()
		eventually(t, func() bool { return emu.Stats().Faults == 1 }, "the request reaches the fault")
		start := time.Now()
		require.NoError(t, srv.Close())
		assert.Less(t, time.Since(start), shutdownGrace, "Close does not wait out the delay")
		require.Error(t, <-errc, "the client gets no answer")
		assert.Empty(t, emu.Events("device-1"))
	})
}

func TestFaultSchedule(t *testing.T) {
	t.Parallel()

	t.Run("scheduled faults apply in order to the next requests", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.NoError(t, emu.InjectFault(2, Fault{Status: 503}))
		require.NoError(t, emu.InjectFault(1, Fault{Status: 500}))
		var got []int
		for range 4 {
			got = append(got, do(t, emu, PathHTTPAPI, body(ev{typ: "e", device: "device-1"})).status)
		}
		assert.Equal(t, []int{503, 503, 500, 200}, got)
	})

	t.Run("a fault for one route leaves the other alone", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.NoError(t, emu.InjectFault(1, Fault{Route: RouteBatch, Status: 502}))
		assert.Equal(t, 200, do(t, emu, PathHTTPAPI, body(ev{typ: "e", device: "device-1"})).status)
		assert.Equal(t, 502, do(t, emu, PathBatch, body(ev{typ: "e", device: "device-1"})).status)
		assert.Equal(t, 200, do(t, emu, PathBatch, body(ev{typ: "e", device: "device-1"})).status)
	})

	t.Run("faults never touch unknown paths or debug endpoints", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.NoError(t, emu.InjectFault(1, Fault{Status: 500}))
		assert.Equal(t, 400, do(t, emu, "/unknown", body()).status)
		req := httptest.NewRequest(http.MethodGet, "/debug/stats", nil)
		rec := httptest.NewRecorder()
		emu.ServeHTTP(rec, req)
		assert.Equal(t, 200, rec.Code)
		assert.Equal(t, 500, do(t, emu, PathHTTPAPI, body()).status)
	})

	t.Run("a 503 carries Retry-After when configured", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, func(c *Config) { c.RetryAfter = 15 * time.Second })
		require.NoError(t, emu.InjectFault(1, Fault{Status: 503}))
		got := do(t, emu, PathHTTPAPI, body())
		assert.Equal(t, "15", got.header.Get("Retry-After"))
	})

	t.Run("random faults follow the seed", func(t *testing.T) {
		t.Parallel()
		run := func() []int {
			emu, _ := newTest(t, func(c *Config) { c.FaultRate, c.FaultSeed = 0.5, 42 })
			var got []int
			for range 40 {
				got = append(got, do(t, emu, PathBatch, body(ev{typ: "e", device: "device-1"})).status)
			}
			return got
		}
		first := run()
		assert.Equal(t, first, run(), "the same seed gives the same faults")
		assert.Contains(t, first, 200)
		assert.Contains(t, first, 500)
	})

	t.Run("a rate of 1 with one choice faults every request", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.NoError(t, emu.SetFaultRate(1, 7, Fault{Status: 503}))
		for range 5 {
			assert.Equal(t, 503, do(t, emu, PathBatch, body()).status)
		}
		emu.ClearFaults()
		assert.Equal(t, 200, do(t, emu, PathBatch, body()).status)
	})

	t.Run("invalid faults are refused", func(t *testing.T) {
		t.Parallel()
		emu, _ := newTest(t, nil)
		require.Error(t, emu.InjectFault(1, Fault{Route: "track"}))
		require.Error(t, emu.InjectFault(1, Fault{Status: 99}))
		require.Error(t, emu.InjectFault(0, Fault{Status: 500}))
		require.Error(t, emu.InjectFault(1, Fault{Body: "xml"}))
		require.Error(t, emu.SetFaultRate(1.5, 1))
	})
}
