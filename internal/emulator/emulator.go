package emulator

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Emulator is an http.Handler that answers as Amplitude's HTTP V2 and Batch
// APIs do, and records what it ingests. Build it with New.
type Emulator struct {
	cfg      Config
	logger   zerolog.Logger
	keys     map[string]struct{}
	silenced map[string]struct{}
	quotaOn  bool // some route has a daily quota, so ingested events are counted

	// mu guards limiter and store. It is held only for the stateful part
	// of a request, after the body is read, parsed and validated.
	mu      sync.Mutex
	limiter *limiter
	store   *store

	// checkedPool recycles the per-request event slices (*[]checked).
	checkedPool sync.Pool

	// fmu guards faults; never held together with mu.
	fmu    sync.Mutex
	faults faults
}

// New returns an Emulator. It panics on a Config that Validate rejects,
// since that is a bug in the caller's test or flag handling; call Validate
// first to handle the error instead.
func New(cfg Config, logger zerolog.Logger) *Emulator {
	if err := cfg.Validate(); err != nil {
		panic(fmt.Sprintf("emulator: invalid config: %v", err))
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	e := &Emulator{
		cfg:      cfg,
		logger:   logger.With().Str("component", "emulator").Logger(),
		keys:     set(cfg.APIKeys),
		silenced: set(cfg.SilencedDevices),
		quotaOn:  cfg.HTTPAPI.DailyQuota > 0 || cfg.Batch.DailyQuota > 0,
		limiter:  newLimiter(),
		store:    newStore(),
		faults:   newFaults(cfg.FaultRate, cfg.FaultSeed, cfg.FaultChoices),
	}
	e.checkedPool.New = func() any { return new([]checked) }
	return e
}

func set(items []string) map[string]struct{} {
	m := make(map[string]struct{}, len(items))
	for _, s := range items {
		m[s] = struct{}{}
	}
	return m
}

// Events returns the events stored for a device, in arrival order. Events
// sent without device_id are filed under UserDeviceID(user_id).
func (e *Emulator) Events(deviceID string) []Ingested {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.store.log[deviceID])
}

// AllDevices returns every device with logged events, sorted.
func (e *Emulator) AllDevices() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]string, 0, len(e.store.log))
	for d := range e.store.log {
		out = append(out, d)
	}
	slices.Sort(out)
	return out
}

// Stats returns a copy of the counters.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.store.stats
	s.ByStatus = make(map[int]int64, len(e.store.stats.ByStatus))
	for k, v := range e.store.stats.ByStatus {
		s.ByStatus[k] = v
	}
	s.IngestedByRoute = maps.Clone(e.store.stats.IngestedByRoute)
	s.UserThrottles = maps.Clone(e.store.stats.UserThrottles)
	s.UserThrottled = maps.Clone(e.store.stats.UserThrottled)
	return s
}

// Reset forgets everything ingested, every rate and quota count and every
// counter. Fault settings stay.
func (e *Emulator) Reset() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.limiter = newLimiter()
	e.store = newStore()
}

// ServeHTTP answers the two API routes and the /debug/ endpoints. Any
// other path is answered as Amplitude answers an unknown path.
func (e *Emulator) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, debugPrefix) {
		e.serveDebug(w, r)
		return
	}
	var route string
	switch r.URL.Path {
	case PathHTTPAPI:
		route = RouteHTTPAPI
	case PathBatch:
		route = RouteBatch
	}
	e.mu.Lock()
	e.store.stats.Requests++
	e.mu.Unlock()
	if route != "" {
		if f, ok := e.pickFault(route); ok {
			e.serveFault(w, r, route, f)
			return
		}
	}
	resp := e.handle(route, r)
	if resp.status != http.StatusOK {
		e.logger.Debug().Str("path", r.URL.Path).Int("status", resp.status).RawJSON("answer", resp.body).Msg("request refused")
	}
	e.write(w, resp)
}

// response is an answer not yet written.
type response struct {
	status      int
	body        []byte
	contentType string // application/json when empty
	retryAfter  bool
}

func (e *Emulator) write(w http.ResponseWriter, resp response) {
	e.mu.Lock()
	e.store.stats.ByStatus[resp.status]++
	e.mu.Unlock()
	h := w.Header()
	if resp.body != nil {
		ct := resp.contentType
		if ct == "" {
			ct = "application/json"
		}
		h.Set("Content-Type", ct)
	}
	h.Set("Content-Length", strconv.Itoa(len(resp.body)))
	if (resp.retryAfter || resp.status == http.StatusServiceUnavailable) && e.cfg.RetryAfter > 0 {
		secs := (e.cfg.RetryAfter + time.Second - 1) / time.Second
		h.Set("Retry-After", strconv.FormatInt(int64(secs), 10))
	}
	w.WriteHeader(resp.status)
	_, _ = w.Write(resp.body) // a client that left cannot be told
}

// Error texts Amplitude documents.
const (
	errInvalidPath   = "Invalid request path"
	errMissingBody   = "Missing request body"
	errInvalidJSON   = "Invalid JSON request body"
	errMissingField  = "Request missing required field"
	errInvalidEvent  = "Invalid event JSON"
	errInvalidKey    = "Invalid API key: "
	errInvalidFields = "Invalid field values on some events"
	errInvalidIDLen  = "Invalid id length for user_id or device_id"
	errSilenced      = "Events silenced for device_id"
	errTooLarge      = "Payload too large"
	errThrottled     = "Too many requests for some devices and users"
)

// apiError is every 400 and 413 body; empty keys are left out, as
// Amplitude may do and the SDKs tolerate.
type apiError struct {
	Code                       int        `json:"code"`
	Error                      string     `json:"error"`
	MissingField               string     `json:"missing_field,omitempty"`
	EventsWithInvalidFields    indexLists `json:"events_with_invalid_fields,omitempty"`
	EventsWithMissingFields    indexLists `json:"events_with_missing_fields,omitempty"`
	EventsWithInvalidIDLengths indexLists `json:"events_with_invalid_id_lengths,omitempty"`
	EPSThreshold               int        `json:"eps_threshold,omitempty"`
	SilencedDevices            []string   `json:"silenced_devices,omitempty"`
	SilencedEvents             []int      `json:"silenced_events,omitempty"`
}

// throttleError is the 429 body. The throttled maps are always present, as
// in every documented example; the quota maps only when non-empty.
type throttleError struct {
	Code                      int            `json:"code"`
	Error                     string         `json:"error"`
	EPSThreshold              int            `json:"eps_threshold"`
	ThrottledDevices          map[string]int `json:"throttled_devices"`
	ThrottledUsers            map[string]int `json:"throttled_users"`
	ThrottledEvents           []int          `json:"throttled_events"`
	ExceededDailyQuotaDevices map[string]int `json:"exceeded_daily_quota_devices,omitempty"`
	ExceededDailyQuotaUsers   map[string]int `json:"exceeded_daily_quota_users,omitempty"`
}

func errorBody(status int, msg string) []byte {
	return mustJSON(apiError{Code: status, Error: msg})
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("emulator: encode answer: %v", err)) // only maps, slices and strings: cannot happen
	}
	return b
}

func bad(msg string) response {
	return response{status: http.StatusBadRequest, body: errorBody(http.StatusBadRequest, msg)}
}

func (e *Emulator) countInvalid(n int) {
	e.mu.Lock()
	e.store.stats.Invalid += int64(n)
	e.mu.Unlock()
}

// handle runs the checks in the order the spec infers (amplitude-api.md
// §6.3), then per-event validation, silencing, rate and quota limits, and
// finally stores the events. route is empty for an unknown path.
func (e *Emulator) handle(route string, r *http.Request) response {
	maxBytes := max(e.cfg.HTTPAPI.MaxBytes, e.cfg.Batch.MaxBytes)
	var rc *RouteConfig
	if route != "" {
		rc = e.cfg.route(route)
		maxBytes = rc.MaxBytes
	}
	raw, body, err := readBody(r, maxBytes)
	switch {
	case errors.Is(err, errBodyTooLarge):
		// The body is not read to the end, so an oversized request gets 413
		// even when it is also malformed.
		return response{status: http.StatusRequestEntityTooLarge, body: errorBody(http.StatusRequestEntityTooLarge, errTooLarge)}
	case err != nil:
		e.logger.Debug().Err(err).Msg("unreadable body")
		return bad(errInvalidJSON)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return bad(errMissingBody)
	}
	env, ok := parseEnvelope(body)
	if !ok {
		return bad(errInvalidJSON)
	}
	apiKey, ok := str(env.apiKey)
	if !ok || apiKey == "" {
		return response{status: http.StatusBadRequest, body: mustJSON(apiError{
			Code: http.StatusBadRequest, Error: errMissingField, MissingField: "api_key",
		})}
	}
	if isNull(env.events) {
		return response{status: http.StatusBadRequest, body: mustJSON(apiError{
			Code: http.StatusBadRequest, Error: errMissingField, MissingField: "events",
		})}
	}
	if _, ok := e.keys[apiKey]; len(e.keys) > 0 && !ok {
		return bad(errInvalidKey + apiKey)
	}
	buf := e.checkedPool.Get().(*[]checked)
	defer func() {
		clear(*buf) // drop references into the body before pooling
		e.checkedPool.Put(buf)
	}()
	events, v, ok := parseEvents(env.events, minIDLength(env.options), e.cfg.FirstIndexOnly, (*buf)[:0])
	*buf = events
	if !ok {
		return bad(errInvalidEvent)
	}
	if route == "" {
		return bad(errInvalidPath)
	}
	if len(events) > rc.MaxEvents {
		e.countInvalid(len(events))
		return response{status: http.StatusRequestEntityTooLarge, body: errorBody(http.StatusRequestEntityTooLarge, errTooLarge)}
	}
	if v.failed() {
		e.countInvalid(len(events))
		msg := errInvalidFields
		if v.missing == nil && v.invalid == nil {
			msg = errInvalidIDLen
		}
		return response{status: http.StatusBadRequest, body: mustJSON(apiError{
			Code: http.StatusBadRequest, Error: msg,
			EventsWithInvalidFields: v.invalid, EventsWithMissingFields: v.missing, EventsWithInvalidIDLengths: v.idLengths,
		})}
	}

	if resp, silenced := e.checkSilenced(rc, events); silenced {
		e.countInvalid(len(events))
		return resp
	}

	ids := groupIDs(apiKey, events)
	now := e.cfg.Now()
	e.mu.Lock()
	e.limiter.sweep(&e.cfg, now)
	if v := e.limiter.check(route, rc, ids, now); v.rejected() {
		if e.cfg.CountRejected {
			e.limiter.addRate(route, rc, ids, now)
		}
		e.store.stats.Throttled += int64(len(events))
		if len(v.throttledUsers) > 0 {
			if e.store.stats.UserThrottles == nil {
				e.store.stats.UserThrottles, e.store.stats.UserThrottled = map[string]int64{}, map[string]int64{}
			}
			e.store.stats.UserThrottles[route]++
			for u := range v.throttledUsers {
				e.store.stats.UserThrottled[u]++
			}
		}
		e.mu.Unlock()
		return throttled(rc, &v, events)
	}
	e.limiter.addRate(route, rc, ids, now)
	if e.quotaOn {
		e.limiter.addDaily(ids, now)
	}
	e.store.ingest(&e.cfg, route, apiKey, events, now)
	e.store.stats.Accepted += int64(len(events))
	e.mu.Unlock()

	b := make([]byte, 0, 96)
	b = append(b, `{"code":200,"events_ingested":`...)
	b = strconv.AppendInt(b, int64(len(events)), 10)
	b = append(b, `,"payload_size_bytes":`...)
	b = strconv.AppendInt(b, int64(len(raw)), 10)
	b = append(b, `,"server_upload_time":`...)
	b = strconv.AppendInt(b, now.UnixMilli(), 10)
	b = append(b, '}')
	return response{status: http.StatusOK, body: b}
}

func epsThreshold(rc *RouteConfig) int {
	if rc.ReportedEPSThreshold > 0 {
		return rc.ReportedEPSThreshold
	}
	return rc.EPS
}

func (e *Emulator) checkSilenced(rc *RouteConfig, events []checked) (response, bool) {
	if len(e.silenced) == 0 {
		return response{}, false
	}
	body := apiError{Code: http.StatusBadRequest, Error: errSilenced, EPSThreshold: epsThreshold(rc)}
	for i := range events {
		d := events[i].deviceID
		if _, ok := e.silenced[string(d)]; !ok || len(d) == 0 {
			continue
		}
		body.SilencedEvents = append(body.SilencedEvents, i)
		if !slices.Contains(body.SilencedDevices, string(d)) {
			body.SilencedDevices = append(body.SilencedDevices, string(d))
		}
	}
	if body.SilencedEvents == nil {
		return response{}, false
	}
	return response{status: http.StatusBadRequest, body: mustJSON(body)}, true
}

// groupIDs counts the request's events per device_id and per user_id. An
// event without device_id has no device counter: Amplitude derives one
// from the user_id, which the user counter already limits.
func groupIDs(apiKey string, events []checked) []idCount {
	var ids []idCount
	// Lookups with m[string(b)] do not allocate; only a new ID does.
	devices, users := map[string]int{}, map[string]int{}
	bump := func(m map[string]int, id []byte, device bool) {
		if i, ok := m[string(id)]; ok {
			ids[i].n++
			return
		}
		k := idKey{apiKey: apiKey, id: string(id), device: device}
		m[k.id] = len(ids)
		ids = append(ids, idCount{key: k, n: 1})
	}
	for i := range events {
		if d := events[i].deviceID; len(d) > 0 {
			bump(devices, d, true)
		}
		if u := events[i].userID; len(u) > 0 {
			bump(users, u, false)
		}
	}
	return ids
}

func throttled(rc *RouteConfig, v *verdict, events []checked) response {
	body := throttleError{
		Code: http.StatusTooManyRequests, Error: errThrottled, EPSThreshold: epsThreshold(rc),
		ThrottledDevices: v.throttledDevices, ThrottledUsers: v.throttledUsers,
		ExceededDailyQuotaDevices: v.quotaDevices, ExceededDailyQuotaUsers: v.quotaUsers,
		ThrottledEvents: []int{},
	}
	if body.ThrottledDevices == nil {
		body.ThrottledDevices = map[string]int{}
	}
	if body.ThrottledUsers == nil {
		body.ThrottledUsers = map[string]int{}
	}
	in := func(m map[string]int, k []byte) bool {
		_, ok := m[string(k)]
		return len(k) > 0 && ok
	}
	for i := range events {
		d, u := events[i].deviceID, events[i].userID
		if in(v.throttledDevices, d) || in(v.quotaDevices, d) || in(v.throttledUsers, u) || in(v.quotaUsers, u) {
			body.ThrottledEvents = append(body.ThrottledEvents, i)
		}
	}
	return response{status: http.StatusTooManyRequests, body: mustJSON(body), retryAfter: true}
}

var errBodyTooLarge = errors.New("body too large")

// readBody returns the body as received (raw) and after gzip
// decompression (body). Amplitude counts events, and so bytes, after
// decompression; raw is what payload_size_bytes reports.
func readBody(r *http.Request, maxBytes int) (raw, body []byte, err error) {
	gz := strings.EqualFold(strings.TrimSpace(r.Header.Get("Content-Encoding")), "gzip")
	rawMax := maxBytes
	if gz {
		// Incompressible data grows a little under gzip; allow for it so
		// the limit applies to the decompressed size.
		rawMax = maxBytes + maxBytes/100 + 1024
	}
	raw, err = readAtMost(r.Body, rawMax, r.ContentLength)
	if err != nil || !gz || len(raw) == 0 {
		return raw, raw, err
	}
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return raw, nil, fmt.Errorf("open gzip body: %w", err)
	}
	body, err = readAtMost(zr, maxBytes, -1)
	if err != nil {
		return raw, nil, err
	}
	return raw, body, nil
}

// readAtMost reads r to the end, or fails with errBodyTooLarge past max
// bytes. size is the expected length, or negative when unknown.
func readAtMost(r io.Reader, maxBytes int, size int64) ([]byte, error) {
	if r == nil || size == 0 {
		return nil, nil
	}
	if size > int64(maxBytes) {
		return nil, errBodyTooLarge
	}
	c := 4096
	if size > 0 {
		c = int(size) + 1 // +1 so the final Read sees EOF without growing
	}
	b := make([]byte, 0, c)
	lr := io.LimitReader(r, int64(maxBytes)+1)
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := lr.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read body: %w", err)
		}
	}
	if len(b) > maxBytes {
		return nil, errBodyTooLarge
	}
	return b, nil
}
