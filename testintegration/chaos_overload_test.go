package testintegration

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/traffic"
)

// Overload figures. The backlog is 10× the in-flight cap, ~36 MB of
// events over 8 partitions. The RSS ceiling is generous: it only catches a
// gross regression at this size, while the in-flight gauge must stay at
// the cap exactly. CHAOS_OVERLOAD_SCALE=5 makes the backlog (~180 MB)
// exceed the ceiling, so a run at that scale proves the backlog stays in
// Kafka (CHAOS.md has the figures).
const (
	overloadCap        = 2000
	overloadEvents     = 10 * overloadCap // × CHAOS_OVERLOAD_SCALE
	overloadPad        = 1400             // bytes of padding per event (~1.8 KB each)
	overloadRSSCeiling = 160 << 10
	overloadDelay      = 200 * time.Millisecond
)

// TestChaosOverloadMemoryStaysBounded gives the real binary a backlog 10×
// its in-flight cap (limits.max_inflight_events=2000) against an Amplitude
// that answers every request 200 ms late, samples the child's RSS, Go heap
// and in-flight gauge throughout, and asserts they stay bounded: lag stays
// in Kafka, not in memory.
func TestChaosOverloadMemoryStaysBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: produces ~70 MB and runs the binary against a slow Amplitude")
	}
	t.Parallel()
	events := overloadEvents
	if n, err := strconv.Atoi(os.Getenv("CHAOS_OVERLOAD_SCALE")); err == nil && n > 1 {
		events *= n
	}
	bin := buildAmpstream(t)
	h := newHarness(t, 8, nil)
	g := traffic.New(51, 400, 0.3, nil)
	pad := `,"pad":"` + strings.Repeat("p", overloadPad) + `"}`
	var batch []kafka.Message
	size, total := 0, 0
	for i := range events {
		var m traffic.Msg
		if i%3 == 0 {
			m = g.UserOnly()
		} else {
			m = g.Normal()
		}
		v := append(m.Value[:len(m.Value)-1:len(m.Value)-1], pad...)
		batch = append(batch, kafka.Message{Key: m.Key, Value: v})
		size += len(v)
		total += len(v)
		if size > 600<<10 {
			h.kafka.Produce(t, h.topic, batch...)
			batch, size = nil, 0
		}
	}
	h.kafka.Produce(t, h.topic, batch...)
	t.Logf("backlog: %d events, %.1f MB", events, float64(total)/1e6)

	if err := h.emu.SetFaultRate(1, 51, emulator.Fault{Delay: overloadDelay}); err != nil {
		t.Fatal(err)
	}
	c := h.startChild(bin,
		"AMPSTREAM_LIMITS_MAX_INFLIGHT_EVENTS="+strconv.Itoa(overloadCap),
		"AMPSTREAM_LIMITS_PARTITION_MAX_INFLIGHT_EVENTS="+strconv.Itoa(overloadCap/2))
	started := time.Now()

	var peakRSS, peakHeap, peakInflight, samples int64
	var rssSum int64
	var timeline []string // every 2 s: elapsed, RSS, heap in use, in-flight events, events stored
	drainLimit := time.Duration(events/overloadEvents) * 150 * time.Second
	deadline := time.Now().Add(drainLimit)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		<-tick.C
		if !c.alive() {
			t.Fatalf("ampstream exited under overload: %v", c.err)
		}
		rss := c.rssKB()
		m := scrapeMetrics(c.admin, "ampstream_inflight_events", "go_memstats_heap_inuse_bytes")
		samples++
		if samples%10 == 0 {
			timeline = append(timeline, fmt.Sprintf("%.0fs:%dMB/%.0fMB/%d/%d",
				time.Since(started).Seconds(), rss>>10, m["go_memstats_heap_inuse_bytes"]/(1<<20), int(m["ampstream_inflight_events"]), h.emu.Stats().Ingested))
		}
		rssSum += rss
		peakRSS = max(peakRSS, rss)
		peakHeap = max(peakHeap, int64(m["go_memstats_heap_inuse_bytes"]))
		peakInflight = max(peakInflight, int64(m["ampstream_inflight_events"]))
		if h.emu.Stats().Ingested >= int64(events) && h.committedAll() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backlog not delivered within %s: %d of %d stored", drainLimit, h.emu.Stats().Ingested, events)
		}
	}
	elapsed := time.Since(started)
	h.emu.ClearFaults()
	rep := traffic.Check(h.emu, g.Expected())
	if !rep.OK() {
		t.Errorf("delivery: %s", rep)
	}
	h.assertCommitsCovered()
	timeouts := c.logCount("i/o timeout")
	c.term()

	t.Logf("timeline (elapsed:RSS/heap in use/in-flight/stored): %s", strings.Join(timeline, " "))
	if peakInflight > overloadCap {
		t.Errorf("in-flight events peaked at %d, above limits.max_inflight_events=%d", peakInflight, overloadCap)
	}
	if peakRSS > overloadRSSCeiling {
		t.Errorf("RSS peaked at %d MB with a %.0f MB backlog and an in-flight cap of %d events; want under %d MB",
			peakRSS>>10, float64(total)/1e6, overloadCap, overloadRSSCeiling>>10)
	}
	h.chaosLine("overload", rep, 0,
		fmt.Sprintf("cap=%d backlog_mb=%.1f delay=%s", overloadCap, float64(total)/1e6, overloadDelay),
		fmt.Sprintf("peak_rss_mb=%.1f mean_rss_mb=%.1f peak_heap_inuse_mb=%.1f peak_inflight=%d samples=%d",
			float64(peakRSS)/1024, float64(rssSum)/float64(samples)/1024, float64(peakHeap)/(1<<20), peakInflight, samples),
		"drain_s="+secs(elapsed), fmt.Sprintf("reader_io_timeouts=%d", timeouts))
}

// scrapeMetrics reads metrics from a Prometheus endpoint, summing the
// series of each name over their labels; missing names (or an endpoint not
// up yet) read as 0.
func scrapeMetrics(addr string, names ...string) map[string]float64 {
	out := map[string]float64{}
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	for series, v := range scrape(addr) {
		if name, _, _ := strings.Cut(series, "{"); want[name] {
			out[name] += v
		}
	}
	return out
}

// scrapeSeries returns every labelled series of the metric name on the
// /metrics page, keyed by the series as written (name{labels}).
func scrapeSeries(addr, name string) map[string]float64 {
	out := map[string]float64{}
	for series, v := range scrape(addr) {
		if strings.HasPrefix(series, name+"{") {
			out[series] = v
		}
	}
	return out
}

// scrape reads every sample of a Prometheus endpoint, keyed by the series
// as written; an endpoint not up yet reads as no samples.
func scrape(addr string) map[string]float64 {
	out := map[string]float64{}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/metrics", nil)
	if err != nil {
		return out
	}
	req.Close = true // no idle connection outlives the scrape
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && !strings.HasPrefix(f[0], "#") {
			v, _ := strconv.ParseFloat(f[1], 64)
			out[f[0]] = v
		}
	}
	return out
}
