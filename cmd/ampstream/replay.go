package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/replay"
)

// runReplay re-drives dead-lettered events. Kafka connection settings come
// from the same sources as `run` (--config file, AMPSTREAM_* env); the API
// key is not needed.
func runReplay(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ampstream replay")
	cfgPath := fs.String("config", "", "ampstream YAML config file (Kafka brokers, TLS, SASL, dlq.topic)")
	from := fs.String("from", "", "dead-letter topic to read (default: dlq.topic of the configuration)")
	to := fs.String("to", "", "topic to produce to (default: each event's source topic)")
	reasons := fs.String("reason", "", "comma list of reasons to replay (default: all), e.g. invalid_id_length,daily_quota")
	since := fs.String("since", "", "only events dead-lettered at or after this time: a duration ago (90m, 24h, 7d) or RFC 3339 (2026-01-02T15:04:05Z)")
	until := fs.String("until", "", "only events dead-lettered before this time: a duration ago or RFC 3339")
	dryRun := fs.Bool("dry-run", false, "report what would be replayed without producing")
	limit := fs.Int("limit", 0, "replay at most this many events (0: no limit)")
	if err := parseFlags(fs, replaySynopsis, args, stdout); err != nil {
		return err
	}
	now := time.Now()
	var err error
	var o replay.Options
	if o.Since, err = parseWhen(*since, now); err != nil {
		return usageErr(fs.Name(), fmt.Errorf("--since %w", err))
	}
	if o.Until, err = parseWhen(*until, now); err != nil {
		return usageErr(fs.Name(), fmt.Errorf("--until %w", err))
	}
	var cargs []string
	if *cfgPath != "" {
		cargs = []string{"--config", *cfgPath}
	}
	cfg, err := config.Parse(cargs, getenv)
	if err != nil {
		return usageErr(fs.Name(), err)
	}
	dialer, transport, err := app.KafkaClients(cfg.Kafka)
	if err != nil {
		return err
	}
	o.Brokers, o.Dialer, o.Transport = cfg.Kafka.Brokers, dialer, transport
	o.From, o.To, o.DryRun, o.Limit = *from, *to, *dryRun, *limit
	if o.From == "" {
		o.From = cfg.DLQ.Topic
	}
	if *reasons != "" {
		o.Reasons = strings.Split(*reasons, ",")
	}
	rep, err := replay.Run(ctx, o)
	if err != nil {
		// No summary line: a script reading stdout must not take a partial
		// run for a finished one. What was produced is part of the error.
		if rep.Produced > 0 {
			return fmt.Errorf("replay from %s stopped after producing %d of %d selected events: %w", o.From, rep.Produced, rep.Selected, err)
		}
		return fmt.Errorf("replay from %s: %w", o.From, err)
	}
	mode := "replayed"
	if *dryRun {
		mode = "dry run (nothing produced)"
	}
	fmt.Fprintf(stdout, "%s from %s: %s\n", mode, o.From, rep)
	return nil
}

const replaySynopsis = `Reads the dead-letter topic from its start to the end offsets seen when it began, selects
events by reason and time, and produces the original bytes back to their source topic (or
--to). Kafka settings come from --config and AMPSTREAM_* variables, as for 'ampstream run';
the API key is not needed. Replaying twice is deduplicated by Amplitude (stable insert_id).`

// parseWhen reads a --since/--until value: empty (no bound), a duration ago
// (Go syntax, plus whole days as "7d"), or an RFC 3339 time.
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, nil
	}
	if days, ok := strings.CutSuffix(s, "d"); ok {
		if n, err := strconv.Atoi(days); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: want a duration ago, not a negative one", s)
		}
		return now.Add(-d), nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q: want a duration ago (90m, 24h, 7d) or an RFC 3339 time (2006-01-02T15:04:05Z)", s)
}
