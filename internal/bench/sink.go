package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// sink is the trivial Amplitude stand-in: it reads every POST body, answers
// {"code":200} and counts requests and bytes. It does as little as it can,
// because it shares the machine's two cores with the forwarder being
// measured: unless decode is set it neither inflates nor scans bodies, so it
// counts no events (the run's end is decided by committed offsets and the
// forwarder's own accounting, not by this count).
//
// With latency set, it inflates /2/httpapi bodies and records, per event,
// arrival minus the event's "time" field (the producer stamps the produce
// time there, in ms).
type sink struct {
	decode  bool
	latency bool

	requests   atomic.Int64
	first      atomic.Int64 // unix ns of the first request; 0 before it
	bytes      atomic.Int64 // body bytes as received (compressed when gzip)
	gzipped    atomic.Int64 // requests with Content-Encoding: gzip
	events     atomic.Int64 // events counted (identity bodies, or all with decode)
	byPath     [2]atomic.Int64
	bufs       sync.Pool
	mu         sync.Mutex
	latMS      []int32 // realtime-lane produce→arrival, ms
	latBatchMS []int32 // the same for events that came through /batch

	eventMarker, timeMarker, okBody []byte

	srv  *http.Server
	addr string
	done chan error
}

func startSink(decode, latency bool) (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{decode: decode || latency, latency: latency, addr: ln.Addr().String(), done: make(chan error, 1)}
	s.bufs.New = func() any { return new(bytes.Buffer) }
	s.eventMarker, s.timeMarker, s.okBody = []byte(eventMarker), []byte(timeMarker), []byte(okBody)
	s.srv = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

func (s *sink) url() string { return "http://" + s.addr }

func (s *sink) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		_ = s.srv.Close()
	}
	return <-s.done
}

// Markers the sink scans for, and its answer.
const (
	eventMarker = `"event_type"`
	timeMarker  = `"time":`
	okBody      = `{"code":200}`

	maxLatencyMS = 3_600_000 // anything older is a backfill event
)

func (s *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	buf := s.bufs.Get().(*bytes.Buffer)
	defer s.bufs.Put(buf)
	buf.Reset()
	if _, err := buf.ReadFrom(r.Body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	now := time.Now()
	arrival := now.UnixMilli()
	s.first.CompareAndSwap(0, now.UnixNano())
	s.requests.Add(1)
	s.bytes.Add(int64(buf.Len()))
	body := buf.Bytes()
	if !s.decode {
		// Not even identity bodies are scanned: the baseline sends those,
		// ampstream's Batch lane sends gzip, and the sink must cost both
		// the same.
		body = nil
	}
	if r.Header.Get("Content-Encoding") == "gzip" {
		s.gzipped.Add(1)
		if s.decode {
			zr, err := gzip.NewReader(bytes.NewReader(buf.Bytes()))
			if err == nil {
				body, err = io.ReadAll(zr)
			}
			if err != nil {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
		}
	}
	batch := r.URL.Path == "/batch"
	if batch {
		s.byPath[1].Add(1)
	} else {
		s.byPath[0].Add(1)
	}
	if body != nil {
		s.events.Add(int64(bytes.Count(body, s.eventMarker)))
		if s.latency {
			s.record(body, arrival, batch)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(s.okBody)
}

// record parses every top-level "time": value of body. The synthetic events
// carry exactly one "time" member each and none nested.
func (s *sink) record(body []byte, arrival int64, batch bool) {
	var lats []int32
	for {
		i := bytes.Index(body, s.timeMarker)
		if i < 0 {
			break
		}
		body = body[i+len(s.timeMarker):]
		j := 0
		for j < len(body) && body[j] >= '0' && body[j] <= '9' {
			j++
		}
		// Backfill events are two days old on purpose: not a latency.
		if t, err := strconv.ParseInt(string(body[:j]), 10, 64); err == nil && arrival-t < maxLatencyMS {
			lats = append(lats, int32(arrival-t))
		}
		body = body[j:]
	}
	s.mu.Lock()
	if batch {
		s.latBatchMS = append(s.latBatchMS, lats...)
	} else {
		s.latMS = append(s.latMS, lats...)
	}
	s.mu.Unlock()
}

// firstRequest is when the first request arrived; zero before it.
func (s *sink) firstRequest() time.Time {
	if ns := s.first.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// SinkStats is what a sink saw.
type SinkStats struct {
	Requests        int64 `json:"requests"`
	HTTPAPIRequests int64 `json:"httpapi_requests"`
	BatchRequests   int64 `json:"batch_requests"`
	GzipRequests    int64 `json:"gzip_requests"`
	WireBytes       int64 `json:"wire_bytes"`
	// EventsCounted counts events only when the sink decodes bodies
	// (--count-events, quick mode, the latency run); 0 otherwise.
	EventsCounted int64 `json:"events_counted"`
}

func (s *sink) stats() SinkStats {
	return SinkStats{
		Requests:        s.requests.Load(),
		HTTPAPIRequests: s.byPath[0].Load(),
		BatchRequests:   s.byPath[1].Load(),
		GzipRequests:    s.gzipped.Load(),
		WireBytes:       s.bytes.Load(),
		EventsCounted:   s.events.Load(),
	}
}

// Latency summarises produce→acceptance times in milliseconds.
type Latency struct {
	Events int     `json:"events"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

func summarize(ms []int32) Latency {
	f := make([]float64, len(ms))
	for i, v := range ms {
		f[i] = float64(v)
	}
	return summarizeFloat(f)
}

func summarizeFloat(ms []float64) Latency {
	if len(ms) == 0 {
		return Latency{}
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	q := func(p float64) float64 { return s[min(int(p*float64(len(s))), len(s)-1)] }
	return Latency{Events: len(s), P50MS: q(0.50), P90MS: q(0.90), P99MS: q(0.99), MaxMS: s[len(s)-1]}
}

func (s *sink) latencies() (realtime, batch Latency) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return summarize(s.latMS), summarize(s.latBatchMS)
}
