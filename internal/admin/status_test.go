package admin

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	body, err := io.ReadAll(rec.Result().Body)
	require.NoError(t, err)
	return rec.Code, string(body)
}

func TestStatusPage(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	var lag []LagSample
	// 10 minutes of samples every 5 s: messages ramp from 0 to 1190, seconds
	// stay 0 but for the last minute.
	for i := range 120 {
		s := LagSample{Time: now.Add(-10*time.Minute + time.Duration(i+1)*5*time.Second), Messages: int64(i * 10)}
		if i >= 108 {
			s.Seconds = 2.5
		}
		lag = append(lag, s)
	}
	st := Status{
		Version: "1.4.2", Commit: "abc1234", Now: now, Started: now.Add(-90 * time.Minute),
		Brokers: "kafka:9092", Group: "ampstream", Topics: "events", Amplitude: "https://api2.amplitude.com",
		Partitions: []PartitionRow{
			{Topic: "events", Partition: 1, Committed: 900, HighWatermark: 1000, Lag: 100, LagSeconds: 0, LastCommit: now.Add(-3 * time.Second)},
			{Topic: "events", Partition: 0, Committed: 500, HighWatermark: 1590, Lag: 1090, LagSeconds: 2.5, Inflight: 7, LastCommit: now.Add(-2 * time.Second)},
		},
		Lag: lag, LagWindow: 10 * time.Minute,
	}
	h := Handler(prometheus.NewRegistry(), Probes{}, StatusPage(func() Status { return st }))
	code, page := get(t, h, "/")
	require.Equal(t, http.StatusOK, code)

	for _, want := range []string{
		`version <b class="version">1.4.2</b> · commit abc1234`,
		`<a href="/metrics">/metrics</a>`, `<a href="/readyz">/readyz</a>`, `<a href="/healthz">/healthz</a>`, `<a href="/startupz">/startupz</a>`,
		`last offset commit: <b class="last-commit">2s ago</b>`,
		`up 1h30m`,
		`Lag over the last 10m`,
		`the partition's end offset (high watermark) minus the committed offset`,
		`0 when nothing is in flight`,
		`<svg class="chart"`, `<title>lag (messages) over the last 10m</title>`, `<title>lag (seconds) over the last 10m</title>`,
		`lag (messages): now 1190 · 120 samples`, `lag (seconds): now 2.5 · 120 samples`,
		`<td>1090</td><td>2.5</td><td>7</td><td>2s ago</td>`,
		`<td>100</td><td>0.0</td><td>0</td><td>3s ago</td>`,
	} {
		assert.Contains(t, page, want)
	}
	assert.Less(t, strings.Index(page, "<td>0</td><td>500</td>"), strings.Index(page, "<td>1</td><td>900</td>"), "partitions sorted")
	assert.NotContains(t, page, "<script", "no JavaScript")

	// The y axis of the message chart tops at a round 2000 (≥ 1190), that of
	// the seconds chart at 5.0 (≥ 2.5); every point lies inside the plot
	// area, the newest at its right edge.
	assert.Contains(t, page, `text-anchor="end">2000</text>`)
	assert.Contains(t, page, `text-anchor="end">5.0</text>`)
	polylines := regexp.MustCompile(`<polyline class="line" points="([^"]+)"/>`).FindAllStringSubmatch(page, -1)
	require.Len(t, polylines, 2)
	for _, pl := range polylines {
		pts := strings.Fields(pl[1])
		require.Len(t, pts, 120)
		for _, p := range pts {
			x, y, ok := strings.Cut(p, ",")
			require.True(t, ok, p)
			xf, err := strconv.ParseFloat(x, 64)
			require.NoError(t, err)
			yf, err := strconv.ParseFloat(y, 64)
			require.NoError(t, err)
			assert.True(t, xf >= chartLeft && xf <= chartLeft+chartPlotW, "x %v", xf)
			assert.True(t, yf >= chartTop && yf <= chartTop+chartPlotH, "y %v", yf)
		}
		assert.True(t, strings.HasPrefix(pts[len(pts)-1], strconv.Itoa(chartLeft+chartPlotW)+".0,"), "newest sample at now: %s", pts[len(pts)-1])
	}
}

func TestStatusPageWithoutHistoryOrPartitions(t *testing.T) {
	t.Parallel()
	h := StatusPage(func() Status {
		return Status{Version: "dev", Commit: "unknown", Started: time.Now(), Ready: errors.New("not a member of a consumer group generation")}
	})
	_, page := get(t, h, "/")
	assert.Contains(t, page, `not ready: not a member of a consumer group generation`)
	assert.Contains(t, page, `last offset commit: <b class="last-commit">never</b>`)
	assert.Contains(t, page, `no samples yet`)
	assert.Contains(t, page, `no partitions assigned`)
	assert.NotContains(t, page, `<polyline`)
}

func TestProbes(t *testing.T) {
	t.Parallel()
	fail := func() error { return errors.New("has not joined the consumer group yet") }
	ok := func() error { return nil }
	h := Handler(prometheus.NewRegistry(), Probes{Live: ok, Ready: fail, Started: fail}, nil)
	for path, want := range map[string]struct {
		code int
		body string
	}{
		"/healthz":  {200, "ok\n"},
		"/readyz":   {503, "has not joined the consumer group yet\n"},
		"/startupz": {503, "has not joined the consumer group yet\n"},
	} {
		code, body := get(t, h, path)
		assert.Equal(t, want.code, code, path)
		assert.Equal(t, want.body, body, path)
	}
	code, _ := get(t, Handler(prometheus.NewRegistry(), Probes{Started: ok}, nil), "/startupz")
	assert.Equal(t, 200, code)
}

func TestLagHistoryKeepsTheNewestSamplesInOrder(t *testing.T) {
	t.Parallel()
	h := NewLagHistory(3)
	assert.Empty(t, h.Samples())
	base := time.Unix(1000, 0)
	for i := range 5 {
		h.Add(LagSample{Time: base.Add(time.Duration(i) * time.Second), Messages: int64(i)})
		n := min(i+1, 3)
		got := h.Samples()
		require.Len(t, got, n)
		for j, s := range got {
			assert.Equal(t, int64(i-n+1+j), s.Messages, "after %d adds", i+1)
		}
	}
}

func TestLagHistoryRunSamplesAtOnceAndStopsWithItsContext(t *testing.T) {
	t.Parallel()
	h := NewLagHistory(10)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n := 0
	h.Run(ctx, time.Hour, func() LagSample { n++; return LagSample{Messages: 42} })
	assert.Equal(t, 1, n)
	assert.Equal(t, []LagSample{{Messages: 42}}, h.Samples())
}

func TestNiceCeil(t *testing.T) {
	t.Parallel()
	for in, want := range map[float64]float64{0: 1, 0.4: 1, 1: 1, 1.1: 2, 3: 5, 7: 10, 10: 10, 11: 20, 1190: 2000, 2500: 5000, 60000: 100000} {
		assert.Equal(t, want, niceCeil(in), "%v", in)
	}
}
