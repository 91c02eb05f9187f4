package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"time"
)

// BodyMode is the body of an injected error answer.
type BodyMode string

// Body modes of a Fault.
const (
	// BodyJSON answers {"code":<status>,"error":"<status text>"}.
	BodyJSON BodyMode = ""
	// BodyEmpty answers no body at all, as a load balancer might.
	BodyEmpty BodyMode = "empty"
	// BodyHTML answers a non-JSON page, as a proxy in front of the API might.
	BodyHTML BodyMode = "html"
)

// Fault is one injected misbehaviour. The zero Fault answers normally.
type Fault struct {
	// Route limits the fault to RouteHTTPAPI or RouteBatch; empty matches both.
	Route string
	// Status is the HTTP status to answer (e.g. 403, 500, 502, 503, 504);
	// 0 keeps the real answer, which with Delay makes a slow response.
	Status int
	// Ingest processes the request for real first (events are stored and
	// count toward rates) and only then answers Status: Amplitude's 5xx
	// "may or may not have been ingested".
	Ingest bool
	// Body is the error body; BodyJSON by default.
	Body BodyMode
	// Delay holds the answer this long. It ends early, answering nothing,
	// when the client disconnects or the server shuts down. Without Ingest
	// the request is processed only after the delay, so a client that gave
	// up has ingested nothing.
	Delay time.Duration
	// Reset closes the connection with a TCP RST instead of answering.
	Reset bool
}

// faultJSON is Fault on the wire: the delay is a Go duration string.
type faultJSON struct {
	Route  string   `json:"route,omitempty"`
	Status int      `json:"status,omitempty"`
	Ingest bool     `json:"ingest,omitempty"`
	Body   BodyMode `json:"body,omitempty"`
	Delay  string   `json:"delay,omitempty"`
	Reset  bool     `json:"reset,omitempty"`
}

// MarshalJSON writes the delay as a duration string ("15s").
func (f Fault) MarshalJSON() ([]byte, error) {
	j := faultJSON{Route: f.Route, Status: f.Status, Ingest: f.Ingest, Body: f.Body, Reset: f.Reset}
	if f.Delay > 0 {
		j.Delay = f.Delay.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads the form MarshalJSON writes.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var j faultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("decode fault: %w", err)
	}
	*f = Fault{Route: j.Route, Status: j.Status, Ingest: j.Ingest, Body: j.Body, Reset: j.Reset}
	if j.Delay != "" {
		d, err := time.ParseDuration(j.Delay)
		if err != nil {
			return fmt.Errorf("decode fault delay: %w", err)
		}
		f.Delay = d
	}
	return f.validate()
}

func (f Fault) validate() error {
	switch {
	case f.Route != "" && f.Route != RouteHTTPAPI && f.Route != RouteBatch:
		return fmt.Errorf("fault route %q: want %q, %q or empty", f.Route, RouteHTTPAPI, RouteBatch)
	case f.Status != 0 && (f.Status < 200 || f.Status > 599):
		return fmt.Errorf("fault status %d out of range", f.Status)
	case f.Body != BodyJSON && f.Body != BodyEmpty && f.Body != BodyHTML:
		return fmt.Errorf("fault body %q: want empty, %q or %q", f.Body, BodyEmpty, BodyHTML)
	case f.Delay < 0:
		return fmt.Errorf("fault delay %s is negative", f.Delay)
	}
	return nil
}

// DefaultFaultChoices are what a random fault picks from when none are
// configured: every retryable failure Amplitude documents, in both
// ingestion modes, plus bodies a proxy might send and a reset. 403 and slow
// answers are left out: a 403 stops a well-behaved client for good, and a
// slow answer makes every random fault cost a client timeout.
func DefaultFaultChoices() []Fault {
	return []Fault{
		{Status: 500}, {Status: 500, Ingest: true},
		{Status: 502}, {Status: 502, Ingest: true},
		{Status: 504}, {Status: 504, Ingest: true},
		{Status: 503},
		{Status: 502, Body: BodyHTML},
		{Status: 500, Body: BodyEmpty, Ingest: true},
		{Reset: true},
	}
}

// ScheduledFault is a fault queued for the next Count matching requests.
type ScheduledFault struct {
	Count int   `json:"count"`
	Fault Fault `json:"fault"`
}

// FaultState is the fault configuration, as GET /debug/faults shows it.
type FaultState struct {
	Next    []ScheduledFault `json:"next"`
	Rate    float64          `json:"rate"`
	Seed    uint64           `json:"seed"`
	Choices []Fault          `json:"choices"`
}

// faults is the fault schedule. Not safe for concurrent use; the
// Emulator's fault mutex guards it.
type faults struct {
	next    []ScheduledFault
	rate    float64
	seed    uint64
	choices []Fault
	rng     *rand.Rand
}

func newFaults(rate float64, seed uint64, choices []Fault) faults {
	if len(choices) == 0 {
		choices = DefaultFaultChoices()
	}
	return faults{
		rate: rate, seed: seed, choices: choices,
		rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
	}
}

// pick returns the fault for a request to route, if any: scheduled faults
// first, in order, then the random rate.
func (f *faults) pick(route string) (Fault, bool) {
	for i := range f.next {
		s := &f.next[i]
		if s.Fault.Route != "" && s.Fault.Route != route {
			continue
		}
		flt := s.Fault
		s.Count--
		if s.Count <= 0 {
			f.next = append(f.next[:i], f.next[i+1:]...)
		}
		return flt, true
	}
	if f.rate <= 0 || f.rng.Float64() >= f.rate {
		return Fault{}, false
	}
	// Draw even when no choice matches the route, so one route's traffic
	// does not shift the other's sequence more than its own requests do.
	flt := f.choices[f.rng.IntN(len(f.choices))]
	if flt.Route != "" && flt.Route != route {
		return Fault{}, false
	}
	return flt, true
}

// InjectFault makes the next n requests to f.Route (both routes when empty)
// misbehave as f. Faults queued earlier come first.
func (e *Emulator) InjectFault(n int, f Fault) error {
	if err := f.validate(); err != nil {
		return err
	}
	if n <= 0 {
		return fmt.Errorf("inject fault: count must be positive, is %d", n)
	}
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.faults.next = append(e.faults.next, ScheduledFault{Count: n, Fault: f})
	return nil
}

// SetFaultRate makes each request misbehave with probability rate, picking
// uniformly from choices (DefaultFaultChoices when none), with a fresh RNG
// seeded by seed.
func (e *Emulator) SetFaultRate(rate float64, seed uint64, choices ...Fault) error {
	if rate < 0 || rate > 1 {
		return fmt.Errorf("set fault rate: must be in [0, 1], is %g", rate)
	}
	for _, f := range choices {
		if err := f.validate(); err != nil {
			return err
		}
	}
	e.fmu.Lock()
	defer e.fmu.Unlock()
	next := e.faults.next
	e.faults = newFaults(rate, seed, choices)
	e.faults.next = next
	return nil
}

// ClearFaults drops scheduled faults and sets the random rate to 0.
func (e *Emulator) ClearFaults() {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	e.faults = newFaults(0, e.faults.seed, nil)
}

// Faults returns the fault configuration.
func (e *Emulator) Faults() FaultState {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return FaultState{
		Next:    append([]ScheduledFault{}, e.faults.next...),
		Rate:    e.faults.rate,
		Seed:    e.faults.seed,
		Choices: append([]Fault{}, e.faults.choices...),
	}
}

func (e *Emulator) pickFault(route string) (Fault, bool) {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return e.faults.pick(route)
}

// serveFault answers a request to route as f describes.
func (e *Emulator) serveFault(w http.ResponseWriter, r *http.Request, route string, f Fault) {
	e.mu.Lock()
	e.store.stats.Faults++
	e.mu.Unlock()
	e.logger.Info().Str("route", route).Int("status", f.Status).Bool("ingest", f.Ingest).
		Dur("delay", f.Delay).Bool("reset", f.Reset).Msg("injecting fault")

	var real response
	processed := false
	if f.Ingest {
		real, processed = e.handle(route, r), true
	}
	if f.Delay > 0 {
		if !processed {
			// net/http notices a client hanging up only once the body has
			// been read to the end, so read it now and keep it for later.
			b, err := io.ReadAll(io.LimitReader(r.Body, int64(max(e.cfg.HTTPAPI.MaxBytes, e.cfg.Batch.MaxBytes))*2+1))
			if err != nil {
				panic(http.ErrAbortHandler) // the client is gone already
			}
			r.Body = io.NopCloser(bytes.NewReader(b))
		}
		t := time.NewTimer(f.Delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
			// The client gave up or the server is shutting down. Returning
			// normally would send an empty 200 to a client still there;
			// aborting closes the connection instead.
			e.mu.Lock()
			e.store.stats.Abandoned++
			e.mu.Unlock()
			panic(http.ErrAbortHandler)
		}
	}
	if f.Reset {
		e.mu.Lock()
		e.store.stats.Resets++
		e.mu.Unlock()
		resetConn(w)
		return
	}
	if f.Status == 0 {
		if !processed {
			real = e.handle(route, r)
		}
		e.write(w, real)
		return
	}
	e.write(w, faultResponse(f.Status, f.Body))
}

func faultResponse(status int, mode BodyMode) response {
	resp := response{status: status}
	switch mode {
	case BodyEmpty:
	case BodyHTML:
		resp.contentType = "text/html"
		resp.body = []byte("<html><head><title>" + strconv.Itoa(status) + " " + http.StatusText(status) +
			"</title></head><body><h1>" + http.StatusText(status) + "</h1></body></html>\n")
	default:
		resp.body = errorBody(status, http.StatusText(status))
	}
	return resp
}

// resetConn drops the connection so the client sees a reset rather than an
// answer. SetLinger(0) makes Close send RST instead of FIN.
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		// HTTP/2 and recorders cannot hijack; this makes net/http abort
		// the stream without an answer.
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0) // best effort: a plain close still fails the request
	}
	_ = conn.Close() // the peer sees the reset; there is nothing to report
}
