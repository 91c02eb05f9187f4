package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// cli runs the command line as main does and returns its exit status and
// output.
func cli(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, func(k string) string { return env[k] }, &out, &errOut)
	report(&errOut, err)
	return exitCode(err), out.String(), errOut.String()
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		name       string
		args       []string
		env        map[string]string
		code       int
		stdout     []string // substrings
		stderr     []string
		noStdout   bool
		stderrOnly bool
	}{
		{
			name: "no command: usage on stderr, status 2", args: nil, code: 2, noStdout: true,
			stderr: []string{"Usage:", "ampstream run [flags]", "no command given"},
		},
		{
			name: "an unknown command: usage on stderr, status 2, the nearest command", args: []string{"replya"}, code: 2, noStdout: true,
			stderr: []string{"Usage:", `unknown command "replya" (did you mean "replay"?)`},
		},
		{
			name: "an abbreviated command is named", args: []string{"health"}, code: 2,
			stderr: []string{`did you mean "healthcheck"?`},
		},
		{
			name: "help: usage on stdout, status 0", args: []string{"help"}, code: 0,
			stdout: []string{"Usage:", "ampstream healthcheck"},
		},
		{
			name: "version", args: []string{"version"}, code: 0, stdout: []string{"ampstream dev (unknown)"},
		},
		{
			name: "run: every configuration problem at once, with sources, status 2",
			args: []string{"run", "--realtime.max_events=5000", "--kafka.brokerz=a:1"},
			env:  map[string]string{"AMPSTREAM_BATCH_CONCURRENCY": "0"},
			code: 2, noStdout: true,
			stderr: []string{
				"ampstream: 4 problems:\n",
				"unknown setting: flag --kafka.brokerz: did you mean --kafka.brokers?",
				"realtime.max_events = 5000 (flag --realtime.max_events): want 1..2000",
				"batch.concurrency = 0 (env AMPSTREAM_BATCH_CONCURRENCY): must be at least 1",
				"amplitude.api_key is required: set AMPSTREAM_AMPLITUDE_API_KEY",
				"Run 'ampstream run --help' for usage.",
			},
		},
		{
			name: "run: one problem is one line", args: []string{"run"}, code: 2,
			stderr: []string{"ampstream: missing setting: amplitude.api_key is required: set AMPSTREAM_AMPLITUDE_API_KEY"},
		},
		{
			name: "replay --since with a word: a readable error, status 2", args: []string{"replay", "--since", "yesterday"}, code: 2, noStdout: true,
			stderr: []string{`--since "yesterday": want a duration ago (90m, 24h, 7d) or an RFC 3339 time`, "Run 'ampstream replay --help'"},
		},
		{
			name: "replay --until with a negative duration", args: []string{"replay", "--until=-5m"}, code: 2,
			stderr: []string{`--until "-5m": want a duration ago, not a negative one`},
		},
		{
			name: "a subcommand's unknown flag is a usage error in --name form", args: []string{"emulate", "--bogus"}, code: 2,
			stderr: []string{"flag provided but not defined: --bogus", "Run 'ampstream emulate --help'"},
		},
		{
			name: "a subcommand's misspelt flag gets the nearest", args: []string{"replay", "--dryrun"}, code: 2,
			stderr: []string{"flag provided but not defined: --dryrun (did you mean --dry-run?)"},
		},
		{
			name: "a subcommand's stray argument is a usage error", args: []string{"demo", "now"}, code: 2,
			stderr: []string{`unexpected argument "now"`},
		},
		{
			name: "healthcheck without a server fails with status 1", args: []string{"healthcheck", "--url", "http://127.0.0.1:1/readyz", "--timeout", "2s"}, code: 1,
			stderr: []string{"healthcheck http://127.0.0.1:1/readyz"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, tt.env, tt.args...)
			assert.Equal(t, tt.code, code, "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			for _, s := range tt.stdout {
				assert.Contains(t, stdout, s)
			}
			for _, s := range tt.stderr {
				assert.Contains(t, stderr, s)
			}
			if tt.noStdout {
				assert.Empty(t, stdout)
			}
		})
	}
}

// Every subcommand's --help has the layout of `ampstream run --help`:
// "Usage: ampstream X [flags]", then "  --name type" lines with the meaning
// indented below; no Go-style single-dash "  -name" lines.
func TestEveryCommandHasTheSameHelp(t *testing.T) {
	flagLine := regexp.MustCompile(`(?m)^  --[a-z][a-z0-9._-]*( [a-z|]+)?(   \(env [A-Z_]+\))?\n        \S`)
	for _, cmd := range []string{"run", "demo", "emulate", "replay", "healthcheck"} {
		for _, help := range []string{"--help", "-h"} {
			t.Run(cmd+" "+help, func(t *testing.T) {
				code, stdout, stderr := cli(t, nil, cmd, help)
				require.Equal(t, 0, code, stderr)
				assert.Empty(t, stderr)
				assert.True(t, strings.HasPrefix(stdout, "Usage: ampstream "+cmd+" [flags]\n\n"), stdout)
				assert.GreaterOrEqual(t, len(flagLine.FindAllString(stdout, -1)), 2, stdout)
				assert.NotRegexp(t, `(?m)^  -[a-z]`, stdout, "single-dash flag")
				assert.NotContains(t, stdout, "Usage of ")
			})
		}
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "", want: time.Time{}},
		{in: "24h", want: now.Add(-24 * time.Hour)},
		{in: "90m", want: now.Add(-90 * time.Minute)},
		{in: " 1h30m ", want: now.Add(-90 * time.Minute)},
		{in: "7d", want: now.Add(-7 * 24 * time.Hour)},
		{in: "2026-03-09T08:00:00Z", want: time.Date(2026, 3, 9, 8, 0, 0, 0, time.UTC)},
		{in: "2026-03-09T08:00:00+02:00", want: time.Date(2026, 3, 9, 6, 0, 0, 0, time.UTC)},
		{in: "yesterday", err: `"yesterday": want a duration ago (90m, 24h, 7d) or an RFC 3339 time (2006-01-02T15:04:05Z)`},
		{in: "2026-03-09", err: `"2026-03-09": want a duration ago`},
		{in: "-1h", err: `"-1h": want a duration ago, not a negative one`},
		{in: "1.5d", err: `"1.5d": want`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseWhen(tt.in, now)
			if tt.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.err)
				assert.NotContains(t, err.Error(), "cannot parse")
				return
			}
			require.NoError(t, err)
			assert.True(t, tt.want.Equal(got), "got %s want %s", got, tt.want)
		})
	}
}

// A failed replay prints no summary line: stdout stays empty, so a script
// cannot take the failure for a finished run.
func TestReplayFailurePrintsNoSummary(t *testing.T) {
	env := map[string]string{"AMPSTREAM_KAFKA_BROKERS": "127.0.0.1:1"}
	for _, args := range [][]string{{"replay", "--dry-run"}, {"replay"}} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			code, stdout, stderr := cli(t, env, args...)
			assert.Equal(t, 1, code, stderr)
			assert.Empty(t, stdout)
			assert.Contains(t, stderr, "ampstream: replay from ampstream-dlq: ")
		})
	}
}

func TestHealthcheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/readyz":
			fmt.Fprintln(w, "ok")
		case "/startupz":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not a member of a consumer group generation yet")
			fmt.Fprintln(w, "second line")
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	port := u.Port()

	tests := []struct {
		name   string
		args   []string
		env    map[string]string
		code   int
		stdout string
		stderr string
	}{
		{name: "admin.addr from the environment, /readyz by default", args: nil, env: map[string]string{"AMPSTREAM_ADMIN_ADDR": ":" + port},
			code: 0, stdout: "http://127.0.0.1:" + port + "/readyz: ok\n"},
		{name: "an unspecified host is reached on loopback", env: map[string]string{"AMPSTREAM_ADMIN_ADDR": "0.0.0.0:" + port},
			code: 0, stdout: "http://127.0.0.1:" + port + "/readyz: ok\n"},
		{name: "a non-200 answer is status 1 with the answer", args: []string{"--path", "/startupz"}, env: map[string]string{"AMPSTREAM_ADMIN_ADDR": "127.0.0.1:" + port},
			code: 1, stderr: "503 Service Unavailable: not a member of a consumer group generation yet; second line"},
		{name: "--url wins", args: []string{"--url", srv.URL + "/readyz"}, env: map[string]string{"AMPSTREAM_ADMIN_ADDR": "127.0.0.1:1"},
			code: 0, stdout: srv.URL + "/readyz: ok\n"},
		{name: "admin.addr with port 0 needs --url", env: map[string]string{"AMPSTREAM_ADMIN_ADDR": "127.0.0.1:0"},
			code: 2, stderr: "admin.addr has port 0"},
		{name: "a bad config value is a usage error", env: map[string]string{"AMPSTREAM_LOG_LEVEL": "loud"},
			code: 2, stderr: "log.level"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, tt.env, append([]string{"healthcheck"}, tt.args...)...)
			assert.Equal(t, tt.code, code, stderr)
			if tt.stdout != "" {
				assert.Equal(t, tt.stdout, stdout)
			}
			assert.Contains(t, stderr, tt.stderr)
		})
	}
}

func TestAdminURL(t *testing.T) {
	for addr, want := range map[string]string{
		":9090":          "http://127.0.0.1:9090/readyz",
		"0.0.0.0:9090":   "http://127.0.0.1:9090/readyz",
		"[::]:9090":      "http://127.0.0.1:9090/readyz",
		"10.1.2.3:9090":  "http://10.1.2.3:9090/readyz",
		"localhost:9091": "http://localhost:9091/readyz",
		"[::1]:9090":     "http://[::1]:9090/readyz",
	} {
		got, err := adminURL(addr, "readyz")
		require.NoError(t, err, addr)
		assert.Equal(t, want, got, addr)
	}
	_, err := adminURL("nonsense", "/readyz")
	assert.Error(t, err)
}

// The console log format writes colour escapes only to a terminal; a buffer
// (or a file, or a pipe to docker logs) gets plain text.
func TestConsoleLogsHaveNoColourOffATerminal(t *testing.T) {
	var b bytes.Buffer
	log := newLogger(&b, "info", "console")
	log.Warn().Str("topic", "events").Msg("something to see")
	assert.Contains(t, b.String(), "WRN something to see topic=events")
	assert.NotContains(t, b.String(), "\x1b[")
}
