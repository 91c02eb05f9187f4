// Package sandbox assembles ampstream with everything it talks to on one
// machine: a Kafka broker (in-process kfake unless brokers are given), the
// Amplitude emulator on 127.0.0.1, and the App configured for both. The
// demo, the benchmark and the end-to-end tests all run ampstream this way;
// each chooses its traffic and its checks, none wires the pieces itself.
//
// Concurrency: each Start function returns a value that owns what it
// started (a broker, a server, the App's Run goroutine); its Close or Stop
// ends them and waits for them. Nothing here is shared between values.
package sandbox

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/emulator"
)

// Kafka is the broker a sandbox runs against.
type Kafka struct {
	Brokers []string
	fake    *kfake.Cluster
}

// StartKafka uses brokers when there are any (KAFKA_BROKERS, a broker the
// caller runs), else starts a single-broker in-process kfake cluster with
// opts (kfake.SeedTopics, ...).
func StartKafka(brokers []string, opts ...kfake.Opt) (*Kafka, error) {
	if len(brokers) > 0 {
		return &Kafka{Brokers: brokers}, nil
	}
	f, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("start in-process kafka: %w", err)
	}
	return &Kafka{Brokers: f.ListenAddrs(), fake: f}, nil
}

// InProcess reports whether the broker is the in-process kfake cluster.
func (k *Kafka) InProcess() bool { return k.fake != nil }

// Close stops the in-process broker; brokers given to StartKafka are left
// alone.
func (k *Kafka) Close() {
	if k.fake != nil {
		k.fake.Close()
	}
}

// Emulator is the Amplitude API emulator served on a free 127.0.0.1 port.
type Emulator struct {
	*emulator.Emulator
	srv *emulator.Server
}

// StartEmulator serves an emulator with cfg's limits and faults.
func StartEmulator(cfg emulator.Config, log zerolog.Logger) (*Emulator, error) {
	e := emulator.New(cfg, log)
	srv, err := emulator.Start(context.Background(), "127.0.0.1:0", e)
	if err != nil {
		return nil, fmt.Errorf("start amplitude emulator: %w", err)
	}
	return &Emulator{Emulator: e, srv: srv}, nil
}

// URL is the emulator's base URL, what amplitude.url points at.
func (e *Emulator) URL() string { return e.srv.URL() }

// Close stops serving and waits for the server's goroutines. The emulator's
// store stays readable.
func (e *Emulator) Close() error { return e.srv.Close() }

// Config is the configuration a user would write to run ampstream from
// topic on brokers to amplitudeURL, dead-lettering to dlq: the defaults,
// with every feature on, and these changes:
//   - a group join in seconds instead of kafka-go's half a minute
//     (heartbeat 1 s, session 10 s, rebalance 15 s): a sandbox starts a
//     fresh group every run;
//   - the admin endpoint on a free loopback port;
//   - a 10 s drain on shutdown.
func Config(brokers []string, topic, group, dlq, amplitudeURL string) config.Config {
	c := config.Default()
	c.Kafka.Brokers = brokers
	c.Kafka.Topics = []string{topic}
	c.Kafka.Group = group
	c.Kafka.HeartbeatInterval = time.Second
	c.Kafka.SessionTimeout = 10 * time.Second
	c.Kafka.RebalanceTimeout = 15 * time.Second
	c.Amplitude.APIKey = "sandbox-api-key-0123456789abcdef"
	c.Amplitude.URL = amplitudeURL
	c.DLQ.Topic = dlq
	c.Admin.Addr = "127.0.0.1:0"
	c.Shutdown.DrainTimeout = 10 * time.Second
	return c
}

// App is ampstream running in this process: app.Run in a goroutine that
// Stop ends.
type App struct {
	*app.App
	Reg  *prometheus.Registry // the App's metrics, and nothing else
	stop context.CancelFunc
	done chan struct{}
	err  error // Run's result, set before done is closed
}

// StartApp validates cfg, builds the App with a registry of its own and
// runs it until Stop.
func StartApp(cfg config.Config, log zerolog.Logger, build app.Build) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	reg := prometheus.NewRegistry()
	a, err := app.New(cfg, log, reg, build)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	r := &App{App: a, Reg: reg, stop: stop, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = a.Run(ctx)
	}()
	return r, nil
}

// Stop takes the SIGTERM path (drain, commit, leave the group) and returns
// Run's result, or an error if Run has not returned within timeout.
func (a *App) Stop(timeout time.Duration) error {
	a.stop()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-a.done:
		return a.err
	case <-t.C:
		return fmt.Errorf("ampstream did not stop within %s", timeout)
	}
}

// Done is closed once Run has returned, on its own or after Stop.
func (a *App) Done() <-chan struct{} { return a.done }

// Err is Run's result, once Done is closed.
func (a *App) Err() error {
	select {
	case <-a.done:
		return a.err
	default:
		return nil
	}
}
