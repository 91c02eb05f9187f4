// Package config holds ampstream's settings: the Config struct, its defaults,
// its validation, and the loader that fills it from flags, environment
// variables and an optional YAML file.
//
// Every setting is declared once, in the table in settings.go. The table gives
// its key (e.g. "kafka.brokers"), and from the key follow its flag
// (--kafka.brokers), its environment variable (AMPSTREAM_KAFKA_BROKERS) and its
// place in the YAML file (kafka: {brokers: [...]}). Precedence is
// flag > env > file > default. The default values live in Default, where each
// one carries the reasoning behind it.
//
// Concurrency: the package starts no goroutines and keeps no state. A Config is
// a plain value; it is safe to share once loaded, as long as nobody writes it.
package config

import (
	"errors"
	"strings"
	"time"
)

// Sentinel errors. Every error the package returns wraps one of them together
// with the setting's name and the offending value (secrets excepted).
var (
	// ErrInvalid reports a value that does not parse or breaks a constraint.
	ErrInvalid = errors.New("invalid setting")
	// ErrMissing reports a required setting that was not given.
	ErrMissing = errors.New("missing setting")
	// ErrUnknownKey reports a YAML key (or flag) that names no setting.
	ErrUnknownKey = errors.New("unknown setting")
	// ErrFile reports a config file that cannot be read or is not valid YAML.
	ErrFile = errors.New("config file")
)

// Values of the enum settings.
const (
	StartOffsetEarliest = "earliest"
	StartOffsetLatest   = "latest"

	IsolationReadCommitted   = "read_committed"
	IsolationReadUncommitted = "read_uncommitted"

	SASLNone        = "none"
	SASLPlain       = "plain"
	SASLScramSHA256 = "scram-sha-256"
	SASLScramSHA512 = "scram-sha-512"

	RegionUS = "us"
	RegionEU = "eu"

	LogFormatJSON    = "json"
	LogFormatConsole = "console"
)

// Amplitude base URLs per data residency region. ampstream appends
// /2/httpapi (realtime lane) and /batch (Batch lane).
const (
	URLRegionUS = "https://api2.amplitude.com"
	URLRegionEU = "https://api.eu.amplitude.com"
)

// Config is the whole of ampstream's configuration; each consumer package gets
// its own sub-struct.
type Config struct {
	Kafka     Kafka
	Amplitude Amplitude
	Realtime  Lane
	Batch     Batch
	Router    Router
	Budget    Budget
	UserRate  UserRate
	DLQ       DLQ
	Limits    Limits
	Shutdown  Shutdown
	Admin     Admin
	Log       Log
}

// Kafka configures the consumer group.
type Kafka struct {
	Brokers           []string
	Topics            []string
	Group             string
	GroupInstanceID   string // static membership (KIP-345); empty = dynamic
	ClientID          string
	StartOffset       string // StartOffsetEarliest or StartOffsetLatest
	IsolationLevel    string // IsolationReadCommitted or IsolationReadUncommitted
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
	CommitInterval    time.Duration
	FetchMaxBytes     int // bytes per partition fetch
	FetchMaxWait      time.Duration
	TLS               TLS
	SASL              SASL

	// LagRefreshInterval: how often every replica reads the group's
	// offsets and assignment for the ampstream_kafka_group_* series.
	LagRefreshInterval time.Duration
}

// TLS configures TLS to the brokers. The file fields are paths to PEM files.
type TLS struct {
	Enabled            bool
	CAFile             string
	CertFile           string
	KeyFile            string
	InsecureSkipVerify bool
}

// SASL configures broker authentication.
type SASL struct {
	Mechanism string // one of the SASL* constants
	Username  string
	Password  Secret
}

// Amplitude configures the HTTP client for Amplitude's HTTP V2 and Batch APIs.
type Amplitude struct {
	APIKey              Secret
	Region              string // RegionUS or RegionEU; ignored when URL is set
	URL                 string // base URL; empty means "from Region", see BaseURL
	MinIDLength         int
	Timeout             time.Duration
	GzipMinBytes        int // 0 = never gzip
	ThrottlePause       time.Duration
	RetryInitialBackoff time.Duration
	RetryMaxBackoff     time.Duration
}

// BaseURL is the URL requests go to, without a trailing slash: URL when set,
// else the URL of Region.
func (a Amplitude) BaseURL() string {
	if a.URL != "" {
		return strings.TrimRight(a.URL, "/")
	}
	if a.Region == RegionEU {
		return URLRegionEU
	}
	return URLRegionUS
}

// Lane configures the request building of one delivery lane.
type Lane struct {
	MaxEvents   int // events per request
	MaxBytes    int // body bytes per request, before gzip
	Linger      time.Duration
	Concurrency int // concurrent requests
}

// Batch configures the Batch API lane.
type Batch struct {
	Lane
	KeyEPSLimit float64 // events/s per device or user key
}

// Router configures the rate tracker that picks a lane per key.
type Router struct {
	Window        time.Duration // whole seconds; 1 s buckets
	HotEPS        float64
	CoolEPS       float64
	CoolHold      time.Duration
	UserEPSMargin float64
	BackfillAge   time.Duration // 0 = off
	LagThreshold  time.Duration // 0 = off
	MaxKeys       int
}

// Budget caps what the whole consumer group sends to Amplitude; 0 means no
// cap. Each replica enforces cap × its partitions / all partitions.
type Budget struct {
	EventsPerSecond   float64
	RequestsPerSecond float64
}

// UserRate configures how replicas share their busy users' rates (package
// userrate).
type UserRate struct {
	Enabled         bool
	Topic           string
	PublishInterval time.Duration
	FloorEPS        float64
	MaxKeys         int
}

// DLQ configures the dead-letter topic.
type DLQ struct {
	Topic string
}

// Limits bounds fetched-but-unacknowledged work.
type Limits struct {
	MaxInflightEvents          int
	MaxInflightBytes           int
	PartitionMaxInflightEvents int
}

// Shutdown configures the two-phase stop.
type Shutdown struct {
	DrainTimeout time.Duration
}

// Admin configures the HTTP server for /metrics, /healthz, /readyz and status.
type Admin struct {
	Addr string // host:port
}

// Log configures the logger.
type Log struct {
	Level  string // debug, info, warn or error
	Format string // LogFormatJSON or LogFormatConsole
}

// Secret is a string that does not print: fmt, JSON, YAML and text marshalling
// all show "[redacted]" (or "" when empty). Call Reveal to use the value.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// String redacts the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts the value for %#v.
func (s Secret) GoString() string { return `"` + s.String() + `"` }

// MarshalText redacts the value for encoders (JSON, YAML, logs).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Default returns the defaults of all settings. The API key has no default, so
// Default().Validate() fails with ErrMissing until it is set.
func Default() Config {
	return Config{
		Kafka: Kafka{
			Brokers:     []string{"127.0.0.1:9092"},
			Topics:      []string{"events"},
			Group:       "ampstream",
			ClientID:    "ampstream",
			StartOffset: StartOffsetEarliest,
			// As librdkafka (Vector, most non-JVM clients): events of aborted
			// transactions never reach Amplitude.
			IsolationLevel: IsolationReadCommitted,
			// A crashed replica's partitions wait one session timeout for a
			// new owner: 10 s, above the broker's group.min.session.timeout.ms
			// (6 s); a Go process has no GC pause near that. Heartbeats every
			// 1 s let ~10 go missing before the session ends, and tell a
			// member of a rebalance within a second (a heartbeat's answer is
			// how it learns). A coordinator failover does not end sessions:
			// the new coordinator restarts every member's session clock.
			SessionTimeout:    10 * time.Second,
			HeartbeatInterval: time.Second,
			// How long the group waits for members to rejoin. A member that a
			// rebalance finds revoking partitions rejoins after they drained
			// (Shutdown.DrainTimeout, 20 s) and committed (at least 5 s more
			// if the drain took it all): 30 s fits both.
			RebalanceTimeout: 30 * time.Second,
			// At most 1 s of acknowledged events is redelivered after a crash.
			CommitInterval: time.Second,
			// 10 MiB, ten times kafka-go's 1 MB default: ~10k events of
			// 1 KiB, five full Batch requests (2000 events) per fetch.
			FetchMaxBytes: 10 << 20,
			// The broker's wait for a caught-up partition (MinBytes 1: a
			// fetch with data is answered at once, so this costs no latency).
			// The fetcher's read deadline is this plus 10 s.
			FetchMaxWait: 2 * time.Second,
			SASL:         SASL{Mechanism: SASLNone},

			// Five small requests per replica (plus a small fetch per
			// lagging partition whose position moved); a third of the usual
			// 15 s scrape interval.
			LagRefreshInterval: 5 * time.Second,
		},
		Amplitude: Amplitude{
			Region: RegionUS,
			// Amplitude's own default for options.min_id_length.
			MinIDLength: 5,
			Timeout:     10 * time.Second,
			// 16 KiB: below this gzip saves little and costs CPU per request.
			GzipMinBytes: 16 << 10,
			// Amplitude counts a key's events over 30 s; after a 429 the key
			// is held back for one such window.
			ThrottlePause:       30 * time.Second,
			RetryInitialBackoff: 100 * time.Millisecond,
			RetryMaxBackoff:     30 * time.Second,
		},
		Realtime: Lane{
			MaxEvents: 100,
			// Half of HTTP V2's "< 1 MB" limit: whether that is 10^6 or 2^20
			// bytes, before or after gzip, is undocumented, so keep headroom.
			MaxBytes:    500_000,
			Linger:      5 * time.Millisecond,
			Concurrency: 16,
		},
		Batch: Batch{
			Lane: Lane{
				// Batch API limit: 2000 events per request.
				MaxEvents: 2000,
				// 8 MB, well below the Batch API's 20 MB body limit.
				MaxBytes:    8_000_000,
				Linger:      200 * time.Millisecond,
				Concurrency: 4,
			},
			// Amplitude throttles a key above 1000 events/s averaged over
			// 30 s on the Batch API; 800 leaves 20 % headroom.
			KeyEPSLimit: 800,
		},
		Router: Router{
			Window: 10 * time.Second,
			// HTTP V2 throttles a device or user above 30 events/s; moving at
			// a third of that leaves room for rate spikes inside the window.
			HotEPS:   10,
			CoolEPS:  5, // half of HotEPS: hysteresis so keys do not flap
			CoolHold: 30 * time.Second,
			// A user's devices may be spread over 2 replicas.
			UserEPSMargin: 0.5,
			BackfillAge:   time.Hour,
			LagThreshold:  60 * time.Second,
			// ~100 B per tracked key with 10 buckets: ~100 MB at the cap.
			MaxKeys: 1_000_000,
		},
		UserRate: UserRate{
			Enabled:         true,
			Topic:           "ampstream-userrate",
			PublishInterval: time.Second,
			FloorEPS:        1,
			MaxKeys:         10_000,
		},
		DLQ: DLQ{Topic: "ampstream-dlq"},
		Limits: Limits{
			MaxInflightEvents: 200_000,
			// 256 MiB: 200k events of ~1.3 KiB.
			MaxInflightBytes:           256 << 20,
			PartitionMaxInflightEvents: 50_000,
		},
		Shutdown: Shutdown{
			// Kubernetes' default terminationGracePeriodSeconds is 30 s;
			// 20 s of draining leaves 10 s to commit and leave the group.
			DrainTimeout: 20 * time.Second,
		},
		Admin: Admin{Addr: ":9090"},
		Log:   Log{Level: "info", Format: LogFormatJSON},
	}
}
