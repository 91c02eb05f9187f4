package emulator

import (
	"fmt"
	"time"
)

// Route names, as they appear in Ingested.Route, Stats and fault filters.
const (
	RouteHTTPAPI = "httpapi" // POST /2/httpapi (HTTP V2)
	RouteBatch   = "batch"   // POST /batch (Batch Event Upload)
)

// Request paths of the two emulated APIs.
const (
	PathHTTPAPI = "/2/httpapi"
	PathBatch   = "/batch"
)

// RouteConfig holds the limits of one API route.
type RouteConfig struct {
	// MaxEvents is the largest events array accepted; more is 413.
	MaxEvents int
	// MaxBytes is the largest body accepted, measured after gzip
	// decompression; a longer body is 413.
	MaxBytes int
	// EPS is the per-ID rate limit in events per second, averaged over Window.
	// An ID is throttled when the events it sent within Window, counting the
	// events of the request being checked, exceed EPS × Window seconds.
	// 0 disables rate limiting on the route.
	EPS int
	// Window is the averaging window of EPS.
	Window time.Duration
	// BurstEPS and BurstWindow add an optional second, shorter window with
	// the same rule (count within BurstWindow > BurstEPS × BurstWindow
	// seconds). 0 disables it.
	BurstEPS    int
	BurstWindow time.Duration
	// ReportedEPSThreshold is the eps_threshold value in 429 and silenced
	// bodies; Amplitude documents it as "your app's current threshold", so
	// it may differ from EPS. 0 reports EPS.
	ReportedEPSThreshold int
	// DailyQuota is the most events one device_id or user_id may have
	// ingested (over both routes) in a rolling 24 h, counted in 1-hour
	// buckets as Amplitude documents. 0 disables the quota on this route.
	DailyQuota int
}

// Config configures an Emulator. Build it with DefaultConfig and override
// fields; the zero value is not useful.
type Config struct {
	HTTPAPI RouteConfig
	Batch   RouteConfig

	// APIKeys is the allow-list of project keys. Empty accepts any
	// non-empty key.
	APIKeys []string
	// CountRejected makes the events of a throttled (429) request count
	// toward the rate of their IDs. With it, a client that retries sooner
	// than Window keeps getting 429, which is what Amplitude's guidance
	// ("pause that device for 30 s") implies; whether real Amplitude does
	// this is unknown.
	CountRejected bool
	// RetryAfter, when positive, adds a Retry-After header (whole seconds,
	// rounded up) to 429 and 503 answers. Amplitude does not document one.
	RetryAfter time.Duration
	// SilencedDevices are device_ids whose events are answered with 400
	// "Events silenced for device_id".
	SilencedDevices []string
	// DedupWindow is how long an insert_id is remembered per (api_key,
	// device). Amplitude documents 7 days. 0 disables deduplication.
	DedupWindow time.Duration
	// MaxDedupKeys caps the remembered insert_ids; the oldest are forgotten
	// first. About 50 bytes each. 0 means no cap.
	MaxDedupKeys int
	// FirstIndexOnly lists only the first failing event index per field in
	// 400 bodies, as the HTTP V2 doc's wording suggests. The default lists
	// all, as the Batch doc does.
	FirstIndexOnly bool
	// KeepRaw keeps each ingested event's JSON in the inspection log.
	// Turning it off bounds memory in benchmarks.
	KeepRaw bool
	// MaxLogEvents caps the inspection log; later events are still ingested
	// and counted but not logged (Stats.LogDropped). 0 means no cap.
	MaxLogEvents int

	// FaultRate is the probability that a request to either API route gets
	// a random fault from FaultChoices (or DefaultFaultChoices when empty).
	FaultRate float64
	// FaultSeed seeds the fault RNG so a run is reproducible.
	FaultSeed uint64
	// FaultChoices are the faults FaultRate picks from, uniformly.
	FaultChoices []Fault

	// Now is the clock for windows, quotas, dedup and server_upload_time.
	Now func() time.Time
}

// DefaultConfig returns the documented Amplitude limits.
//
// HTTP V2 is documented as 30 events/s per ID "averaged over a recent time
// window" without giving the window. A 10 s window (300 events) is used so
// that a device sending 1000 events within 2 s is throttled, as it is in
// production, while a device at 5-10 events/s never is. Batch documents
// 1000 events/s over 30 s (30,000 events) and a 500,000 events per 24 h
// daily quota.
func DefaultConfig() Config {
	return Config{
		HTTPAPI: RouteConfig{
			MaxEvents: 2000,
			// "< 1 MB"; whether that is 10^6 or 2^20 is unstated, 10^6 is
			// the stricter reading.
			MaxBytes: 1_000_000,
			EPS:      30,
			Window:   10 * time.Second,
		},
		Batch: RouteConfig{
			MaxEvents:  2000,
			MaxBytes:   20_000_000,
			EPS:        1000,
			Window:     30 * time.Second,
			DailyQuota: 500_000,
		},
		CountRejected: true,
		DedupWindow:   7 * 24 * time.Hour,
		KeepRaw:       true,
		Now:           time.Now,
	}
}

// route returns the limits of a route name.
func (c *Config) route(name string) *RouteConfig {
	if name == RouteBatch {
		return &c.Batch
	}
	return &c.HTTPAPI
}

// Validate reports a configuration that cannot work.
func (c *Config) Validate() error {
	for _, r := range []struct {
		name string
		rc   RouteConfig
	}{{RouteHTTPAPI, c.HTTPAPI}, {RouteBatch, c.Batch}} {
		switch {
		case r.rc.MaxEvents <= 0:
			return fmt.Errorf("%s: max events must be positive, is %d", r.name, r.rc.MaxEvents)
		case r.rc.MaxBytes <= 0:
			return fmt.Errorf("%s: max bytes must be positive, is %d", r.name, r.rc.MaxBytes)
		case r.rc.EPS < 0 || r.rc.BurstEPS < 0 || r.rc.DailyQuota < 0:
			return fmt.Errorf("%s: rates and quotas must not be negative", r.name)
		case r.rc.EPS > 0 && r.rc.Window < time.Second:
			return fmt.Errorf("%s: window must be at least 1s, is %s", r.name, r.rc.Window)
		case r.rc.BurstEPS > 0 && (r.rc.BurstWindow <= 0 || r.rc.BurstWindow > r.rc.Window):
			return fmt.Errorf("%s: burst window must be in (0, window], is %s", r.name, r.rc.BurstWindow)
		}
	}
	if c.FaultRate < 0 || c.FaultRate > 1 {
		return fmt.Errorf("fault rate must be in [0, 1], is %g", c.FaultRate)
	}
	return nil
}
