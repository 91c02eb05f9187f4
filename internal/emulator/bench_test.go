package emulator

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// batchBody builds a 2000-event request in the shape ampstream sends
// (about 330 bytes an event, 200 devices) and returns the offsets of the
// 8-digit field in every insert_id, so each iteration can make them new
// without rebuilding the body.
func batchBody() ([]byte, []int) {
	var b bytes.Buffer
	var offsets []int
	b.WriteString(`{"api_key":"` + testKey + `","events":[`)
	for i := range 2000 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"event_type":"video_play","device_id":"device-%05d","user_id":"user-%05d","time":1764244800000,`+
			`"session_id":1764244700000,"platform":"Web","os_name":"Chrome","app_version":"4.12.0",`+
			`"event_properties":{"video_id":"v-%d","position_s":%d,"quality":"1080p","tags":["a","b"]},"insert_id":"`,
			i%200, i%200, i, i%600)
		offsets = append(offsets, b.Len())
		fmt.Fprintf(&b, `00000000-%06d"}`, i)
	}
	b.WriteString(`]}`)
	return b.Bytes(), offsets
}

// BenchmarkEmulatorBatch measures one 2000-event /batch request through the
// handler: parse, validate, rate check, dedup and log. ampstream's own
// benchmark needs well over 100k events/s from it on 2 cores.
func BenchmarkEmulatorBatch(b *testing.B) {
	body, offsets := batchBody()
	var tick atomic.Int64
	start := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	cfg := DefaultConfig()
	// One second per request keeps every device at 10 events/s.
	cfg.Now = func() time.Time { return start.Add(time.Duration(tick.Add(1)) * time.Second) }
	cfg.KeepRaw = false
	cfg.MaxLogEvents = 100_000
	cfg.MaxDedupKeys = 1_000_000
	emu := New(cfg, zerolog.Nop())

	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		digits := fmt.Appendf(nil, "%08d", i)
		for _, off := range offsets {
			copy(body[off:], digits)
		}
		req := httptest.NewRequest(http.MethodPost, PathBatch, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		emu.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
	events := float64(b.N) * 2000
	b.ReportMetric(events/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/events, "ns/event")
}
