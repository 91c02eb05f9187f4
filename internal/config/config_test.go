package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// env is a fake environment for Load.
type env map[string]string

func (e env) get(k string) string { return e[k] }

// withKey is the minimum environment that validates.
func withKey() env { return env{"AMPSTREAM_AMPLITUDE_API_KEY": "k-123456"} }

func writeFile(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ampstream.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func TestDefaultIsValidOnceTheAPIKeyIsSet(t *testing.T) {
	t.Parallel()
	c := Default()
	require.ErrorIs(t, c.Validate(), ErrMissing)
	c.Amplitude.APIKey = "k"
	require.NoError(t, c.Validate())
}

func TestEverySettingRoundTripsThroughItsOwnSyntax(t *testing.T) {
	t.Parallel()
	def := Default()
	seen := map[string]bool{}
	for _, s := range settings() {
		t.Run(s.key, func(t *testing.T) {
			require.False(t, seen[s.key], "duplicate key")
			seen[s.key] = true
			if s.isSecret() {
				return // format redacts by design
			}
			var c Config
			require.NoError(t, s.set(&c, s.format(&def)))
			assert.Equal(t, s.field(&def), s.field(&c))
		})
	}
}

func TestEnvNamesRequiredByTheIssueExist(t *testing.T) {
	t.Parallel()
	names := map[string]bool{}
	for _, s := range settings() {
		names[s.env()] = true
	}
	for _, want := range []string{
		"AMPSTREAM_KAFKA_BROKERS", "AMPSTREAM_KAFKA_TOPICS", "AMPSTREAM_KAFKA_GROUP",
		"AMPSTREAM_AMPLITUDE_API_KEY", "AMPSTREAM_AMPLITUDE_URL", "AMPSTREAM_DLQ_TOPIC",
		"AMPSTREAM_ADMIN_ADDR", "AMPSTREAM_KAFKA_SASL_MECHANISM",
	} {
		assert.True(t, names[want], want)
	}
}

func TestLoadPrecedenceIsFlagThenEnvThenFileThenDefault(t *testing.T) {
	t.Parallel()
	path := writeFile(t, `
kafka:
  group: from-file
  client_id: from-file
  topics: [a, b]
amplitude:
  api_key: file-key
dlq:
  topic: file-dlq
`)
	e := env{
		"AMPSTREAM_CONFIG":       path,
		"AMPSTREAM_KAFKA_GROUP":  "from-env",
		"AMPSTREAM_DLQ_TOPIC":    "env-dlq",
		"AMPSTREAM_ADMIN_ADDR":   "127.0.0.1:1",
		"AMPSTREAM_LOG_LEVEL":    "",      // empty counts as unset
		"AMPSTREAM_KAFKA_TOPICS": "c, d,", // env list: comma-separated
	}
	c, err := Load([]string{"--kafka.group=from-flag", "--admin.addr", ":0"}, e.get)
	require.NoError(t, err)
	assert.Equal(t, "from-flag", c.Kafka.Group, "flag beats env and file")
	assert.Equal(t, ":0", c.Admin.Addr, "flag beats env")
	assert.Equal(t, "env-dlq", c.DLQ.Topic, "env beats file")
	assert.Equal(t, []string{"c", "d"}, c.Kafka.Topics, "env beats file")
	assert.Equal(t, "from-file", c.Kafka.ClientID, "file beats default")
	assert.Equal(t, "file-key", c.Amplitude.APIKey.Reveal())
	assert.Equal(t, "info", c.Log.Level, "default")
}

func TestLoadConfigFlagBeatsConfigEnv(t *testing.T) {
	t.Parallel()
	good := writeFile(t, "kafka: {group: good}\n")
	e := withKey()
	e["AMPSTREAM_CONFIG"] = filepath.Join(t.TempDir(), "does-not-exist.yaml")
	c, err := Load([]string{"--config", good}, e.get)
	require.NoError(t, err)
	assert.Equal(t, "good", c.Kafka.Group)

	_, err = Load(nil, e.get)
	require.ErrorIs(t, err, ErrFile)
	require.ErrorIs(t, err, os.ErrNotExist)
}

func TestLoadParsesEveryType(t *testing.T) {
	t.Parallel()
	path := writeFile(t, `
kafka:
  brokers: "k1:9092, k2:9092"   # a list as a comma string
  topics:
    - t1
    - t2
  fetch_max_bytes: 1MiB
  session_timeout: 45s
  tls:
    enabled: true
    insecure_skip_verify: yes_is_not_a_bool_so_not_used_here
`)
	// the line above is invalid on purpose; check the error, then load a good file.
	_, err := Load([]string{"--config", path}, withKey().get)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "kafka.tls.insecure_skip_verify")
	assert.Contains(t, err.Error(), "line 11")

	path = writeFile(t, `
kafka:
  brokers: "k1:9092, k2:9092"
  topics:
    - t1
    - t2
  fetch_max_bytes: 1MiB
  session_timeout: 45s
  tls:
    enabled: true
batch:
  key_eps_limit: 12.5
router:
  max_keys: 42
  backfill_age: 0
amplitude:
  gzip_min_bytes: 0
`)
	c, err := Load([]string{"--config", path, "--kafka.tls.insecure_skip_verify", "--realtime.max_bytes=100KB"}, withKey().get)
	require.NoError(t, err)
	assert.Equal(t, []string{"k1:9092", "k2:9092"}, c.Kafka.Brokers)
	assert.Equal(t, []string{"t1", "t2"}, c.Kafka.Topics)
	assert.Equal(t, 1<<20, c.Kafka.FetchMaxBytes)
	assert.Equal(t, 45*time.Second, c.Kafka.SessionTimeout)
	assert.True(t, c.Kafka.TLS.Enabled)
	assert.True(t, c.Kafka.TLS.InsecureSkipVerify, "a bare bool flag means true")
	assert.Equal(t, 100_000, c.Realtime.MaxBytes)
	assert.InDelta(t, 12.5, c.Batch.KeyEPSLimit, 0)
	assert.Equal(t, 42, c.Router.MaxKeys)
	assert.Zero(t, c.Router.BackfillAge)
	assert.Zero(t, c.Amplitude.GzipMinBytes)
}

func TestLoadYAMLNullKeepsTheDefault(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "# only comments\nkafka:\n  group:\nlog: ~\n")
	c, err := Load([]string{"--config", path}, withKey().get)
	require.NoError(t, err)
	assert.Equal(t, "ampstream", c.Kafka.Group)

	path = writeFile(t, "# nothing but a comment\n")
	_, err = Load([]string{"--config", path}, withKey().get)
	require.NoError(t, err)
}

func TestLoadErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		args    []string
		env     env
		file    string
		want    error
		mention []string
	}{
		{
			name: "an unknown YAML key is named with its line", file: "kafka:\n  brokerz: [a:1]\n",
			want: ErrUnknownKey, mention: []string{"kafka.brokerz", "line 2"},
		},
		{
			name: "an unknown top-level YAML section is named", file: "kafak:\n  brokers: [a:1]\n",
			want: ErrUnknownKey, mention: []string{"kafak"},
		},
		{
			name: "a section given a scalar is rejected", file: "kafka: yes\n",
			want: ErrInvalid, mention: []string{"kafka is a section"},
		},
		{
			name: "a duplicate YAML key is rejected", file: "dlq:\n  topic: a\n  topic: b\n",
			want: ErrInvalid, mention: []string{"dlq.topic appears twice"},
		},
		{
			name: "a list given to a scalar setting is rejected", file: "kafka:\n  group: [a, b]\n",
			want: ErrInvalid, mention: []string{"kafka.group is a string, not a list"},
		},
		{
			name: "broken YAML is a file error", file: "kafka: [\n",
			want: ErrFile,
		},
		{
			name: "an unknown flag is rejected", args: []string{"--kafka.nope=1"},
			want: ErrUnknownKey, mention: []string{"kafka.nope"},
		},
		{
			name: "a flag without its value is rejected", args: []string{"--kafka.group"},
			want: ErrInvalid, mention: []string{"kafka.group"},
		},
		{
			name: "a stray argument is rejected", args: []string{"extra"},
			want: ErrInvalid, mention: []string{`"extra"`},
		},
		{
			name: "a bad env value names the variable", env: env{"AMPSTREAM_KAFKA_SESSION_TIMEOUT": "30"},
			want: ErrInvalid, mention: []string{"kafka.session_timeout", `"30"`, "env AMPSTREAM_KAFKA_SESSION_TIMEOUT"},
		},
		{
			name: "a bad flag value names the flag", args: []string{"--kafka.fetch_max_bytes=lots"},
			want: ErrInvalid, mention: []string{"kafka.fetch_max_bytes", `"lots"`, "flag --kafka.fetch_max_bytes"},
		},
		{
			name: "a bad enum lists the choices", args: []string{"--kafka.sasl.mechanism=gssapi"},
			want: ErrInvalid, mention: []string{"gssapi", "plain", "scram-sha-512"},
		},
		{
			name: "the API key is required", env: env{},
			want: ErrMissing, mention: []string{"amplitude.api_key"},
		},
		{
			name: "validation runs after loading", args: []string{"--realtime.max_events=2001"},
			want: ErrInvalid, mention: []string{"realtime.max_events = 2001"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := tt.env
			if e == nil {
				e = withKey()
			}
			args := tt.args
			if tt.file != "" {
				args = append([]string{"--config", writeFile(t, tt.file)}, args...)
			}
			_, err := Load(args, e.get)
			require.ErrorIs(t, err, tt.want)
			for _, m := range tt.mention {
				assert.Contains(t, err.Error(), m)
			}
			assert.NotContains(t, err.Error(), "failed to")
		})
	}
}

func TestLoadHelpReturnsErrHelp(t *testing.T) {
	t.Parallel()
	_, err := Load([]string{"--help"}, withKey().get)
	require.ErrorIs(t, err, flag.ErrHelp)
}

func TestValidate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		modify func(c *Config)
		want   error
		key    string
	}{
		{"no brokers", func(c *Config) { c.Kafka.Brokers = nil }, ErrMissing, "kafka.brokers"},
		{"a broker without port", func(c *Config) { c.Kafka.Brokers = []string{"kafka"} }, ErrInvalid, "kafka.brokers"},
		{"a broker without host", func(c *Config) { c.Kafka.Brokers = []string{":9092"} }, ErrInvalid, "kafka.brokers"},
		{"no topics", func(c *Config) { c.Kafka.Topics = []string{} }, ErrMissing, "kafka.topics"},
		{"no group", func(c *Config) { c.Kafka.Group = "" }, ErrMissing, "kafka.group"},
		{"no client id", func(c *Config) { c.Kafka.ClientID = "" }, ErrMissing, "kafka.client_id"},
		{"bad start offset", func(c *Config) { c.Kafka.StartOffset = "newest" }, ErrInvalid, "kafka.start_offset"},
		{"zero session timeout", func(c *Config) { c.Kafka.SessionTimeout = 0 }, ErrInvalid, "kafka.session_timeout"},
		{"heartbeat not below session", func(c *Config) { c.Kafka.HeartbeatInterval = 30 * time.Second }, ErrInvalid, "kafka.heartbeat_interval"},
		{"heartbeat above a third of session", func(c *Config) { c.Kafka.HeartbeatInterval = 3400 * time.Millisecond }, ErrInvalid, "kafka.heartbeat_interval"},
		{"instance id with a slash", func(c *Config) { c.Kafka.GroupInstanceID = "ns/pod-0" }, ErrInvalid, "kafka.group_instance_id"},
		{"instance id of 250 characters", func(c *Config) { c.Kafka.GroupInstanceID = strings.Repeat("a", 250) }, ErrInvalid, "kafka.group_instance_id"},
		{"rebalance not above drain", func(c *Config) { c.Kafka.RebalanceTimeout = 20 * time.Second }, ErrInvalid, "kafka.rebalance_timeout"},
		{"zero commit interval", func(c *Config) { c.Kafka.CommitInterval = 0 }, ErrInvalid, "kafka.commit_interval"},
		{"zero fetch bytes", func(c *Config) { c.Kafka.FetchMaxBytes = 0 }, ErrInvalid, "kafka.fetch_max_bytes"},
		{"zero fetch wait", func(c *Config) { c.Kafka.FetchMaxWait = 0 }, ErrInvalid, "kafka.fetch_max_wait"},
		{"CA file without TLS", func(c *Config) { c.Kafka.TLS.CAFile = "/ca.pem" }, ErrInvalid, "kafka.tls.ca_file"},
		{"cert without key", func(c *Config) { c.Kafka.TLS = TLS{Enabled: true, CertFile: "/c.pem"} }, ErrInvalid, "kafka.tls.key_file"},
		{"bad SASL mechanism", func(c *Config) { c.Kafka.SASL.Mechanism = "gssapi" }, ErrInvalid, "kafka.sasl.mechanism"},
		{"SASL user without mechanism", func(c *Config) { c.Kafka.SASL.Username = "u" }, ErrInvalid, "kafka.sasl.username"},
		{"SASL without user", func(c *Config) { c.Kafka.SASL = SASL{Mechanism: SASLPlain, Password: "p"} }, ErrMissing, "kafka.sasl.username"},
		{"SASL without password", func(c *Config) { c.Kafka.SASL = SASL{Mechanism: SASLScramSHA256, Username: "u"} }, ErrMissing, "kafka.sasl.password"},
		{"no API key", func(c *Config) { c.Amplitude.APIKey = "" }, ErrMissing, "amplitude.api_key"},
		{"bad region", func(c *Config) { c.Amplitude.Region = "apac" }, ErrInvalid, "amplitude.region"},
		{"URL without scheme", func(c *Config) { c.Amplitude.URL = "api2.amplitude.com" }, ErrInvalid, "amplitude.url"},
		{"URL with a query", func(c *Config) { c.Amplitude.URL = "https://h/?a=1" }, ErrInvalid, "amplitude.url"},
		{"zero min id length", func(c *Config) { c.Amplitude.MinIDLength = 0 }, ErrInvalid, "amplitude.min_id_length"},
		{"zero timeout", func(c *Config) { c.Amplitude.Timeout = 0 }, ErrInvalid, "amplitude.timeout"},
		{"negative gzip threshold", func(c *Config) { c.Amplitude.GzipMinBytes = -1 }, ErrInvalid, "amplitude.gzip_min_bytes"},
		{"zero throttle pause", func(c *Config) { c.Amplitude.ThrottlePause = 0 }, ErrInvalid, "amplitude.throttle_pause"},
		{"zero initial backoff", func(c *Config) { c.Amplitude.RetryInitialBackoff = 0 }, ErrInvalid, "amplitude.retry_initial_backoff"},
		{"max backoff below initial", func(c *Config) { c.Amplitude.RetryMaxBackoff = time.Millisecond }, ErrInvalid, "amplitude.retry_max_backoff"},
		{"realtime events above 2000", func(c *Config) { c.Realtime.MaxEvents = 2001 }, ErrInvalid, "realtime.max_events"},
		{"realtime bytes above 1 MB", func(c *Config) { c.Realtime.MaxBytes = 1_000_001 }, ErrInvalid, "realtime.max_bytes"},
		{"negative realtime linger", func(c *Config) { c.Realtime.Linger = -1 }, ErrInvalid, "realtime.linger"},
		{"zero realtime concurrency", func(c *Config) { c.Realtime.Concurrency = 0 }, ErrInvalid, "realtime.concurrency"},
		{"zero batch events", func(c *Config) { c.Batch.MaxEvents = 0 }, ErrInvalid, "batch.max_events"},
		{"batch bytes above 20 MB", func(c *Config) { c.Batch.MaxBytes = 20_000_001 }, ErrInvalid, "batch.max_bytes"},
		{"zero batch concurrency", func(c *Config) { c.Batch.Concurrency = 0 }, ErrInvalid, "batch.concurrency"},
		{"zero key eps limit", func(c *Config) { c.Batch.KeyEPSLimit = 0 }, ErrInvalid, "batch.key_eps_limit"},
		{"fractional window", func(c *Config) { c.Router.Window = 1500 * time.Millisecond }, ErrInvalid, "router.window"},
		{"window beyond the tracker's ring", func(c *Config) { c.Router.Window = 32 * time.Second }, ErrInvalid, "router.window"},
		{"zero hot eps", func(c *Config) { c.Router.HotEPS = 0 }, ErrInvalid, "router.hot_eps"},
		{"cool eps not below hot", func(c *Config) { c.Router.CoolEPS = 10 }, ErrInvalid, "router.cool_eps"},
		{"negative cool hold", func(c *Config) { c.Router.CoolHold = -1 }, ErrInvalid, "router.cool_hold"},
		{"margin above 1", func(c *Config) { c.Router.UserEPSMargin = 1.5 }, ErrInvalid, "router.user_eps_margin"},
		{"negative backfill age", func(c *Config) { c.Router.BackfillAge = -1 }, ErrInvalid, "router.backfill_age"},
		{"negative lag threshold", func(c *Config) { c.Router.LagThreshold = -1 }, ErrInvalid, "router.lag_threshold"},
		{"zero max keys", func(c *Config) { c.Router.MaxKeys = 0 }, ErrInvalid, "router.max_keys"},
		{"negative event budget", func(c *Config) { c.Budget.EventsPerSecond = -1 }, ErrInvalid, "budget.events_per_second"},
		{"negative request budget", func(c *Config) { c.Budget.RequestsPerSecond = -1 }, ErrInvalid, "budget.requests_per_second"},
		{"no DLQ topic", func(c *Config) { c.DLQ.Topic = "" }, ErrMissing, "dlq.topic"},
		{"DLQ topic is consumed", func(c *Config) { c.DLQ.Topic = "events" }, ErrInvalid, "dlq.topic"},
		{"zero in-flight events", func(c *Config) { c.Limits.MaxInflightEvents = 0 }, ErrInvalid, "limits.max_inflight_events"},
		{"zero in-flight bytes", func(c *Config) { c.Limits.MaxInflightBytes = 0 }, ErrInvalid, "limits.max_inflight_bytes"},
		{"partition cap above process cap", func(c *Config) { c.Limits.PartitionMaxInflightEvents = 300_000 }, ErrInvalid, "limits.partition_max_inflight_events"},
		{"zero drain timeout", func(c *Config) { c.Shutdown.DrainTimeout = 0 }, ErrInvalid, "shutdown.drain_timeout"},
		{"admin addr without port", func(c *Config) { c.Admin.Addr = "localhost" }, ErrInvalid, "admin.addr"},
		{"admin port out of range", func(c *Config) { c.Admin.Addr = ":70000" }, ErrInvalid, "admin.addr"},
		{"bad log level", func(c *Config) { c.Log.Level = "trace" }, ErrInvalid, "log.level"},
		{"bad log format", func(c *Config) { c.Log.Format = "text" }, ErrInvalid, "log.format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := Default()
			c.Amplitude.APIKey = "k"
			tt.modify(&c)
			err := c.Validate()
			require.ErrorIs(t, err, tt.want)
			assert.Contains(t, err.Error(), tt.key)
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Kafka.Group = ""
	c.Log.Level = "loud"
	err := c.Validate()
	require.ErrorIs(t, err, ErrMissing)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Contains(t, err.Error(), "kafka.group")
	assert.Contains(t, err.Error(), "amplitude.api_key")
	assert.Contains(t, err.Error(), `log.level = "loud"`)
}

func TestParseBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"10485760", 10485760, true},
		{"512KiB", 512 << 10, true},
		{"10MB", 10_000_000, true},
		{"10 mib", 10 << 20, true},
		{"1GiB", 1 << 30, true},
		{"2gb", 2_000_000_000, true},
		{"100B", 100, true},
		{" 7 ", 7, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5MB", 0, false},
		{"10XB", 0, false},
		{"MB", 0, false},
		{"99999999999999999999", 0, false},
		{"9999999999999GiB", 0, false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.in), func(t *testing.T) {
			t.Parallel()
			got, err := parseBytes(tt.in)
			if !tt.ok {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	t.Parallel()
	const key = "super-secret-api-key"
	c := Default()
	c.Amplitude.APIKey = key
	c.Kafka.SASL.Password = "hunter2"

	assert.NotContains(t, fmt.Sprintf("%v %+v %#v %s", c, c, c, c.Amplitude.APIKey), key)
	js, err := json.Marshal(c)
	require.NoError(t, err)
	assert.NotContains(t, string(js), key)
	assert.NotContains(t, string(js), "hunter2")
	assert.Contains(t, string(js), redacted)
	assert.Equal(t, key, c.Amplitude.APIKey.Reveal())
	assert.Empty(t, Secret("").String(), "an unset secret shows as empty")
}

func TestSecretsAreNotTrimmed(t *testing.T) {
	t.Parallel()
	e := env{"AMPSTREAM_AMPLITUDE_API_KEY": " key "}
	c, err := Load(nil, e.get)
	require.NoError(t, err)
	assert.Equal(t, " key ", c.Amplitude.APIKey.Reveal())
}

func TestBaseURL(t *testing.T) {
	t.Parallel()
	a := Default().Amplitude
	assert.Equal(t, URLRegionUS, a.BaseURL())
	a.Region = RegionEU
	assert.Equal(t, URLRegionEU, a.BaseURL())
	a.URL = "http://127.0.0.1:8080/"
	assert.Equal(t, "http://127.0.0.1:8080", a.BaseURL(), "url wins over region")
}

func TestUsageAndReferenceListEverySetting(t *testing.T) {
	t.Parallel()
	var u, r strings.Builder
	require.NoError(t, Usage(&u, "ampstream"))
	require.NoError(t, Reference(&r))
	for _, s := range settings() {
		assert.Contains(t, u.String(), "--"+s.key+" ")
		assert.Contains(t, u.String(), s.env())
		assert.Contains(t, r.String(), "`"+s.key+"`")
	}
	assert.Contains(t, u.String(), "(default 1h)", "durations print without zero tails")
	assert.Contains(t, r.String(), "earliest\\|latest")
}

func TestErrorsAreDistinct(t *testing.T) {
	t.Parallel()
	all := []error{ErrInvalid, ErrMissing, ErrUnknownKey, ErrFile}
	for i, a := range all {
		for j, b := range all {
			assert.Equal(t, i == j, errors.Is(a, b))
		}
	}
}

func TestUnknownEnvNamesMisspeltVariablesOnly(t *testing.T) {
	t.Parallel()
	got := UnknownEnv([]string{
		"PATH=/bin",
		"AMPSTREAM_KAFKA_BROKERS=a:1",
		"AMPSTREAM_KAFKA_BROKER=a:1",
		"AMPSTREAM_CONFIG=/etc/ampstream.yaml",
		"AMPSTREAM_AMPLITUDE_APIKEY=secret-value",
	})
	assert.Equal(t, []string{"AMPSTREAM_KAFKA_BROKER", "AMPSTREAM_AMPLITUDE_APIKEY"}, got)
}

func TestGroupInstanceIDFollowsKafkasRules(t *testing.T) {
	t.Parallel()
	c := Default()
	c.Amplitude.APIKey = "k"
	for _, id := range []string{"", "ampstream-0", "pod.ampstream_7", strings.Repeat("a", 249)} {
		c.Kafka.GroupInstanceID = id
		assert.NoError(t, c.Validate(), id)
	}
}
