package deliver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"

	"github.com/ampstream/ampstream/internal/amplitude"
	"github.com/ampstream/ampstream/internal/event"
	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/route"
)

// ev is an event as the fake Amplitude reads it back from the request.
type ev struct {
	Key  string `json:"device_id"`
	User string `json:"user_id"`
	N    int    `json:"n"` // the event's place in its key's Submit order
	Bad  bool   `json:"bad"`
	IID  string `json:"insert_id"`
	size int
}

// request is one call the fake Amplitude answered.
type request struct {
	at    time.Time
	route amplitude.Route
	evs   []ev
	res   amplitude.Result
}

func (r request) keys() []string {
	var ks []string
	for _, e := range r.evs {
		if !slices.Contains(ks, e.Key) {
			ks = append(ks, e.Key)
		}
	}
	return ks
}

func (r request) has(key string) bool {
	return slices.ContainsFunc(r.evs, func(e ev) bool { return e.Key == key })
}

// answerFunc scripts the fake: call is the 0-based call number.
type answerFunc func(ctx context.Context, call int, r amplitude.Route, evs []ev) amplitude.Result

// fakeAmp is Amplitude as a Sender. It records every request, ingests the
// events of the requests it answers 200, and checks the delivery invariants
// when a request arrives:
//   - no two requests in flight hold the same key's events;
//   - a request carrying a key's event n comes after every earlier event of
//     that key was resolved (accepted or rejected), whatever its lane.
type fakeAmp struct {
	answer answerFunc
	own    *fakeOwner

	mu       sync.Mutex
	calls    []request
	ingested map[string][]int // per key, the n of every ingested event, in ingestion order
	inflight map[string]int
	errs     []string
	notify   chan struct{}
}

func newFakeAmp(own *fakeOwner, answer answerFunc) *fakeAmp {
	return &fakeAmp{answer: answer, own: own, ingested: map[string][]int{}, inflight: map[string]int{}, notify: make(chan struct{}, 1)}
}

// BodySize mirrors amplitude.Client: a 20-byte envelope plus the events and their commas.
func (f *fakeAmp) BodySize(n, sum int) int {
	if n == 0 {
		return 20
	}
	return 20 + sum + n - 1
}

func (f *fakeAmp) Send(ctx context.Context, r amplitude.Route, events []amplitude.Event) amplitude.Result {
	evs := make([]ev, len(events))
	for i, e := range events {
		raw := append(append([]byte(nil), e.Head...), e.Body...)
		if err := json.Unmarshal(raw, &evs[i]); err != nil {
			panic(fmt.Sprintf("event %d of a request is not JSON (%v): %s", i, err, raw))
		}
		evs[i].size = len(raw)
	}
	req := request{at: time.Now(), route: r, evs: evs}
	f.mu.Lock()
	call := len(f.calls)
	f.calls = append(f.calls, req)
	for _, k := range req.keys() {
		if f.inflight[k] > 0 {
			f.errs = append(f.errs, fmt.Sprintf("call %d: key %s is already in another request in flight", call, k))
		}
		f.inflight[k]++
	}
	f.mu.Unlock()
	f.own.checkPriorResolved(f, call, evs)

	res := f.answer(ctx, call, r, evs)

	f.mu.Lock()
	f.calls[call].res = res
	if res.Class == amplitude.Accepted {
		for _, e := range evs {
			f.ingested[e.Key] = append(f.ingested[e.Key], e.N)
		}
	}
	for _, k := range req.keys() {
		f.inflight[k]--
	}
	f.mu.Unlock()
	select {
	case f.notify <- struct{}{}:
	default:
	}
	return res
}

func (f *fakeAmp) errorf(format string, args ...any) {
	f.mu.Lock()
	f.errs = append(f.errs, fmt.Sprintf(format, args...))
	f.mu.Unlock()
}

// requests returns a copy of the calls so far.
func (f *fakeAmp) requests() []request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// fate is what the owner heard about an item.
type fate struct {
	accepted int
	rejected int
	reason   string
	at       time.Time
}

// fakeOwner records every item's fate and the Submit order per key.
type fakeOwner struct {
	mu       sync.Mutex
	byKey    map[string][]*Item // Submit order
	fates    map[*Item]*fate
	resolved int
	changed  chan struct{}
	revoked  bool
}

func newFakeOwner() *fakeOwner {
	return &fakeOwner{byKey: map[string][]*Item{}, fates: map[*Item]*fate{}, changed: make(chan struct{}, 1)}
}

func (o *fakeOwner) Accepted(items []*Item) {
	for _, it := range items {
		o.resolve(it, true, "")
	}
}

func (o *fakeOwner) Rejected(it *Item, reason, _ string) { o.resolve(it, false, reason) }

// AppendInsertIDHead gives an item with NoInsertID the id "iid-" and its
// Seq.
func (o *fakeOwner) AppendInsertIDHead(dst []byte, it *Item) []byte {
	return event.AppendInsertIDHead(dst, []byte("iid-"), int64(it.Seq))
}

func (o *fakeOwner) Revoked() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.revoked
}

func (o *fakeOwner) resolve(it *Item, accepted bool, reason string) {
	o.mu.Lock()
	f := o.fates[it]
	if f == nil {
		f = &fate{}
		o.fates[it] = f
	}
	if f.accepted+f.rejected == 0 {
		o.resolved++
		f.at = time.Now()
	}
	if accepted {
		f.accepted++
	} else {
		f.rejected++
		f.reason = reason
	}
	o.mu.Unlock()
	select {
	case o.changed <- struct{}{}:
	default:
	}
}

func (o *fakeOwner) fate(it *Item) fate {
	o.mu.Lock()
	defer o.mu.Unlock()
	if f := o.fates[it]; f != nil {
		return *f
	}
	return fate{}
}

func (o *fakeOwner) resolvedCount() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.resolved
}

// checkPriorResolved reports to f any event in evs sent before an earlier
// event of its key was resolved.
func (o *fakeOwner) checkPriorResolved(amp *fakeAmp, call int, evs []ev) {
	first := map[string]int{}
	for _, e := range evs {
		if n, ok := first[e.Key]; !ok || e.N < n {
			first[e.Key] = e.N
		}
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	for k, n := range first {
		for _, it := range o.byKey[k][:n] {
			if f := o.fates[it]; f == nil || f.accepted+f.rejected == 0 {
				amp.errorf("call %d: %s#%d sent while %s#%d (lane %s) is unresolved", call, k, n, k, it.Seq, it.lane)
				break
			}
		}
	}
}

// harness is a Deliverer wired to a fake Amplitude and a fake owner.
type harness struct {
	t   testing.TB
	d   *Deliverer
	amp *fakeAmp
	own *fakeOwner
	reg *prometheus.Registry
}

func testOptions() Options {
	return Options{
		Shards:        2,
		Realtime:      LaneOptions{MaxEvents: 10, MaxBytes: 100_000, Linger: 5 * time.Millisecond, Concurrency: 4},
		Batch:         LaneOptions{MaxEvents: 50, MaxBytes: 1_000_000, Linger: 20 * time.Millisecond, Concurrency: 2},
		ThrottlePause: 30 * time.Second,
		RetryInitial:  100 * time.Millisecond,
		RetryMax:      2 * time.Second,
	}
}

func newHarness(t testing.TB, opts Options, tro route.TrackerOptions, answer answerFunc) *harness {
	t.Helper()
	if tro.HotEPS == 0 {
		tro.HotEPS, tro.CoolEPS, tro.CoolHold = 30, 20, 10*time.Second
	}
	tr := route.NewTracker(tro)
	pol := route.NewPolicy(tr, route.PolicyOptions{UserEPSMargin: 1})
	reg := prometheus.NewRegistry()
	own := newFakeOwner()
	amp := newFakeAmp(own, answer)
	d := New(opts, amp, pol, tr, metrics.New(reg), zerolog.Nop())
	d.Start()
	return &harness{t: t, d: d, amp: amp, own: own, reg: reg}
}

// item builds key's next event; pad makes the raw event at least that long.
func (h *harness) item(key, user string, lane route.Lane, pad int, bad bool) *Item {
	h.own.mu.Lock()
	n := len(h.own.byKey[key])
	it := &Item{Key: []byte(key), DeviceID: []byte(key), Override: lane, Owner: h.own, Seq: uint64(n)}
	if user != "" {
		it.UserID = []byte(user)
	}
	h.own.byKey[key] = append(h.own.byKey[key], it)
	h.own.mu.Unlock()

	var b bytes.Buffer
	fmt.Fprintf(&b, `{"device_id":%q,"n":%d`, key, n)
	if user != "" {
		fmt.Fprintf(&b, `,"user_id":%q`, user)
	}
	if bad {
		b.WriteString(`,"bad":true`)
	}
	if pad > b.Len()+12 {
		fmt.Fprintf(&b, `,"pad":"%s"`, strings.Repeat("x", pad-b.Len()-10))
	}
	b.WriteByte('}')
	it.Raw = b.Bytes()
	return it
}

// Submit is SubmitBatch for one item, for tests that feed items one by one.
func (d *Deliverer) Submit(ctx context.Context, it *Item) error {
	_, err := d.SubmitBatch(ctx, []*Item{it}, time.Time{})
	return err
}

// submit sends key's next event on lane.
func (h *harness) submit(key string, lane route.Lane) *Item {
	it := h.item(key, "", lane, 0, false)
	require.NoError(h.t, h.d.Submit(context.Background(), it))
	return it
}

func (h *harness) submitItem(it *Item) *Item {
	require.NoError(h.t, h.d.Submit(context.Background(), it))
	return it
}

// waitResolved blocks until n items are resolved, for at most an hour.
// Inside a synctest bubble the deadline is in fake time.
func (h *harness) waitResolved(n int) {
	h.t.Helper()
	h.waitResolvedWithin(n, time.Hour)
}

// waitResolvedWithin is waitResolved with a deadline of d.
func (h *harness) waitResolvedWithin(n int, d time.Duration) {
	h.t.Helper()
	deadline := time.After(d)
	for h.own.resolvedCount() < n {
		select {
		case <-h.own.changed:
		case <-deadline:
			h.t.Fatalf("%d of %d items resolved after %v", h.own.resolvedCount(), n, d)
		}
	}
}

// waitCalls blocks until the fake answered n calls.
func (h *harness) waitCalls(n int) {
	h.t.Helper()
	deadline := time.After(time.Hour)
	for len(h.amp.requests()) < n {
		select {
		case <-h.amp.notify:
		case <-deadline:
			h.t.Fatalf("%d of %d calls after an hour", len(h.amp.requests()), n)
		}
	}
}

// check asserts the invariants over everything submitted: every item is
// resolved exactly once (unless unresolvedOK), the fake saw no invariant
// violation, and per key the fake ingested exactly the accepted items, in
// Submit order, once each. It returns the rejection reasons by item.
func (h *harness) check(unresolvedOK bool) map[*Item]string {
	h.t.Helper()
	h.amp.mu.Lock()
	errs := slices.Clone(h.amp.errs)
	ingested := map[string][]int{}
	for k, v := range h.amp.ingested {
		ingested[k] = slices.Clone(v)
	}
	h.amp.mu.Unlock()
	require.Empty(h.t, errs, "invariant violations seen by the fake Amplitude")

	h.own.mu.Lock()
	defer h.own.mu.Unlock()
	rejected := map[*Item]string{}
	for key, items := range h.own.byKey {
		var accepted []int
		for _, it := range items {
			f := h.own.fates[it]
			if f == nil {
				f = &fate{}
			}
			if unresolvedOK && f.accepted+f.rejected == 0 {
				continue
			}
			require.Equal(h.t, 1, f.accepted+f.rejected, "%s#%d resolved %d+%d times", key, it.Seq, f.accepted, f.rejected)
			if f.accepted == 1 {
				accepted = append(accepted, int(it.Seq))
			} else {
				rejected[it] = f.reason
			}
		}
		require.Equal(h.t, accepted, ingested[key], "key %s: events Amplitude ingested vs accepted in Submit order", key)
	}
	for key := range ingested {
		require.Contains(h.t, h.own.byKey, key)
	}
	return rejected
}

// Answers, built by the real classifier from Amplitude's documented bodies.

func answer(status int, body string, header ...string) amplitude.Result {
	hd := http.Header{}
	for i := 0; i+1 < len(header); i += 2 {
		hd.Set(header[i], header[i+1])
	}
	return amplitude.Classify(status, hd, []byte(body))
}

func ok200(evs []ev) amplitude.Result {
	return answer(200, `{"code":200,"events_ingested":`+strconv.Itoa(len(evs))+`}`)
}

func always200(_ context.Context, _ int, _ amplitude.Route, evs []ev) amplitude.Result {
	return ok200(evs)
}

func indexes(evs []ev, f func(ev) bool) []int {
	var idx []int
	for i, e := range evs {
		if f(e) {
			idx = append(idx, i)
		}
	}
	return idx
}

func jsonList(idx []int) string {
	b, _ := json.Marshal(idx)
	return string(b)
}

// throttle429 is HTTP V2's 429 for the listed devices (every event of a listed device is named).
func throttle429(evs []ev, devices ...string) amplitude.Result {
	idx := indexes(evs, func(e ev) bool { return slices.Contains(devices, e.Key) })
	td := map[string]float64{}
	for _, d := range devices {
		td[d] = 31
	}
	tdj, _ := json.Marshal(td)
	return answer(429, `{"code":429,"error":"Too many requests for some devices and users","eps_threshold":30,"throttled_devices":`+
		string(tdj)+`,"throttled_users":{},"throttled_events":`+jsonList(idx)+`}`)
}

// series returns the current value of every series of metric name, keyed
// name{label=value,...}.
func (h *harness) series(name string) map[string]float64 {
	out := map[string]float64{}
	for k, v := range metrics.Snapshot(h.reg) {
		if k == name || strings.HasPrefix(k, name+"{") {
			out[k] = v
		}
	}
	return out
}

// forwarded is the full ampstream_events_forwarded_total series set (every
// lane × outcome is created up front) with the given non-zero values, keyed
// "lane,outcome".
func forwarded(nonZero map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for _, lane := range []string{"batch", "realtime"} {
		for _, o := range []string{metrics.OutcomeAccepted, metrics.OutcomeDLQ, metrics.OutcomeRetried, metrics.OutcomeThrottled} {
			out["ampstream_events_forwarded_total{lane="+lane+",outcome="+o+"}"] = nonZero[lane+","+o]
		}
	}
	return out
}

func (h *harness) events(lane route.Lane) int {
	n := 0
	for _, r := range h.amp.requests() {
		if apiRoute(lane) == r.route {
			n += len(r.evs)
		}
	}
	return n
}
