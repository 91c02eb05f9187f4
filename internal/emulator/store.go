package emulator

import (
	"encoding/json"
	"hash/maphash"
	"time"
)

// Ingested is one stored event as the inspection log shows it.
type Ingested struct {
	// Seq orders events across devices: it grows by one per stored event.
	Seq     uint64    `json:"seq"`
	Route   string    `json:"route"`
	Arrival time.Time `json:"arrival"`
	// Index is the event's position in its request.
	Index     int    `json:"index"`
	InsertID  string `json:"insert_id,omitempty"`
	UserID    string `json:"user_id,omitempty"`
	DeviceID  string `json:"device_id,omitempty"` // as sent; empty when absent
	EventType string `json:"event_type"`
	// Event is the event's JSON as received; nil when Config.KeepRaw is off.
	Event json.RawMessage `json:"event,omitempty"`
}

// UserDeviceID is the device under which the emulator files an event that
// has a user_id but no device_id. Amplitude derives such a device_id from a
// hash of the user_id; a readable prefix serves tests better.
func UserDeviceID(userID string) string {
	return "$user:" + userID
}

// Stats counts what the emulator has seen since New or Reset.
type Stats struct {
	// Requests is every request to an API route or an unknown path.
	Requests int64 `json:"requests"`
	// ByStatus counts answers by HTTP status; a connection reset has none.
	ByStatus map[int]int64 `json:"by_status"`
	// Accepted sums events_ingested of 200 answers, duplicates included.
	Accepted int64 `json:"accepted"`
	// Ingested counts events stored, excluding duplicates.
	Ingested        int64            `json:"ingested"`
	IngestedByRoute map[string]int64 `json:"ingested_by_route"`
	// Duplicates counts accepted events whose insert_id was already stored.
	Duplicates int64 `json:"duplicates"`
	// Throttled counts events of 429 answers.
	Throttled int64 `json:"throttled"`
	// UserThrottles counts, per route, the 429 answers that name a user_id
	// over its rate in throttled_users; UserThrottled those users by id.
	// Both are nil until a user is throttled.
	UserThrottles map[string]int64 `json:"user_throttles,omitempty"`
	UserThrottled map[string]int64 `json:"user_throttled,omitempty"`
	// Invalid counts events of requests refused with 400 or 413.
	Invalid int64 `json:"invalid"`
	// Faults counts injected faults; Resets those that reset the connection.
	Faults int64 `json:"faults"`
	Resets int64 `json:"resets"`
	// Abandoned counts delayed answers cut short by the client leaving or
	// the server shutting down.
	Abandoned int64 `json:"abandoned"`
	// Devices is the number of devices with logged events.
	Devices int `json:"devices"`
	// LogDropped counts stored events left out of the log by MaxLogEvents.
	LogDropped int64 `json:"log_dropped"`
}

// dedupEntry is a remembered insert_id: the 64-bit hash of (api_key,
// device, insert_id), not the strings. Keys without pointers keep the map
// out of the garbage collector's scan and a tenth of the size; two
// different events collide with odds of about n²/2^65 (3·10^-8 for a
// million remembered ids), which a test double can live with.
type dedupEntry struct {
	key uint64
	at  int64
}

// store is the ingested state: insert_ids, the log and the counters. Not
// safe for concurrent use; the Emulator's mutex guards it.
type store struct {
	seed   maphash.Seed
	seen   map[uint64]int64 // dedup hash → Unix ns first stored
	order  []dedupEntry     // seen keys, oldest first, for expiry
	head   int
	log    map[string][]Ingested // effective device → events in arrival order
	logged int
	seq    uint64
	stats  Stats
}

func newStore() *store {
	return &store{
		seed:  maphash.MakeSeed(),
		seen:  map[uint64]int64{},
		log:   map[string][]Ingested{},
		stats: Stats{ByStatus: map[int]int64{}, IngestedByRoute: map[string]int64{}},
	}
}

// expire forgets insert_ids older than the window or beyond the cap.
func (s *store) expire(cfg *Config, now int64) {
	cutoff := now - cfg.DedupWindow.Nanoseconds()
	for s.head < len(s.order) {
		e := s.order[s.head]
		if e.at > cutoff && (cfg.MaxDedupKeys == 0 || len(s.seen) <= cfg.MaxDedupKeys) {
			break
		}
		// A key stored again after it expired has a newer time; leave it.
		if s.seen[e.key] == e.at {
			delete(s.seen, e.key)
		}
		s.order[s.head] = dedupEntry{}
		s.head++
	}
	if s.head > len(s.order)/2 {
		n := copy(s.order, s.order[s.head:])
		clear(s.order[n:])
		s.order, s.head = s.order[:n], 0
	}
}

// ingest stores the events of an accepted request, skipping (and counting)
// those whose insert_id is already stored for the same project and device.
func (s *store) ingest(cfg *Config, route, apiKey string, events []checked, now time.Time) {
	ns := now.UnixNano()
	dedup := cfg.DedupWindow > 0
	if dedup {
		s.expire(cfg, ns)
	}
	var h maphash.Hash
	h.SetSeed(s.seed)
	for i := range events {
		ev := &events[i]
		if dedup && len(ev.insertID) > 0 {
			h.Reset()
			h.WriteString(apiKey)
			h.WriteByte(0)
			if len(ev.deviceID) > 0 {
				h.Write(ev.deviceID)
			} else {
				h.WriteString(UserDeviceID(""))
				h.Write(ev.userID)
			}
			h.WriteByte(0)
			h.Write(ev.insertID)
			k := h.Sum64()
			if _, dup := s.seen[k]; dup {
				s.stats.Duplicates++
				continue
			}
			s.seen[k] = ns
			s.order = append(s.order, dedupEntry{key: k, at: ns})
		}
		s.seq++
		s.stats.Ingested++
		s.stats.IngestedByRoute[route]++
		if cfg.MaxLogEvents > 0 && s.logged >= cfg.MaxLogEvents {
			s.stats.LogDropped++
			continue
		}
		in := Ingested{
			Seq: s.seq, Route: route, Arrival: now, Index: i,
			InsertID: string(ev.insertID), UserID: string(ev.userID), DeviceID: string(ev.deviceID), EventType: string(ev.eventType),
		}
		if cfg.KeepRaw {
			in.Event = ev.raw
		}
		device := in.DeviceID
		if device == "" {
			device = UserDeviceID(in.UserID)
		}
		l, ok := s.log[device]
		if !ok {
			s.stats.Devices++
		}
		s.log[device] = append(l, in)
		s.logged++
	}
}
