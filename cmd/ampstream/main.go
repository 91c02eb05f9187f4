// Command ampstream forwards Amplitude events from Kafka to Amplitude.
//
//	ampstream run       the service (configuration: flags, AMPSTREAM_* env, --config file)
//	ampstream demo      everything in one process: Kafka, an Amplitude emulator, traffic
//	ampstream emulate   the Amplitude API emulator, for testing your own pipelines
//	ampstream replay    re-drive dead-lettered events once their cause is fixed
//	ampstream healthcheck  probe a running ampstream's admin endpoint (Docker HEALTHCHECK)
//	ampstream version
//
// Exit status: 0 success, 1 failure, 2 a wrong command line or configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/demo"
	"github.com/ampstream/ampstream/internal/memlimit"
)

// Set by -ldflags at build time.
var (
	version = "dev"
	commit  = "unknown"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	report(os.Stderr, err)
	os.Exit(exitCode(err))
}

const usage = `ampstream forwards Amplitude events from Kafka to Amplitude.

Usage:
  ampstream run [flags]       run the service (see --help for every setting)
  ampstream demo [flags]      embedded demo: in-process Kafka + Amplitude emulator + traffic
  ampstream emulate [flags]   run the Amplitude API emulator
  ampstream replay [flags]    re-drive dead-lettered events (--dry-run, --reason, --since)
  ampstream healthcheck [flags]  probe a running ampstream (exit 0 healthy, 1 not)
  ampstream version           print the version

Every command takes --help. Exit status: 0 success, 1 failure, 2 usage or configuration error.
`

// commands are the names run knows, for "did you mean".
var commands = []string{"run", "demo", "emulate", "replay", "healthcheck", "version", "help"}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErr("", errors.New("no command given"))
	}
	switch args[0] {
	case "run":
		return runService(ctx, args[1:], getenv, stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "emulate":
		return runEmulate(ctx, args[1:], stdout, stderr)
	case "replay":
		return runReplay(ctx, args[1:], getenv, stdout, stderr)
	case "healthcheck":
		return runHealthcheck(ctx, args[1:], getenv, stdout)
	case "version", "--version", "-v":
		fmt.Fprintf(stdout, "ampstream %s (%s)\n", version, commit)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	if s := closest(args[0], commands); s != "" {
		return usageErr("", fmt.Errorf("unknown command %q (did you mean %q?)", args[0], s))
	}
	return usageErr("", fmt.Errorf("unknown command %q", args[0]))
}

// closest is the command that name abbreviates (at least 3 letters) or is
// one typo away from, if any.
func closest(name string, names []string) string {
	for _, n := range names {
		if len(name) >= 3 && strings.HasPrefix(n, name) || oneEditApart(name, n) {
			return n
		}
	}
	return ""
}

// oneEditApart reports whether a becomes b by one insertion, deletion,
// substitution or swap of neighbours.
func oneEditApart(a, b string) bool {
	if len(a) > len(b) {
		a, b = b, a
	}
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	switch {
	case len(b)-len(a) > 1, a == b:
		return false
	case len(a) < len(b):
		return a[i:] == b[i+1:]
	case i+1 < len(a) && a[i] == b[i+1] && a[i+1] == b[i] && a[i+2:] == b[i+2:]:
		return true
	default:
		return a[i+1:] == b[i+1:]
	}
}

func runService(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		_ = config.Usage(stdout, "ampstream run")
		return nil
	}
	if err != nil {
		return usageErr("ampstream run", err)
	}
	log := newLogger(stderr, cfg.Log.Level, cfg.Log.Format)
	for _, name := range config.UnknownEnv(os.Environ()) {
		ev := log.Warn().Str("env", name)
		if s := config.SuggestEnv(name); s != "" {
			ev = ev.Str("did_you_mean", s)
		}
		ev.Msg("unknown AMPSTREAM_ variable ignored; check its spelling")
	}
	// 90 % of the container's memory limit, unless GOMEMLIMIT says otherwise.
	if r, err := memlimit.Set("/", getenv); err != nil {
		log.Warn().Err(err).Msg("container memory limit unreadable; the Go runtime runs without a memory limit")
	} else if !r.None() {
		log.Info().Int64("bytes", r.Limit).Str("from", r.Source).Msg("Go runtime memory limit")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a, err := app.New(cfg, log, reg, app.Build{Version: version, Commit: commit})
	if err != nil {
		return err
	}
	log.Info().Str("version", version).Strs("brokers", cfg.Kafka.Brokers).Strs("topics", cfg.Kafka.Topics).
		Str("group", cfg.Kafka.Group).Str("isolation", cfg.Kafka.IsolationLevel).Str("amplitude", cfg.Amplitude.BaseURL()).Msg("ampstream starting")
	return a.Run(ctx)
}

const demoSynopsis = `Runs everything in one process: an in-process Kafka, the Amplitude emulator, ampstream
and a traffic generator with bursts, backfill and invalid events, then checks that every
valid event was accepted exactly once and in order. The status page address is printed first.`

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("ampstream demo")
	var o demo.Options
	fs.DurationVar(&o.Duration, "duration", 20*time.Second, "how long traffic is produced")
	fs.IntVar(&o.Rate, "rate", 2000, "normal events per second")
	fs.IntVar(&o.Devices, "devices", 5000, "number of normal (low-rate) devices")
	fs.IntVar(&o.Bursters, "bursters", 5, "devices that burst")
	fs.IntVar(&o.BurstSize, "burst-size", 2000, "events per burst")
	fs.IntVar(&o.Backfill, "backfill", 5000, "backfill events (two days old)")
	fs.IntVar(&o.Partitions, "partitions", 12, "partitions of the events topic")
	level := fs.String("log-level", "error", "log level of the pipeline (logs go to stderr; the demo's dead-lettering warnings are expected)")
	if err := parseFlags(fs, demoSynopsis, args, stdout); err != nil {
		return err
	}
	o.Out = stdout
	o.Log = newLogger(stderr, *level, config.LogFormatConsole)
	o.Build = app.Build{Version: version, Commit: commit}
	_, err := demo.Run(ctx, o)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	fmt.Fprintln(stdout, "\ndemo passed: every valid event accepted exactly once, in order; every invalid one dead-lettered; all offsets committed")
	return nil
}
