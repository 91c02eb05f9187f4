package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/emulator"
)

// runEmulate serves the Amplitude API emulator until ctx is cancelled. Its
// first line on stdout is "listening on http://ADDR", which scripts and
// tests read to learn the port chosen for --listen 127.0.0.1:0.
func runEmulate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := emulator.DefaultConfig()
	fs := newFlagSet("ampstream emulate")
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on (port 0 picks a free one)")
	apiKeys := fs.String("api-keys", "", "comma list of accepted API keys (default: any non-empty key)")
	httpEPS := fs.Int("httpapi-eps", def.HTTPAPI.EPS, "per-device and per-user events/s on /2/httpapi, averaged over the window (0: no limit)")
	batchEPS := fs.Int("batch-eps", def.Batch.EPS, "per-device and per-user events/s on /batch, averaged over the window (0: no limit)")
	window := fs.Duration("window", 0, "averaging window of both routes (default: 10s for /2/httpapi, 30s for /batch)")
	quota := fs.Int("batch-daily-quota", def.Batch.DailyQuota, "events per device or user per rolling 24 h on /batch (0: no quota)")
	silenced := fs.String("silenced-devices", "", "comma list of device_ids answered 400 \"Events silenced for device_id\"")
	retryAfter := fs.Duration("retry-after", 0, "add a Retry-After header to 429 and 503 answers (0: none, as Amplitude)")
	faultRate := fs.Float64("fault-rate", 0, "probability of a random fault per API request (5xx, non-JSON body, reset)")
	faultSeed := fs.Uint64("fault-seed", 1, "seed of the random faults, for reproducible runs")
	maxLog := fs.Int("max-log-events", 1_000_000, "events kept for GET /debug/events (0: no limit)")
	level := fs.String("log-level", "info", "log level (logs go to stderr)")
	if err := parseFlags(fs, emulateSynopsis, args, stdout); err != nil {
		return err
	}

	cfg := def
	cfg.APIKeys = splitList(*apiKeys)
	cfg.SilencedDevices = splitList(*silenced)
	cfg.HTTPAPI.EPS = *httpEPS
	cfg.Batch.EPS = *batchEPS
	if *window > 0 {
		cfg.HTTPAPI.Window, cfg.Batch.Window = *window, *window
	}
	cfg.Batch.DailyQuota = *quota
	cfg.RetryAfter = *retryAfter
	cfg.FaultRate = *faultRate
	cfg.FaultSeed = *faultSeed
	cfg.MaxLogEvents = *maxLog
	if err := cfg.Validate(); err != nil {
		return usageErr(fs.Name(), fmt.Errorf("emulate: %w", err))
	}

	log := newLogger(stderr, *level, config.LogFormatConsole)
	emu := emulator.New(cfg, log)
	srv, err := emulator.Start(ctx, *listen, emu)
	if err != nil {
		return fmt.Errorf("emulate: %w", err)
	}
	fmt.Fprintf(stdout, "listening on %s\n", srv.URL())
	log.Info().Str("url", srv.URL()).Int("httpapi_eps", cfg.HTTPAPI.EPS).Stringer("httpapi_window", cfg.HTTPAPI.Window).
		Int("batch_eps", cfg.Batch.EPS).Stringer("batch_window", cfg.Batch.Window).Int("batch_daily_quota", cfg.Batch.DailyQuota).
		Float64("fault_rate", cfg.FaultRate).Msg("emulator serving POST /2/httpapi, POST /batch and /debug/")
	start := time.Now()
	err = srv.Wait() // returns once ctx is cancelled and the server has stopped
	st := emu.Stats()
	log.Info().Stringer("uptime", time.Since(start).Round(time.Second)).Int64("requests", st.Requests).Int64("ingested", st.Ingested).
		Int64("duplicates", st.Duplicates).Int64("throttled", st.Throttled).Msg("emulator stopped")
	if err != nil {
		return fmt.Errorf("emulate: %w", err)
	}
	return nil
}

const emulateSynopsis = `Serves Amplitude's POST /2/httpapi and POST /batch with their documented answers (400 with
its detail, 413, 429 per device and user, daily quota), optional random faults, and /debug/
endpoints that show what was ingested. The first line on stdout is "listening on URL".`

// splitList splits a comma list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
