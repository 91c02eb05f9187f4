package admin

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// LagSample is this replica's lag at one moment: Messages summed over its
// partitions, Seconds the largest of them.
type LagSample struct {
	Time     time.Time
	Messages int64
	Seconds  float64
}

// LagHistory keeps the last samples for the status page's chart. It holds at
// most its capacity; the oldest sample drops off first.
type LagHistory struct {
	mu   sync.Mutex
	ring []LagSample
	next int
	full bool
}

// NewLagHistory keeps the last n samples (n ≥ 1).
func NewLagHistory(n int) *LagHistory { return &LagHistory{ring: make([]LagSample, max(n, 1))} }

// Add records s.
func (h *LagHistory) Add(s LagSample) {
	h.mu.Lock()
	h.ring[h.next] = s
	h.next = (h.next + 1) % len(h.ring)
	if h.next == 0 {
		h.full = true
	}
	h.mu.Unlock()
}

// Samples returns the kept samples, oldest first.
func (h *LagHistory) Samples() []LagSample {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.full {
		return append([]LagSample(nil), h.ring[:h.next]...)
	}
	return append(append([]LagSample(nil), h.ring[h.next:]...), h.ring[:h.next]...)
}

// Run adds sample() at once and then every interval until ctx ends. It is
// synchronous: the caller owns the goroutine it runs in and waits for it.
func (h *LagHistory) Run(ctx context.Context, every time.Duration, sample func() LagSample) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		h.Add(sample())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// chart is one small server-rendered SVG line chart.
type chart struct {
	Title   string
	Unit    string
	W, H    int // viewBox size
	Left    int // plot area origin (pixels)
	Top     int
	PlotW   int
	PlotH   int
	Points  string // polyline points "x,y x,y ..."; only digits, dots, commas and spaces
	Max     string // y-axis top label
	Mid     string // y-axis middle label
	MidY    float64
	Last    string // the newest value, as text
	Span    string // x-axis extent, e.g. "10m"
	Samples int
}

// Chart geometry in SVG user units: room on the left for the y labels and
// below for the x labels.
const (
	chartW, chartH          = 420, 140
	chartLeft, chartTop     = 52, 12
	chartRight, chartBottom = 10, 22
	chartPlotW, chartPlotH  = chartW - chartLeft - chartRight, chartH - chartTop - chartBottom
)

// newChart plots value(s) for the samples over window, ending at now.
func newChart(title, unit string, samples []LagSample, now time.Time, window time.Duration, value func(LagSample) float64, format func(float64) string) chart {
	c := chart{
		Title: title, Unit: unit, W: chartW, H: chartH, Left: chartLeft, Top: chartTop,
		PlotW: chartPlotW, PlotH: chartPlotH, Span: shortDuration(window), Samples: len(samples),
		MidY: float64(chartTop) + float64(chartPlotH)/2,
	}
	top := 0.0
	for _, s := range samples {
		top = math.Max(top, value(s))
	}
	top = niceCeil(top)
	c.Max, c.Mid = format(top), format(top/2)
	start := now.Add(-window)
	var b strings.Builder
	for _, s := range samples {
		if s.Time.Before(start) {
			continue
		}
		x := float64(chartLeft) + float64(chartPlotW)*float64(s.Time.Sub(start))/float64(window)
		y := float64(chartTop+chartPlotH) - float64(chartPlotH)*value(s)/top
		fmt.Fprintf(&b, "%s,%s ", strconv.FormatFloat(x, 'f', 1, 64), strconv.FormatFloat(y, 'f', 1, 64))
	}
	c.Points = strings.TrimSpace(b.String())
	if n := len(samples); n > 0 {
		c.Last = format(value(samples[n-1]))
	}
	return c
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten (at least 1), so
// the axis reads well.
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

// shortDuration is time.Duration.String without zero tails: 10m, not 10m0s.
func shortDuration(d time.Duration) string {
	s := d.Round(time.Second).String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
