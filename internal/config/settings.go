package config

// setting is one row of the settings table. Flags, environment variables, YAML
// keys, help text and the reference all come from this table, so adding a
// setting means adding a Config field, its default, and one row here.
type setting struct {
	key   string   // dotted YAML path, e.g. "kafka.tls.ca_file"
	help  string   // one line, no trailing period
	enum  []string // allowed values of a string setting; nil = any
	bytes bool     // an int that also accepts size suffixes (10MB, 512KiB)
	// field returns a pointer to the setting's field in c: *string, *[]string,
	// *int, *float64, *bool, *time.Duration or *Secret.
	field func(c *Config) any
}

// settings returns the table. It is a function, not a package variable: the
// package keeps no globals.
func settings() []setting {
	return []setting{
		{key: "kafka.brokers", help: "bootstrap brokers (host:port)", field: func(c *Config) any { return &c.Kafka.Brokers }},
		{key: "kafka.topics", help: "topics to consume", field: func(c *Config) any { return &c.Kafka.Topics }},
		{key: "kafka.group", help: "consumer group id", field: func(c *Config) any { return &c.Kafka.Group }},
		{key: "kafka.group_instance_id", help: "static membership: an id unique per replica, e.g. the pod name; a replica restarted within kafka.session_timeout keeps its partitions without a rebalance; empty = dynamic", field: func(c *Config) any { return &c.Kafka.GroupInstanceID }},
		{key: "kafka.client_id", help: "Kafka client id", field: func(c *Config) any { return &c.Kafka.ClientID }},
		{key: "kafka.start_offset", help: "where a partition with no committed offset starts", enum: []string{StartOffsetEarliest, StartOffsetLatest}, field: func(c *Config) any { return &c.Kafka.StartOffset }},
		{key: "kafka.isolation_level", help: "read_committed skips aborted transactions' events and waits for open ones to commit; read_uncommitted forwards every record", enum: []string{IsolationReadCommitted, IsolationReadUncommitted}, field: func(c *Config) any { return &c.Kafka.IsolationLevel }},
		{key: "kafka.session_timeout", help: "group session timeout: how long a crashed replica's partitions wait for a new owner", field: func(c *Config) any { return &c.Kafka.SessionTimeout }},
		{key: "kafka.heartbeat_interval", help: "group heartbeat interval; at most a third of kafka.session_timeout", field: func(c *Config) any { return &c.Kafka.HeartbeatInterval }},
		{key: "kafka.rebalance_timeout", help: "how long members may take to rejoin; must exceed shutdown.drain_timeout", field: func(c *Config) any { return &c.Kafka.RebalanceTimeout }},
		{key: "kafka.commit_interval", help: "periodic commit of acknowledged watermarks", field: func(c *Config) any { return &c.Kafka.CommitInterval }},
		{key: "kafka.fetch_max_bytes", help: "max bytes per partition fetch", bytes: true, field: func(c *Config) any { return &c.Kafka.FetchMaxBytes }},
		{key: "kafka.fetch_max_wait", help: "how long the broker may hold a fetch of a caught-up partition (the client allows 10 s more)", field: func(c *Config) any { return &c.Kafka.FetchMaxWait }},
		{key: "kafka.lag_refresh_interval", help: "how often every replica reads the group's committed offsets, end offsets and assignment for the ampstream_kafka_group_* lag series, owned partitions or not", field: func(c *Config) any { return &c.Kafka.LagRefreshInterval }},
		{key: "kafka.tls.enabled", help: "TLS to brokers", field: func(c *Config) any { return &c.Kafka.TLS.Enabled }},
		{key: "kafka.tls.ca_file", help: "CA bundle (PEM path); empty = system roots", field: func(c *Config) any { return &c.Kafka.TLS.CAFile }},
		{key: "kafka.tls.cert_file", help: "client certificate (PEM path, mTLS)", field: func(c *Config) any { return &c.Kafka.TLS.CertFile }},
		{key: "kafka.tls.key_file", help: "client key (PEM path, mTLS)", field: func(c *Config) any { return &c.Kafka.TLS.KeyFile }},
		{key: "kafka.tls.insecure_skip_verify", help: "skip server certificate verification (testing only)", field: func(c *Config) any { return &c.Kafka.TLS.InsecureSkipVerify }},
		{key: "kafka.sasl.mechanism", help: "SASL mechanism", enum: []string{SASLNone, SASLPlain, SASLScramSHA256, SASLScramSHA512}, field: func(c *Config) any { return &c.Kafka.SASL.Mechanism }},
		{key: "kafka.sasl.username", help: "SASL user", field: func(c *Config) any { return &c.Kafka.SASL.Username }},
		{key: "kafka.sasl.password", help: "SASL password (secret, never logged)", field: func(c *Config) any { return &c.Kafka.SASL.Password }},

		{key: "amplitude.api_key", help: "Amplitude project API key (required; secret, never logged)", field: func(c *Config) any { return &c.Amplitude.APIKey }},
		{key: "amplitude.region", help: "us → " + URLRegionUS + ", eu → " + URLRegionEU, enum: []string{RegionUS, RegionEU}, field: func(c *Config) any { return &c.Amplitude.Region }},
		{key: "amplitude.url", help: "base URL, wins over amplitude.region; /2/httpapi and /batch are appended", field: func(c *Config) any { return &c.Amplitude.URL }},
		{key: "amplitude.min_id_length", help: "options.min_id_length sent to Amplitude and used by local validation", field: func(c *Config) any { return &c.Amplitude.MinIDLength }},
		{key: "amplitude.timeout", help: "per-request timeout", field: func(c *Config) any { return &c.Amplitude.Timeout }},
		{key: "amplitude.gzip_min_bytes", help: "gzip request bodies at least this big; 0 = never gzip", bytes: true, field: func(c *Config) any { return &c.Amplitude.GzipMinBytes }},
		{key: "amplitude.throttle_pause", help: "how long a key throttled by a 429 is held back (Retry-After wins when present); an id throttled again right after its pause is held 2×, 4×, then at most 8× as long", field: func(c *Config) any { return &c.Amplitude.ThrottlePause }},
		{key: "amplitude.retry_initial_backoff", help: "first backoff for 5xx, timeouts and connection errors", field: func(c *Config) any { return &c.Amplitude.RetryInitialBackoff }},
		{key: "amplitude.retry_max_backoff", help: "backoff cap", field: func(c *Config) any { return &c.Amplitude.RetryMaxBackoff }},

		{key: "realtime.max_events", help: "events per HTTP V2 request (1..2000)", field: func(c *Config) any { return &c.Realtime.MaxEvents }},
		{key: "realtime.max_bytes", help: "body bytes per HTTP V2 request (at most 1000000)", bytes: true, field: func(c *Config) any { return &c.Realtime.MaxBytes }},
		{key: "realtime.linger", help: "how long a realtime request waits to fill", field: func(c *Config) any { return &c.Realtime.Linger }},
		{key: "realtime.concurrency", help: "concurrent HTTP V2 requests", field: func(c *Config) any { return &c.Realtime.Concurrency }},

		{key: "batch.max_events", help: "events per Batch request (1..2000)", field: func(c *Config) any { return &c.Batch.MaxEvents }},
		{key: "batch.max_bytes", help: "body bytes per Batch request (at most 20000000)", bytes: true, field: func(c *Config) any { return &c.Batch.MaxBytes }},
		{key: "batch.linger", help: "how long a Batch request waits to fill; once an event of the other lane waits behind it (a device switching lanes), it leaves after realtime.linger without new events, unless earlier Batch requests still wait for a sender", field: func(c *Config) any { return &c.Batch.Linger }},
		{key: "batch.concurrency", help: "concurrent Batch requests", field: func(c *Config) any { return &c.Batch.Concurrency }},
		{key: "batch.key_eps_limit", help: "per-key pacing on the Batch lane, below Amplitude's 1000/s over 30 s", field: func(c *Config) any { return &c.Batch.KeyEPSLimit }},

		{key: "router.window", help: "rate tracker sliding window (whole seconds, 1s..31s; 1 s buckets)", field: func(c *Config) any { return &c.Router.Window }},
		{key: "router.hot_eps", help: "a key above this rate (events/s) moves to Batch", field: func(c *Config) any { return &c.Router.HotEPS }},
		{key: "router.cool_eps", help: "a Batch key moves back below this rate (events/s)...", field: func(c *Config) any { return &c.Router.CoolEPS }},
		{key: "router.cool_hold", help: "...after staying below router.cool_eps this long", field: func(c *Config) any { return &c.Router.CoolHold }},
		{key: "router.user_eps_margin", help: "while user rates are not shared (userrate.*), user keys are hot at hot_eps × margin of this replica's rate (a user's devices may sit on other replicas)", field: func(c *Config) any { return &c.Router.UserEPSMargin }},
		{key: "router.backfill_age", help: "events older than this (event time) go to Batch; 0 = off", field: func(c *Config) any { return &c.Router.BackfillAge }},
		{key: "router.lag_threshold", help: "while a partition lags more than this, its events go to Batch; 0 = off", field: func(c *Config) any { return &c.Router.LagThreshold }},
		{key: "router.max_keys", help: "rate tracker capacity; idle keys are evicted first", field: func(c *Config) any { return &c.Router.MaxKeys }},

		{key: "budget.events_per_second", help: "cap on events/s the whole consumer group sends to Amplitude; each replica sends at most cap × its partitions / the topics' partitions; 0 = off", field: func(c *Config) any { return &c.Budget.EventsPerSecond }},
		{key: "budget.requests_per_second", help: "cap on requests/s the whole consumer group sends to Amplitude, split across replicas as budget.events_per_second; 0 = off", field: func(c *Config) any { return &c.Budget.RequestsPerSecond }},

		{key: "userrate.enabled", help: "replicas share their busy users' rates through userrate.topic and judge user keys by the group's rate; false = by router.user_eps_margin", field: func(c *Config) any { return &c.UserRate.Enabled }},
		{key: "userrate.topic", help: "compacted topic (1 partition, created if missing) of the shared user rates: hashed user keys, never ids", field: func(c *Config) any { return &c.UserRate.Topic }},
		{key: "userrate.publish_interval", help: "how often each replica publishes its report (100ms..10s); a report is stale after 3 intervals", field: func(c *Config) any { return &c.UserRate.PublishInterval }},
		{key: "userrate.floor_eps", help: "a replica reports the user keys it sends at least this many events/s for (at most router.hot_eps / replicas)", field: func(c *Config) any { return &c.UserRate.FloorEPS }},
		{key: "userrate.max_keys", help: "remote user keys held; a report carries at most 1000 (12 kB)", field: func(c *Config) any { return &c.UserRate.MaxKeys }},

		{key: "dlq.topic", help: "dead-letter topic", field: func(c *Config) any { return &c.DLQ.Topic }},

		{key: "limits.max_inflight_events", help: "fetched-but-unacknowledged events, whole process; fetching pauses at the cap", field: func(c *Config) any { return &c.Limits.MaxInflightEvents }},
		{key: "limits.max_inflight_bytes", help: "fetched-but-unacknowledged bytes, whole process (each event: key + value + ~320 B of bookkeeping; a chunk of 64 events holds them until its last is resolved; a record batch over 256 KiB counts whole until its last event is)", bytes: true, field: func(c *Config) any { return &c.Limits.MaxInflightBytes }},
		{key: "limits.partition_max_inflight_events", help: "fetched-but-unacknowledged events per partition", field: func(c *Config) any { return &c.Limits.PartitionMaxInflightEvents }},

		{key: "shutdown.drain_timeout", help: "on SIGTERM or revocation, time to drain in-flight events before committing and leaving", field: func(c *Config) any { return &c.Shutdown.DrainTimeout }},

		{key: "admin.addr", help: "host:port for /metrics, /healthz, /readyz and the status page", field: func(c *Config) any { return &c.Admin.Addr }},

		{key: "log.level", help: "log level", enum: []string{"debug", "info", "warn", "error"}, field: func(c *Config) any { return &c.Log.Level }},
		{key: "log.format", help: "log format", enum: []string{LogFormatJSON, LogFormatConsole}, field: func(c *Config) any { return &c.Log.Format }},
	}
}
