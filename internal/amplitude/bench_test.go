package amplitude_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/ampstream/ampstream/internal/amplitude"
	"github.com/ampstream/ampstream/internal/traffic"
)

// benchEvents returns n synthetic events (~420 bytes each, as the
// end-to-end benchmark sends them): half from a few bursting devices, half
// from many normal ones.
func benchEvents(n int) []amplitude.Event {
	g := traffic.New(1, 20_000, 0.3, nil)
	out := make([]amplitude.Event, n)
	for i := range out {
		if i%2 == 0 {
			out[i].Body = g.Burst(i % 76).Value
		} else {
			out[i].Body = g.Normal().Value
		}
	}
	return out
}

// benchSend measures Send end to end against a local server that reads the
// body and answers 200: body building, gzip (above gzipMin) and HTTP.
func benchSend(b *testing.B, route amplitude.Route, events, gzipMin int) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		_, _ = io.WriteString(w, `{"code":200}`)
	}))
	defer srv.Close()
	c := amplitude.New(amplitude.Options{BaseURL: srv.URL, APIKey: "bench-api-key-0123456789abcdef", GzipMinBytes: gzipMin})
	defer c.Close()
	evs := benchEvents(events)
	size := 0
	for _, e := range evs {
		size += e.Len()
	}
	ctx := context.Background()
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		if r := c.Send(ctx, route, evs); r.Class != amplitude.Accepted {
			b.Fatalf("send: %+v", r)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*events), "ns/event")
}

// BenchmarkSendBatch2000 is a full Batch request with the default gzip
// threshold: in the end-to-end benchmark, gzip is ~10 % of all CPU.
func BenchmarkSendBatch2000(b *testing.B) { benchSend(b, amplitude.Batch, 2000, 16<<10) }

// BenchmarkSendBatch2000Identity is the same request without gzip.
func BenchmarkSendBatch2000Identity(b *testing.B) { benchSend(b, amplitude.Batch, 2000, 0) }

// BenchmarkSendRealtime100 is a full realtime-lane request (gzipped: 100
// such events are ~42 KB).
func BenchmarkSendRealtime100(b *testing.B) { benchSend(b, amplitude.HTTPAPI, 100, 16<<10) }
