// Package traffic makes synthetic Amplitude event streams and checks what
// reached the emulator against them. The demo, the end-to-end tests, the
// chaos suite and the benchmark share it.
//
// Every valid event carries event_id = its device's sequence number (1, 2,
// …), so the checker can prove per-device order and exactly-once delivery
// from the emulator's per-device log.
//
// Concurrency: a Generator is not safe for concurrent use; Expected and
// Check are read-only once producing is done.
package traffic

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"time"

	"github.com/ampstream/ampstream/internal/emulator"
)

// Msg is one Kafka message to produce.
type Msg struct {
	Key     []byte
	Value   []byte
	Headers map[string]string
	// Valid is false for input that must end in the DLQ.
	Valid bool
	// Kind is "normal", "burst", "backfill", "user_only" or "invalid:<what>".
	Kind string
}

// Generator makes events for a fixed population of devices.
type Generator struct {
	rng      *rand.Rand
	devices  int
	seq      map[string]int // emulator device key → last event_id
	invalid  int
	now      func() time.Time
	noInsert float64
	buf      []byte
}

// New returns a Generator over devices normal devices. noInsertIDRatio is
// the share of valid events produced without an insert_id (ampstream then
// derives a stable one).
func New(seed uint64, devices int, noInsertIDRatio float64, now func() time.Time) *Generator {
	if now == nil {
		now = time.Now
	}
	return &Generator{
		rng:      rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		devices:  devices,
		seq:      map[string]int{},
		now:      now,
		noInsert: noInsertIDRatio,
	}
}

// DeviceID names normal device i.
func DeviceID(i int) string { return fmt.Sprintf("device-%06d", i) }

// BurstDeviceID names bursting device i.
func BurstDeviceID(i int) string { return fmt.Sprintf("burst-%04d", i) }

func userOf(i int) string { return fmt.Sprintf("user-%06d", i/2) } // two devices per user

// Normal is an event of a random normal device, at its own modest rate.
func (g *Generator) Normal() Msg {
	i := g.rng.IntN(g.devices)
	return g.event(DeviceID(i), userOf(i), "normal", g.now().UnixMilli(), nil)
}

// UserOnly is an event with a user_id and no device_id.
func (g *Generator) UserOnly() Msg {
	u := fmt.Sprintf("solo-user-%05d", g.rng.IntN(max(g.devices/10, 1)))
	return g.event("", u, "user_only", g.now().UnixMilli(), nil)
}

// Burst is the next event of bursting device i.
func (g *Generator) Burst(i int) Msg {
	return g.event(BurstDeviceID(i), fmt.Sprintf("burst-user-%04d", i), "burst", g.now().UnixMilli(), nil)
}

// Backfill is an event whose own time is two days old.
func (g *Generator) Backfill() Msg {
	i := g.rng.IntN(max(g.devices/20, 1))
	d := fmt.Sprintf("backfill-%05d", i)
	return g.event(d, "", "backfill", g.now().Add(-48*time.Hour).UnixMilli(), nil)
}

// Forced is a normal event carrying the amplitude-api header.
func (g *Generator) Forced(lane string) Msg {
	i := g.rng.IntN(g.devices)
	return g.event(DeviceID(i), userOf(i), "forced_"+lane, g.now().UnixMilli(), map[string]string{"amplitude-api": lane})
}

func (g *Generator) event(device, user, kind string, timeMS int64, headers map[string]string) Msg {
	key := device
	if key == "" {
		key = emulator.UserDeviceID(user)
	}
	g.seq[key]++
	n := g.seq[key]
	b := g.buf[:0]
	b = append(b, `{"event_type":"`...)
	b = append(b, [...]string{"page_view", "click", "add_to_cart", "purchase", "search"}[g.rng.IntN(5)]...)
	b = append(b, '"')
	if device != "" {
		b = append(b, `,"device_id":"`...)
		b = append(b, device...)
		b = append(b, '"')
	}
	if user != "" {
		b = append(b, `,"user_id":"`...)
		b = append(b, user...)
		b = append(b, '"')
	}
	b = append(b, `,"event_id":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"time":`...)
	b = strconv.AppendInt(b, timeMS, 10)
	if g.rng.Float64() >= g.noInsert {
		b = append(b, `,"insert_id":"`...)
		b = append(b, key...)
		b = append(b, '-')
		b = strconv.AppendInt(b, int64(n), 10)
		b = append(b, '"')
	}
	b = append(b, `,"platform":"iOS","os_name":"ios","app_version":"4.12.0","country":"DE","language":"de-DE"`...)
	b = append(b, `,"event_properties":{"screen":"checkout","items":[{"sku":"A-1","qty":2},{"sku":"B-7","qty":1}],"total":59.9,"coupon":null}`...)
	b = append(b, `,"user_properties":{"$set":{"plan":"pro","cohort":"2026-11"}}}`...)
	g.buf = b
	return Msg{Key: []byte(key), Value: append([]byte(nil), b...), Headers: headers, Valid: true, Kind: kind}
}

// Invalid is an event that must be dead-lettered, cycling through the kinds
// of bad input ampstream must survive.
func (g *Generator) Invalid() Msg {
	g.invalid++
	d := DeviceID(g.rng.IntN(g.devices))
	bad := [...]struct{ kind, value string }{
		{"malformed_json", `{"event_type":"click","device_id":"` + d + `"`},
		{"missing_event_type", `{"device_id":"` + d + `","time":1700000000000}`},
		{"invalid_id_length", `{"event_type":"click","user_id":"abc"}`},
		{"blocklisted_id", `{"event_type":"click","device_id":"null"}`},
		{"invalid_field", `{"event_type":"click","device_id":"` + d + `","time":"2026-11-27T10:00:00Z"}`},
		{"not_object", `["event_type","click"]`},
		{"malformed_json", "\xff\xfe not json at all"},
	}[g.invalid%7]
	return Msg{Key: []byte(d), Value: []byte(bad.value), Valid: false, Kind: "invalid:" + bad.kind}
}

// Expected returns, per emulator device key, how many valid events were made.
func (g *Generator) Expected() map[string]int {
	out := make(map[string]int, len(g.seq))
	for k, v := range g.seq {
		out[k] = v
	}
	return out
}

// Report is the outcome of Check.
type Report struct {
	Devices    int // devices expected
	Expected   int // valid events expected
	Delivered  int // distinct events stored by the emulator for expected devices
	Missing    int // expected events absent
	Inversions int // per-device order inversions in the stored log
	Unexpected int // stored events that were never produced (or repeated event_ids)
	ByRoute    map[string]int
}

// OK reports whether every valid event arrived exactly once, in order.
func (r Report) OK() bool {
	return r.Missing == 0 && r.Inversions == 0 && r.Unexpected == 0 && r.Delivered == r.Expected
}

func (r Report) String() string {
	return fmt.Sprintf("devices=%d expected=%d delivered=%d missing=%d inversions=%d unexpected=%d routes=%v",
		r.Devices, r.Expected, r.Delivered, r.Missing, r.Inversions, r.Unexpected, r.ByRoute)
}

// Check compares the emulator's per-device log with expected. The emulator
// stores each insert_id once, so its log is the sequence of first deliveries.
func Check(e *emulator.Emulator, expected map[string]int) Report {
	r := Report{Devices: len(expected), ByRoute: map[string]int{}}
	keys := make([]string, 0, len(expected))
	for k := range expected {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, dev := range keys {
		want := expected[dev]
		r.Expected += want
		seen := make(map[int64]bool, want)
		last := int64(0)
		for _, in := range e.Events(dev) {
			var ev struct {
				EventID int64 `json:"event_id"`
			}
			if err := json.Unmarshal(in.Event, &ev); err != nil || ev.EventID < 1 || ev.EventID > int64(want) || seen[ev.EventID] {
				r.Unexpected++
				continue
			}
			seen[ev.EventID] = true
			r.Delivered++
			r.ByRoute[in.Route]++
			if ev.EventID < last {
				r.Inversions++
			}
			last = max(last, ev.EventID)
		}
		r.Missing += want - len(seen)
	}
	return r
}
