package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"time"
)

// Amplitude's documented request limits.
const (
	maxEventsPerRequest  = 2000       // HTTP V2 and Batch
	maxRealtimeBodyBytes = 1_000_000  // HTTP V2: 1 MB
	maxBatchBodyBytes    = 20_000_000 // Batch: 20 MB
)

// Rate tracker window bounds. route.Tracker keeps a ring of 32 one-second
// buckets, one of them the current, partial second, and silently clamps
// longer windows.
const (
	routerBucketDuration = time.Second
	maxRouterWindow      = 31 * time.Second
)

// Validate checks every setting and the relations between them. It returns
// nil or the joined list of all problems, each wrapping ErrInvalid or
// ErrMissing and naming the setting and its value (never a secret's value).
// Load's errors also say where each value came from.
func (c Config) Validate() error {
	return joinProblems(c.problems(), nil)
}

// problems is Validate's list, unformatted, so Load can add each value's
// source.
func (c Config) problems() []problem {
	var v validator

	k := c.Kafka
	v.nonEmptyList("kafka.brokers", k.Brokers)
	for _, b := range k.Brokers {
		v.hostPort("kafka.brokers", b, true)
	}
	v.nonEmptyList("kafka.topics", k.Topics)
	v.nonEmpty("kafka.group", k.Group)
	v.groupInstanceID("kafka.group_instance_id", k.GroupInstanceID)
	v.nonEmpty("kafka.client_id", k.ClientID)
	v.enum("kafka.start_offset", k.StartOffset)
	v.enum("kafka.isolation_level", k.IsolationLevel)
	v.positive("kafka.session_timeout", k.SessionTimeout)
	v.positive("kafka.heartbeat_interval", k.HeartbeatInterval)
	// Kafka's advice (heartbeat.interval.ms): a third of the session at
	// most, so two lost heartbeats do not end a session.
	if k.HeartbeatInterval*3 > k.SessionTimeout {
		v.invalid("kafka.heartbeat_interval", k.HeartbeatInterval, "must be at most a third of kafka.session_timeout ("+formatDuration(k.SessionTimeout)+")")
	}
	v.positive("kafka.rebalance_timeout", k.RebalanceTimeout)
	// A revoked member drains for up to drain_timeout before it commits and
	// rejoins; the group must wait at least that long or it drops the member
	// and its commits fail.
	if k.RebalanceTimeout <= c.Shutdown.DrainTimeout {
		v.invalid("kafka.rebalance_timeout", k.RebalanceTimeout, "must exceed shutdown.drain_timeout ("+formatDuration(c.Shutdown.DrainTimeout)+")")
	}
	v.positive("kafka.commit_interval", k.CommitInterval)
	v.minInt("kafka.fetch_max_bytes", k.FetchMaxBytes, 1)
	v.positive("kafka.fetch_max_wait", k.FetchMaxWait)
	v.positive("kafka.lag_refresh_interval", k.LagRefreshInterval)

	t := k.TLS
	if !t.Enabled {
		for _, f := range [][2]string{{"kafka.tls.ca_file", t.CAFile}, {"kafka.tls.cert_file", t.CertFile}, {"kafka.tls.key_file", t.KeyFile}} {
			if f[1] != "" {
				v.invalid(f[0], f[1], "is set but kafka.tls.enabled is false")
			}
		}
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		v.add(ErrInvalid, "kafka.tls.cert_file and kafka.tls.key_file must be set together")
	}

	sa := k.SASL
	v.enum("kafka.sasl.mechanism", sa.Mechanism)
	if sa.Mechanism == SASLNone {
		if sa.Username != "" {
			v.invalid("kafka.sasl.username", sa.Username, "is set but kafka.sasl.mechanism is none")
		}
	} else {
		if sa.Username == "" {
			v.missing("kafka.sasl.username", "kafka.sasl.mechanism is "+sa.Mechanism)
		}
		if sa.Password == "" {
			v.missing("kafka.sasl.password", "kafka.sasl.mechanism is "+sa.Mechanism)
		}
	}

	a := c.Amplitude
	if a.APIKey == "" {
		v.missing("amplitude.api_key", "")
	}
	v.enum("amplitude.region", a.Region)
	if a.URL != "" {
		u, err := url.Parse(a.URL)
		switch {
		case err != nil:
			v.invalid("amplitude.url", a.URL, "not a URL")
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			v.invalid("amplitude.url", a.URL, "want http(s)://host[:port][/path]")
		case u.RawQuery != "" || u.Fragment != "":
			v.invalid("amplitude.url", a.URL, "want no query or fragment; paths are appended to it")
		}
	}
	v.minInt("amplitude.min_id_length", a.MinIDLength, 1)
	v.positive("amplitude.timeout", a.Timeout)
	v.minInt("amplitude.gzip_min_bytes", a.GzipMinBytes, 0)
	v.positive("amplitude.throttle_pause", a.ThrottlePause)
	v.positive("amplitude.retry_initial_backoff", a.RetryInitialBackoff)
	if a.RetryMaxBackoff < a.RetryInitialBackoff {
		v.invalid("amplitude.retry_max_backoff", a.RetryMaxBackoff, "must be at least amplitude.retry_initial_backoff ("+formatDuration(a.RetryInitialBackoff)+")")
	}

	v.lane("realtime", c.Realtime, maxRealtimeBodyBytes)
	v.lane("batch", c.Batch.Lane, maxBatchBodyBytes)
	v.positiveFloat("batch.key_eps_limit", c.Batch.KeyEPSLimit)

	r := c.Router
	if r.Window < routerBucketDuration || r.Window > maxRouterWindow || r.Window%routerBucketDuration != 0 {
		v.invalid("router.window", r.Window, "want a whole number of seconds from 1s to "+formatDuration(maxRouterWindow))
	}
	v.positiveFloat("router.hot_eps", r.HotEPS)
	if r.CoolEPS < 0 || r.CoolEPS >= r.HotEPS {
		v.invalid("router.cool_eps", r.CoolEPS, "want 0 <= router.cool_eps < router.hot_eps ("+formatFloat(r.HotEPS)+")")
	}
	v.nonNegative("router.cool_hold", r.CoolHold)
	if r.UserEPSMargin <= 0 || r.UserEPSMargin > 1 {
		v.invalid("router.user_eps_margin", r.UserEPSMargin, "want 0 < margin <= 1")
	}
	v.nonNegative("router.backfill_age", r.BackfillAge)
	v.nonNegative("router.lag_threshold", r.LagThreshold)
	v.minInt("router.max_keys", r.MaxKeys, 1)

	v.nonNegativeFloat("budget.events_per_second", c.Budget.EventsPerSecond)
	v.nonNegativeFloat("budget.requests_per_second", c.Budget.RequestsPerSecond)

	if u := c.UserRate; u.Enabled {
		v.nonEmpty("userrate.topic", u.Topic)
		if slices.Contains(k.Topics, u.Topic) || u.Topic == c.DLQ.Topic {
			v.invalid("userrate.topic", u.Topic, "must be a topic of its own, not one of kafka.topics nor dlq.topic")
		}
		if u.PublishInterval < 100*time.Millisecond || u.PublishInterval > 10*time.Second {
			v.invalid("userrate.publish_interval", u.PublishInterval, "want 100ms to 10s")
		}
		v.positiveFloat("userrate.floor_eps", u.FloorEPS)
		v.minInt("userrate.max_keys", u.MaxKeys, 1)
	}

	v.nonEmpty("dlq.topic", c.DLQ.Topic)
	// Dead-lettering into a consumed topic would feed poison events back in.
	if slices.Contains(k.Topics, c.DLQ.Topic) {
		v.invalid("dlq.topic", c.DLQ.Topic, "must not be one of kafka.topics")
	}

	l := c.Limits
	v.minInt("limits.max_inflight_events", l.MaxInflightEvents, 1)
	v.minInt("limits.max_inflight_bytes", l.MaxInflightBytes, 1)
	v.minInt("limits.partition_max_inflight_events", l.PartitionMaxInflightEvents, 1)
	if l.PartitionMaxInflightEvents > l.MaxInflightEvents {
		v.invalid("limits.partition_max_inflight_events", l.PartitionMaxInflightEvents, "must not exceed limits.max_inflight_events ("+strconv.Itoa(l.MaxInflightEvents)+")")
	}

	v.positive("shutdown.drain_timeout", c.Shutdown.DrainTimeout)
	v.hostPort("admin.addr", c.Admin.Addr, false)
	v.enum("log.level", c.Log.Level)
	v.enum("log.format", c.Log.Format)

	return v.problems
}

// problem is one failed check. key is the setting whose value is shown
// (empty for a check of several settings, whose text names them all).
type problem struct {
	sentinel error
	key      string
	shown    string // the value as the error shows it; "" for a missing setting
	text     string // what is wanted, or the whole message when key is ""
}

// error formats p; source says where the value came from (flag --x, env X,
// file F line N) and is left out when unknown or the setting is at its
// default.
func (p problem) error(source string) error {
	switch {
	case p.key == "":
		return fmt.Errorf("%w: %s", p.sentinel, p.text)
	case p.sentinel == ErrMissing:
		return fmt.Errorf("%w: %s is required%s: set %s, --%s or %s in the config file", p.sentinel, p.key, p.text, envName(p.key), p.key, p.key)
	case source != "":
		return fmt.Errorf("%w: %s = %s (%s): %s", p.sentinel, p.key, p.shown, source, p.text)
	default:
		return fmt.Errorf("%w: %s = %s: %s", p.sentinel, p.key, p.shown, p.text)
	}
}

// joinProblems formats ps with the sources of their values (nil: none known).
func joinProblems(ps []problem, sources map[string]string) error {
	errs := make([]error, 0, len(ps))
	for _, p := range ps {
		errs = append(errs, p.error(sources[p.key]))
	}
	return errors.Join(errs...)
}

// validator collects problems so that Validate reports all of them at once.
type validator struct {
	problems []problem
}

func (v *validator) add(sentinel error, text string) {
	v.problems = append(v.problems, problem{sentinel: sentinel, text: text})
}

func (v *validator) invalid(key string, val any, want string) {
	v.problems = append(v.problems, problem{sentinel: ErrInvalid, key: key, shown: show(val), text: want})
}

func (v *validator) missing(key, because string) {
	if because != "" {
		because = " (" + because + ")"
	}
	v.problems = append(v.problems, problem{sentinel: ErrMissing, key: key, text: because})
}

func show(val any) string {
	switch x := val.(type) {
	case string:
		return strconv.Quote(x)
	case time.Duration:
		return formatDuration(x)
	case float64:
		return formatFloat(x)
	default:
		return fmt.Sprint(x)
	}
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func (v *validator) nonEmpty(key, val string) {
	if val == "" {
		v.missing(key, "")
	}
}

// groupInstanceID checks Kafka's rules for a group.instance.id (those of a
// topic name, Topic.validate in Kafka): at most 249 characters of ASCII
// letters, digits, '.', '_' and '-'. Empty means dynamic membership.
func (v *validator) groupInstanceID(key, val string) {
	if len(val) > 249 {
		v.invalid(key, val, "must be at most 249 characters")
		return
	}
	for _, r := range val {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			v.invalid(key, val, "may only contain a-z A-Z 0-9 . _ -")
			return
		}
	}
}

func (v *validator) nonEmptyList(key string, val []string) {
	if len(val) == 0 {
		v.missing(key, "")
	}
}

func (v *validator) enum(key, val string) {
	for _, s := range settings() {
		if s.key == key && !slices.Contains(s.enum, val) {
			v.invalid(key, val, "want one of "+fmt.Sprint(s.enum))
		}
	}
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.invalid(key, d, "must be positive")
	}
}

func (v *validator) nonNegative(key string, d time.Duration) {
	if d < 0 {
		v.invalid(key, d, "must not be negative (0 = off)")
	}
}

func (v *validator) positiveFloat(key string, f float64) {
	if !(f > 0) {
		v.invalid(key, f, "must be positive")
	}
}

func (v *validator) nonNegativeFloat(key string, f float64) {
	if !(f >= 0) {
		v.invalid(key, f, "must not be negative (0 = off)")
	}
}

func (v *validator) minInt(key string, n, lowest int) {
	if n < lowest {
		v.invalid(key, n, "must be at least "+strconv.Itoa(lowest))
	}
}

func (v *validator) rangeInt(key string, n, lowest, highest int) {
	if n < lowest || n > highest {
		v.invalid(key, n, fmt.Sprintf("want %d..%d", lowest, highest))
	}
}

func (v *validator) lane(name string, l Lane, maxBody int) {
	v.rangeInt(name+".max_events", l.MaxEvents, 1, maxEventsPerRequest)
	v.rangeInt(name+".max_bytes", l.MaxBytes, 1, maxBody)
	v.nonNegative(name+".linger", l.Linger)
	v.minInt(name+".concurrency", l.Concurrency, 1)
}

// hostPort checks host:port; the host may be empty (all interfaces) unless
// needHost.
func (v *validator) hostPort(key, addr string, needHost bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.invalid(key, addr, "want host:port")
		return
	}
	if needHost && host == "" {
		v.invalid(key, addr, "want host:port with a host")
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		v.invalid(key, addr, "want a port 0..65535")
	}
}
