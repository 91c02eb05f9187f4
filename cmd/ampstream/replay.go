package main

import (
	"context"
	"flag"
	"fmt"
	"io"
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
	fs := flag.NewFlagSet("ampstream replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "ampstream YAML config file (Kafka brokers, TLS, SASL, dlq.topic)")
	from := fs.String("from", "", "dead-letter topic to read (default: dlq.topic of the configuration)")
	to := fs.String("to", "", "topic to produce to (default: each event's source topic)")
	reasons := fs.String("reason", "", "comma list of reasons to replay (default: all), e.g. invalid_id_length,daily_quota")
	since := fs.String("since", "", "only events dead-lettered at or after this RFC 3339 time, or this long ago (e.g. 24h)")
	until := fs.String("until", "", "only events dead-lettered before this RFC 3339 time, or this long ago")
	dryRun := fs.Bool("dry-run", false, "report what would be replayed without producing")
	limit := fs.Int("limit", 0, "replay at most this many events (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cargs []string
	if *cfgPath != "" {
		cargs = []string{"--config", *cfgPath}
	}
	cfg, err := config.Parse(cargs, getenv)
	if err != nil {
		return err
	}
	dialer, transport, err := app.KafkaClients(cfg.Kafka)
	if err != nil {
		return err
	}
	o := replay.Options{Brokers: cfg.Kafka.Brokers, Dialer: dialer, Transport: transport, From: *from, To: *to, DryRun: *dryRun, Limit: *limit}
	if o.From == "" {
		o.From = cfg.DLQ.Topic
	}
	if *reasons != "" {
		o.Reasons = strings.Split(*reasons, ",")
	}
	if o.Since, err = parseWhen(*since); err != nil {
		return fmt.Errorf("--since: %w", err)
	}
	if o.Until, err = parseWhen(*until); err != nil {
		return fmt.Errorf("--until: %w", err)
	}
	rep, err := replay.Run(ctx, o)
	mode := "replayed"
	if *dryRun {
		mode = "dry run (nothing produced)"
	}
	fmt.Fprintf(stdout, "%s from %s: %s\n", mode, o.From, rep)
	return err
}

func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	return time.Parse(time.RFC3339, s)
}
