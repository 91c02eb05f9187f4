package config

import (
	"flag"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// problemsOf splits Load's joined error into its lines.
func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	require.Error(t, err)
	return strings.Split(err.Error(), "\n")
}

func TestLoadReportsEveryProblemWithItsSource(t *testing.T) {
	t.Parallel()
	path := writeFile(t, "kafka:\n  brokerz: [a:1]\nrealtime:\n  max_events: 9000\namplitude:\n  region: apac\n")
	e := env{"AMPSTREAM_REALTIME_CONCURRENCY": "0", "AMPSTREAM_KAFKA_SESSION_TIMEOUT": "30"}
	_, err := Load([]string{"--config", path, "--batch.max_events=5000", "--kafak.group=x", "stray"}, e.get)
	require.ErrorIs(t, err, ErrUnknownKey)
	require.ErrorIs(t, err, ErrInvalid)
	require.ErrorIs(t, err, ErrMissing)
	want := []string{
		`unknown setting: flag --kafak.group: did you mean --kafka.group?`,
		`invalid setting: unexpected argument "stray"`,
		`unknown setting: kafka.brokerz (file ` + path + ` line 2): did you mean kafka.brokers?`,
		`invalid setting: realtime.max_events = 9000 (file ` + path + ` line 4): want 1..2000`,
		`invalid setting: amplitude.region = "apac" (file ` + path + ` line 6): want one of us, eu`,
		`invalid setting: kafka.session_timeout = "30" (env AMPSTREAM_KAFKA_SESSION_TIMEOUT): want a duration such as 250ms, 30s or 1h`,
		`missing setting: amplitude.api_key is required: set AMPSTREAM_AMPLITUDE_API_KEY, --amplitude.api_key or amplitude.api_key in the config file`,
		`invalid setting: realtime.concurrency = 0 (env AMPSTREAM_REALTIME_CONCURRENCY): must be at least 1`,
		`invalid setting: batch.max_events = 5000 (flag --batch.max_events): want 1..2000`,
	}
	assert.ElementsMatch(t, want, problemsOf(t, err))
}

func TestLoadProblemSources(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		env  env
		file string
		want string // one whole line of the error; FILE stands for the file's path
	}{
		{
			name: "a range error from a flag names the flag",
			args: []string{"--realtime.max_events", "2001"},
			want: `invalid setting: realtime.max_events = 2001 (flag --realtime.max_events): want 1..2000`,
		},
		{
			name: "a range error from the environment names the variable",
			env:  env{"AMPSTREAM_ROUTER_HOT_EPS": "-1"},
			want: `invalid setting: router.hot_eps = -1 (env AMPSTREAM_ROUTER_HOT_EPS): must be positive`,
		},
		{
			name: "a range error from the file names file and line",
			file: "router:\n  max_keys: 0\n",
			want: `invalid setting: router.max_keys = 0 (file FILE line 2): must be at least 1`,
		},
		{
			name: "a range error of a default names no source",
			args: []string{"--shutdown.drain_timeout=40s"},
			want: `invalid setting: kafka.rebalance_timeout = 30s: must exceed shutdown.drain_timeout (40s)`,
		},
		{
			name: "the flag wins, so the flag is named",
			env:  env{"AMPSTREAM_LOG_LEVEL": "info"}, args: []string{"--log.level=loud"},
			want: `invalid setting: log.level = "loud" (flag --log.level): want one of debug, info, warn, error`,
		},
		{
			name: "a missing setting names its variable",
			env:  env{},
			want: `missing setting: amplitude.api_key is required: set AMPSTREAM_AMPLITUDE_API_KEY, --amplitude.api_key or amplitude.api_key in the config file`,
		},
		{
			name: "a conditionally required setting says why",
			args: []string{"--kafka.sasl.mechanism=plain", "--kafka.sasl.password=p"},
			want: `missing setting: kafka.sasl.username is required (kafka.sasl.mechanism is plain): set AMPSTREAM_KAFKA_SASL_USERNAME, --kafka.sasl.username or kafka.sasl.username in the config file`,
		},
		{
			name: "a misspelt YAML key gets the nearest",
			file: "dlq:\n  topik: x\n",
			want: `unknown setting: dlq.topik (file FILE line 2): did you mean dlq.topic?`,
		},
		{
			name: "a misspelt YAML section gets the nearest section",
			file: "amplitdue:\n  region: eu\n",
			want: `unknown setting: amplitdue (file FILE line 1): did you mean amplitude?`,
		},
		{
			name: "a key in the wrong section gets the right one",
			file: "kafka:\n  drain_timeout: 5s\n",
			want: `unknown setting: kafka.drain_timeout (file FILE line 2): did you mean shutdown.drain_timeout?`,
		},
		{
			name: "a key far from every setting gets no guess",
			file: "kafka:\n  zookeeper: z:2181\n",
			want: `unknown setting: kafka.zookeeper (file FILE line 2)`,
		},
		{
			name: "a misspelt flag gets the nearest",
			args: []string{"--admin.adr=:1"},
			want: `unknown setting: flag --admin.adr: did you mean --admin.addr?`,
		},
		{
			name: "a flag without its value says so",
			args: []string{"--kafka.group"},
			want: `invalid setting: flag --kafka.group needs a value`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := tt.env
			if e == nil {
				e = withKey()
			}
			args, path := tt.args, ""
			if tt.file != "" {
				path = writeFile(t, tt.file)
				args = append([]string{"--config", path}, args...)
			}
			_, err := Load(args, e.get)
			assert.Contains(t, problemsOf(t, err), strings.ReplaceAll(tt.want, "FILE", path))
		})
	}
}

func TestLoadReportsABadValueOnce(t *testing.T) {
	t.Parallel()
	// The unparsable value leaves the default, which validation must not
	// then report as a second problem of the same setting.
	_, err := Load([]string{"--realtime.max_events=lots"}, withKey().get)
	lines := problemsOf(t, err)
	require.Len(t, lines, 1, lines)
	assert.Contains(t, lines[0], `realtime.max_events = "lots" (flag --realtime.max_events): want an integer`)
}

func TestLoadALaterSourceReplacesABadValue(t *testing.T) {
	t.Parallel()
	e := withKey()
	e["AMPSTREAM_REALTIME_MAX_EVENTS"] = "9000"
	_, err := Load([]string{"--realtime.max_events=50"}, e.get)
	require.NoError(t, err, "the flag wins; the env value is never used")
}

func TestParseCollectsEveryParseError(t *testing.T) {
	t.Parallel()
	_, err := Parse([]string{"--kafka.session_timeout=x", "--kafka.fetch_max_wait=y"}, env{}.get)
	require.ErrorIs(t, err, ErrInvalid)
	assert.Len(t, problemsOf(t, err), 2)
	_, err = Parse([]string{"-h"}, env{}.get)
	require.ErrorIs(t, err, flag.ErrHelp)
}

func TestSuggestEnv(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]string{
		"AMPSTREAM_KAFKA_BROKER":      "AMPSTREAM_KAFKA_BROKERS",
		"AMPSTREAM_AMPLITUDE_APIKEY":  "AMPSTREAM_AMPLITUDE_API_KEY",
		"AMPSTREAM_CONFIG_FILE":       "",
		"AMPSTREAM_LOG_FROMAT":        "AMPSTREAM_LOG_FORMAT",
		"AMPSTREAM_SOMETHING_ELSE_XY": "",
	} {
		assert.Equal(t, want, SuggestEnv(name), name)
	}
}

func TestEditDistance(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"kafka", "kafka", 0}, {"kafak", "kafka", 1}, {"brokerz", "brokers", 1},
		{"topik", "topic", 1}, {"addr", "adr", 1}, {"abc", "", 3}, {"group", "grope", 2},
	} {
		assert.Equal(t, tt.want, editDistance(tt.a, tt.b), "%s/%s", tt.a, tt.b)
		assert.Equal(t, tt.want, editDistance(tt.b, tt.a), "%s/%s", tt.b, tt.a)
	}
}
