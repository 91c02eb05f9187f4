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
		Membership: Membership{
			Member: true, Reason: "member", Since: now.Add(-time.Hour), Generation: 12,
			MemberID: "ampstream-0-5f1c", InstanceID: "ampstream-0", Owned: 2, Total: 4,
		},
		GroupLag: GroupLag{
			At: now.Add(-2 * time.Second), State: "Stable", Members: 2,
			Partitions: []GroupPartitionRow{
				{Topic: "events", Partition: 0, Committed: 500, End: 1590, Lag: 1090, LagSeconds: 3.25, LagSecondsKnown: true, Owned: true},
				{Topic: "events", Partition: 2, Committed: 40, End: 40, Lag: 0, LagSecondsKnown: true, Owned: true},
			},
		},
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
		`<span class="ok">member</span> since 2026-03-10T11:00:00Z (1h ago)`,
		`<td class="l">generation</td><td class="l">12</td>`,
		`<td class="l">member id</td><td class="l">ampstream-0-5f1c</td>`,
		`<td class="l">instance id</td><td class="l">ampstream-0</td>`,
		`<td class="l">partitions owned</td><td class="l">2 of 4</td>`,
		`group state <b class="group-state">Stable</b> · members: 2`, `every partition owned`, `last successful read <b>2s ago</b>`,
		`<td class="l">events</td><td>0</td><td>500</td><td>1590</td><td>1090</td><td>3.2</td><td class="l">a member</td>`,
		`<td class="l">events</td><td>2</td><td>40</td><td>40</td><td>0</td><td>0.0</td><td class="l">a member</td>`,
	} {
		assert.Contains(t, page, want)
	}
	assert.Less(t, strings.Index(page, "<td>0</td><td>500</td>"), strings.Index(page, "<td>1</td><td>900</td>"), "partitions sorted")
	assert.NotContains(t, page, "<script", "no JavaScript")
	assert.NotContains(t, page, "not a member")
	assert.NotContains(t, page, "nobody")

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
	assert.Contains(t, page, `<td class="l" colspan="7">not read yet</td>`)
	assert.Contains(t, page, `last successful read <b>never</b>`)
	assert.NotContains(t, page, `<polyline`)
}

// A replica that owns nothing shows why it is not a member and since when,
// and the lag of every partition as the brokers report it, with who owns it.
func TestStatusPageGroupWhenNotAMember(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	st := Status{
		Version: "1.4.2", Commit: "abc1234", Now: now, Started: now.Add(-time.Hour),
		Ready: errors.New("not a member of the consumer group: waiting for the assignment since 2026-03-10T11:57:00Z"),
		Membership: Membership{
			Reason: "waiting for the assignment", Since: now.Add(-3 * time.Minute), Generation: -1,
		},
		GroupLag: GroupLag{
			At: now.Add(-4 * time.Second), Err: errors.New("describe group g: coordinator not available"),
			State: "PreparingRebalance", Members: 1, Unowned: 2,
			Partitions: []GroupPartitionRow{
				{Topic: "events", Partition: 0, Committed: -1, End: 70, Lag: 70},
				{Topic: "events", Partition: 1, Committed: 900, End: 1000, Lag: 100, LagSeconds: 181.5, LagSecondsKnown: true},
			},
		},
	}
	_, page := get(t, StatusPage(func() Status { return st }), "/")
	for _, want := range []string{
		`<span class="bad">not a member: waiting for the assignment</span> since 2026-03-10T11:57:00Z (3m ago)`,
		`<td class="l">generation</td><td class="l">none</td>`,
		`<td class="l">member id</td><td class="l">none</td>`,
		`<td class="l">instance id</td><td class="l">none (dynamic membership)</td>`,
		`<td class="l">partitions owned</td><td class="l">0 of ?</td>`,
		`group state <b class="group-state">PreparingRebalance</b> · members: 1`,
		`<span class="bad">2 partitions owned by nobody</span>`,
		`last successful read <b>4s ago</b>`,
		`<span class="bad">last read failed: describe group g: coordinator not available</span>`,
		`<td class="l">events</td><td>0</td><td>none</td><td>70</td><td>70</td><td>–</td><td class="l"><span class="bad">nobody (group PreparingRebalance)</span></td>`,
		`<td class="l">events</td><td>1</td><td>900</td><td>1000</td><td>100</td><td>181.5</td><td class="l"><span class="bad">nobody (group PreparingRebalance)</span></td>`,
		`no partitions assigned`,
	} {
		assert.Contains(t, page, want)
	}

	// In a Stable group an unowned partition is owned by nobody; when the
	// group could not be described, ownership is unknown.
	st.GroupLag.State = "Stable"
	_, page = get(t, StatusPage(func() Status { return st }), "/")
	assert.Contains(t, page, `<td>100</td><td>181.5</td><td class="l"><span class="bad">nobody</span></td>`)
	st.GroupLag.State = "Unknown"
	_, page = get(t, StatusPage(func() Status { return st }), "/")
	assert.Contains(t, page, `<td>100</td><td>181.5</td><td class="l"><span class="bad">unknown (group not described)</span></td>`)

	// A partition whose offsets could not be read shows its last numbers, marked old.
	st.GroupLag.Partitions[1].Stale = true
	_, page = get(t, StatusPage(func() Status { return st }), "/")
	assert.Contains(t, page, `<td>1000</td><td>100 <span class="bad">(old: offsets unreadable)</span></td><td>181.5</td>`)
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
