// Command ampstream-bench is ampstream's end-to-end benchmark (what make
// bench runs): Kafka → ampstream → an HTTP sink on 127.0.0.1, against a
// baseline forwarder on the same broker. Progress goes to stderr, details
// as JSON to --out, one BENCH summary line to stdout. It is a command of
// its own so that the service binary carries none of it.
//
//	go run ./cmd/ampstream-bench --quick                        # CI smoke run
//	KAFKA_BROKERS=127.0.0.1:9092 go run ./cmd/ampstream-bench   # a real broker
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/ampstream/ampstream/internal/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == brokerCommand {
		// The benchmark's own broker child (bench.Options.BrokerCommand).
		err = bench.ServeBroker(ctx, os.Stdin, os.Stdout)
	} else {
		err = runBench(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ampstream-bench:", err)
		os.Exit(1)
	}
}

// brokerCommand is the argument with which the benchmark starts itself as
// its kfake broker child.
const brokerCommand = "broker"

// runBench runs the end-to-end benchmark (internal/bench): progress on
// stderr, details as JSON to --out, one BENCH summary line on stdout.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ampstream-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o bench.Options
	fs.IntVar(&o.Events, "events", 0, "events of the baseline and batch-heavy runs (default 1000000; 20000 with --quick)")
	fs.IntVar(&o.EmulatorEvents, "emulator-events", 0, "events of the batch-heavy run against the emulator (default events/2)")
	fs.IntVar(&o.RealtimeEvents, "realtime-events", 0, "events of the realtime-heavy runs (default 250000; 20000 with --quick)")
	fs.BoolVar(&o.Quick, "quick", false, "CI smoke mode: small runs, finishes in well under a minute")
	fs.IntVar(&o.Partitions, "partitions", 12, "partitions of every benchmark topic")
	fs.IntVar(&o.Pairs, "pairs", 0, "batch-heavy trivial-sink runs, each between two baseline runs (default 3; 1 with --quick)")
	fs.BoolVar(&o.SkipBaseline, "skip-baseline", false, "skip the baseline forwarder")
	fs.BoolVar(&o.SkipEmulator, "skip-emulator", false, "skip the runs against the Amplitude emulator")
	fs.BoolVar(&o.SkipRealtime, "skip-realtime", false, "skip the realtime-heavy throughput runs")
	fs.BoolVar(&o.SkipLatency, "skip-latency", false, "skip the realtime-lane latency run")
	fs.BoolVar(&o.SkipCost, "skip-cost", false, "skip the cost run (ampstream as a child process)")
	fs.BoolVar(&o.CountEvents, "count-events", false, "let the trivial sink inflate gzip bodies to count events (costs CPU)")
	fs.IntVar(&o.LatencyRate, "latency-rate", 5000, "events/s of the latency run")
	fs.DurationVar(&o.LatencyDuration, "latency-duration", 0, "length of the latency run (default 12s; 3s with --quick)")
	fs.StringVar(&o.Binary, "ampstream", "", "ampstream executable the cost run starts as a child process (make bench builds bin/ampstream); empty: the cost is measured in-process")
	fs.StringVar(&o.Benthos, "benthos", "", "a Benthos executable to run once over the baseline's topic, for comparison (see internal/bench/README.md)")
	out := fs.String("out", "bin/bench.json", "where to write the detailed results (JSON)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the in-process batch-heavy run (trivial sink) to this file")
	// error, not warn: every dead-lettered event is a warning, and the mixes carry 0.2 % invalid input.
	memprofile := fs.String("memprofile", "", "write the allocation profile, taken right after that run, to this file")
	level := fs.String("log-level", "error", "log level of the pipeline (logs go to stderr)")
	brokerProcess := fs.Bool("broker-process", false, "without KAFKA_BROKERS, run kfake in a child process instead of inside the benchmark, and report its CPU per run (see internal/bench/README.md)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("bench: unexpected arguments %q", fs.Args())
	}
	o.Brokers = os.Getenv("KAFKA_BROKERS")
	if o.Brokers == "" && *brokerProcess {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: the broker child needs this executable: %w", err)
		}
		o.BrokerCommand = []string{exe, brokerCommand}
	}
	o.Progress = stderr
	lvl, err := zerolog.ParseLevel(*level)
	if err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	o.Log = zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}).Level(lvl).With().Timestamp().Logger()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer func() { _ = f.Close() }()
		o.CPUProfile = f
	}

	if *memprofile != "" {
		f, err := os.Create(*memprofile)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer func() { _ = f.Close() }()
		o.MemProfile = f
	}

	res, runErr := bench.Run(ctx, o)
	if err := writeJSON(*out, res); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if s := res.Summary; s.BaselineConnEPS > 0 {
		fmt.Fprintf(stderr, "\nagainst the baseline on ampstream's fetch path (baseline_conn, %.0f events/s): ratio_conn=%.2f; CPU per event, baseline/ampstream: cpu_ratio=%.2f\n",
			s.BaselineConnEPS, s.RatioConn, s.CPURatio)
	}
	fmt.Fprintf(stderr, "\ndetails: %s\n", *out)
	if runErr != nil {
		return fmt.Errorf("bench: %w", runErr)
	}
	fmt.Fprintln(stdout, res.Summary.Line())
	return nil
}

func writeJSON(path string, v any) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
