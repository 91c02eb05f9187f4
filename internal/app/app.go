// Package app wires ampstream's data path from a validated config:
// consume → route → deliver → commit, plus the DLQ writer and the admin
// server. cmd/ampstream only parses configuration and calls Run; the
// end-to-end tests and the demo run the very same code.
//
// Lifecycle: Run starts every component, blocks until ctx is cancelled, then
// shuts down in order: the consumer stops fetching, drains (bounded by
// shutdown.drain_timeout), commits and leaves the group; then delivery is cut
// (in-flight requests cancelled), the DLQ writer stops, and the admin server
// closes. Every goroutine started here is waited for.
package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/admin"
	"github.com/ampstream/ampstream/internal/amplitude"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/consume"
	"github.com/ampstream/ampstream/internal/deliver"
	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/grouplag"
	"github.com/ampstream/ampstream/internal/metrics"
	"github.com/ampstream/ampstream/internal/route"
	"github.com/ampstream/ampstream/internal/userrate"
)

// Build identifies the binary.
type Build struct {
	Version string
	Commit  string
}

// App is one running ampstream.
type App struct {
	cfg      config.Config
	log      zerolog.Logger
	reg      *prometheus.Registry
	Metrics  *metrics.Metrics
	client   *amplitude.Client
	deliver  *deliver.Deliverer
	dlq      *dlq.Writer
	Consumer *consume.Consumer
	users    *userrate.Sharer // nil when userrate.enabled is false
	started  time.Time

	build     Build
	adminAddr chan string
	recent    *admin.RecentErrors
	lag       *admin.LagHistory
	joined    atomic.Bool      // the consumer has joined a group generation at least once
	transport *kafka.Transport // the DLQ writer's; kafka-go's Writer.Close leaves it open
	groupLag  *grouplag.Exporter
}

// New builds an App. It does not connect to anything yet.
func New(cfg config.Config, log zerolog.Logger, reg *prometheus.Registry, build Build) (*App, error) {
	dialer, transport, err := KafkaClients(cfg.Kafka)
	if err != nil {
		return nil, err
	}
	recent := admin.NewRecentErrors(20)
	log = log.Hook(recent)
	m := metrics.New(reg)
	m.SetBuildInfo(build.Version, build.Commit)

	client := amplitude.New(amplitude.Options{
		BaseURL:      cfg.Amplitude.BaseURL(),
		APIKey:       cfg.Amplitude.APIKey.Reveal(),
		MinIDLength:  cfg.Amplitude.MinIDLength,
		Timeout:      cfg.Amplitude.Timeout,
		GzipMinBytes: cfg.Amplitude.GzipMinBytes,
		MaxConns:     cfg.Realtime.Concurrency + cfg.Batch.Concurrency,
		Metrics:      m,
	})
	// Every replica of the project hashes a user alike, for userrate.
	userSeed := userrate.Seed(cfg.Amplitude.APIKey.Reveal())
	tracker := route.NewTracker(route.TrackerOptions{
		Window:   cfg.Router.Window,
		HotEPS:   cfg.Router.HotEPS,
		CoolEPS:  cfg.Router.CoolEPS,
		CoolHold: cfg.Router.CoolHold,
		MaxKeys:  cfg.Router.MaxKeys,
		BatchEPS: cfg.Batch.KeyEPSLimit,
		UserSeed: userSeed,
	})
	policy := route.NewPolicy(tracker, route.PolicyOptions{
		UserEPSMargin: cfg.Router.UserEPSMargin,
		BackfillAge:   cfg.Router.BackfillAge,
	})
	lane := func(l config.Lane) deliver.LaneOptions {
		return deliver.LaneOptions{MaxEvents: l.MaxEvents, MaxBytes: l.MaxBytes, Linger: l.Linger, Concurrency: l.Concurrency}
	}
	d := deliver.New(deliver.Options{
		Realtime:          lane(cfg.Realtime),
		Batch:             lane(cfg.Batch.Lane),
		ThrottlePause:     cfg.Amplitude.ThrottlePause,
		RetryInitial:      cfg.Amplitude.RetryInitialBackoff,
		RetryMax:          cfg.Amplitude.RetryMaxBackoff,
		EventsPerSecond:   cfg.Budget.EventsPerSecond,
		RequestsPerSecond: cfg.Budget.RequestsPerSecond,
	}, client, policy, tracker, m, log)

	var users *userrate.Sharer
	if u := cfg.UserRate; u.Enabled {
		users = userrate.New(userrate.Options{
			Brokers:   cfg.Kafka.Brokers,
			Dialer:    dialer,
			Transport: transport,
			Topic:     u.Topic,
			Interval:  u.PublishInterval,
			Floor:     u.FloorEPS,
			HotEPS:    cfg.Router.HotEPS,
			MaxKeys:   u.MaxKeys,
			Seed:      userSeed,
		}, tracker, policy, m, log)
	}

	dw := dlq.New(&kafka.Writer{
		Addr:                   kafka.TCP(cfg.Kafka.Brokers...),
		Topic:                  cfg.DLQ.Topic,
		Transport:              transport,
		Balancer:               &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks:           kafka.RequireAll,
		AllowAutoTopicCreation: true,
		BatchTimeout:           5 * time.Millisecond,
		BatchSize:              500,
	}, m, log)

	start := kafka.FirstOffset
	if cfg.Kafka.StartOffset == config.StartOffsetLatest {
		start = kafka.LastOffset
	}
	c := consume.New(consume.Options{
		Brokers:                    cfg.Kafka.Brokers,
		Topics:                     cfg.Kafka.Topics,
		Group:                      cfg.Kafka.Group,
		GroupInstanceID:            cfg.Kafka.GroupInstanceID,
		Dialer:                     dialer,
		StartOffset:                start,
		SessionTimeout:             cfg.Kafka.SessionTimeout,
		HeartbeatInterval:          cfg.Kafka.HeartbeatInterval,
		RebalanceTimeout:           cfg.Kafka.RebalanceTimeout,
		CommitInterval:             cfg.Kafka.CommitInterval,
		FetchMaxBytes:              cfg.Kafka.FetchMaxBytes,
		FetchMaxWait:               cfg.Kafka.FetchMaxWait,
		ReadCommitted:              cfg.Kafka.IsolationLevel == config.IsolationReadCommitted,
		DrainTimeout:               cfg.Shutdown.DrainTimeout,
		MinIDLength:                cfg.Amplitude.MinIDLength,
		LagThreshold:               cfg.Router.LagThreshold,
		MaxInflightEvents:          cfg.Limits.MaxInflightEvents,
		MaxInflightBytes:           cfg.Limits.MaxInflightBytes,
		PartitionMaxInflightEvents: cfg.Limits.PartitionMaxInflightEvents,
		// This replica's share of the project-wide budget follows its partitions.
		OwnershipChanged: d.SetOwnership,
	}, d, dw, m, log)

	return &App{
		cfg: cfg, log: log, reg: reg, Metrics: m, client: client, deliver: d, dlq: dw, Consumer: c, users: users,
		build: build, adminAddr: make(chan string, 1), recent: recent, transport: transport,
		lag:      admin.NewLagHistory(int(lagWindow / lagSampleEvery)),
		groupLag: newGroupLag(cfg.Kafka, transport, c, m, log),
	}, nil
}

// The status page's lag chart: one sample every 5 s over 10 minutes, 120
// samples of 32 bytes.
const (
	lagSampleEvery = 5 * time.Second
	lagWindow      = 10 * time.Minute
)

// AdminAddr returns the admin server's address once it listens (useful
// with admin.addr ":0").
func (a *App) AdminAddr(ctx context.Context) (string, error) {
	select {
	case addr := <-a.adminAddr:
		a.adminAddr <- addr
		return addr, nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// Run serves until ctx is cancelled, then shuts down cleanly (see the
// package doc). It returns nil after a clean shutdown.
func (a *App) Run(ctx context.Context) error {
	a.started = time.Now()
	a.deliver.Start()
	a.dlq.Start()

	var srv *admin.Server
	if a.cfg.Admin.Addr != "" {
		h := admin.Handler(a.reg, admin.Probes{Live: a.live, Ready: a.ready, Started: a.startup}, admin.StatusPage(a.status))
		s, err := admin.Start(a.cfg.Admin.Addr, h, a.log)
		if err != nil {
			a.deliver.Stop()
			a.dlq.Stop()
			return err
		}
		srv = s
		a.adminAddr <- s.Addr()
		a.log.Info().Str("addr", s.Addr()).Msg("admin server listening: /metrics /healthz /readyz /")
	}

	sampleCtx, stopSampling := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		a.lag.Run(sampleCtx, lagSampleEvery, a.lagSample)
	}()
	lagDone := make(chan struct{})
	go func() { defer close(lagDone); a.groupLag.Run(ctx) }()
	// The user-rate channel runs until the consumer has drained, so the
	// group still sees this replica's users while it sends their events.
	usersCtx, stopUsers := context.WithCancel(context.Background())
	usersDone := make(chan struct{})
	go func() {
		defer close(usersDone)
		if a.users != nil {
			_ = a.users.Run(usersCtx)
		}
	}()

	runErr := a.Consumer.Run(ctx)
	stopSampling()
	<-sampled
	<-lagDone
	stopUsers()
	<-usersDone
	a.deliver.Stop()
	a.dlq.Stop()
	a.transport.CloseIdleConnections()
	a.client.Close()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return runErr
}

// live: the consume loop shows signs of life. It beats on every fetch and
// every commit tick, so an idle topic stays live; Amplitude is irrelevant.
func (a *App) live() error {
	limit := max(10*a.cfg.Kafka.CommitInterval, 30*time.Second)
	if since := time.Since(a.Consumer.LastBeat()); since > limit {
		return fmt.Errorf("consume loop silent for %s", since.Round(time.Second))
	}
	return nil
}

// startup: the consumer has joined a group generation at least once. A
// startup probe on it covers the first join (which waits for the other
// members to rejoin, up to kafka.rebalance_timeout); afterwards readiness
// and liveness take over, so it never fails again.
func (a *App) startup() error {
	if a.joined.Load() {
		return nil
	}
	if a.Consumer.Ready() {
		a.joined.Store(true)
		return nil
	}
	return errors.New("has not joined the consumer group yet")
}

// lagSample sums the lag of the owned partitions for the status page chart.
func (a *App) lagSample() admin.LagSample {
	_ = a.startup() // latch a join that probes would miss between their periods
	s := admin.LagSample{Time: time.Now()}
	for _, p := range a.Consumer.Status() {
		s.Messages += p.Lag
		s.Seconds = max(s.Seconds, p.LagSeconds)
	}
	return s
}

func (a *App) ready() error {
	var errs []error
	if st := a.Consumer.GroupState(); !st.Member {
		errs = append(errs, fmt.Errorf("not a member of the consumer group: %s since %s", st.Reason, st.Since.UTC().Format(time.RFC3339)))
	}
	if err := a.deliver.Healthy(); err != nil {
		errs = append(errs, err)
	}
	if err := a.dlq.Healthy(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// KafkaClients builds the kafka-go dialer and transport (TLS, SASL) of k.
func KafkaClients(k config.Kafka) (*kafka.Dialer, *kafka.Transport, error) {
	tlsCfg, err := k.TLS.ClientConfig()
	if err != nil {
		return nil, nil, fmt.Errorf("kafka TLS: %w", err)
	}
	mech, err := k.SASL.KafkaMechanism()
	if err != nil {
		return nil, nil, fmt.Errorf("kafka SASL: %w", err)
	}
	dialer := &kafka.Dialer{
		ClientID:      k.ClientID,
		Timeout:       10 * time.Second,
		DualStack:     true,
		TLS:           tlsCfg,
		SASLMechanism: mech,
	}
	transport := &kafka.Transport{
		ClientID:    k.ClientID,
		TLS:         tlsCfg,
		SASL:        mech,
		DialTimeout: 10 * time.Second,
	}
	return dialer, transport, nil
}

// status gathers what the status page shows.
func (a *App) status() admin.Status {
	s := admin.Status{
		Version:   a.build.Version,
		Commit:    a.build.Commit,
		Now:       time.Now(),
		Lag:       a.lag.Samples(),
		LagWindow: lagWindow,
		Started:   a.started,
		Ready:     a.ready(),
		Brokers:   strings.Join(a.cfg.Kafka.Brokers, ","),
		Group:     a.cfg.Kafka.Group,
		Topics:    strings.Join(a.cfg.Kafka.Topics, ","),
		Amplitude: a.cfg.Amplitude.BaseURL(),
	}
	for _, p := range a.Consumer.Status() {
		s.Partitions = append(s.Partitions, admin.PartitionRow{
			Topic: p.Topic, Partition: p.Partition, Committed: p.Committed, HighWatermark: p.HighWatermark,
			Lag: p.Lag, LagSeconds: p.LagSeconds, Inflight: p.Inflight,
		})
	}
	gs := a.Consumer.GroupState()
	s.Membership = admin.Membership{
		Member: gs.Member, Reason: gs.Reason, Since: gs.Since, Generation: gs.Generation,
		MemberID: gs.MemberID, InstanceID: gs.InstanceID, Owned: gs.Owned, Total: gs.Total,
	}
	gl := a.GroupLag()
	s.GroupLag = admin.GroupLag{At: gl.At, Err: gl.Err, State: gl.State, Members: gl.Members, Unowned: gl.Unowned}
	for _, p := range gl.Partitions {
		s.GroupLag.Partitions = append(s.GroupLag.Partitions, admin.GroupPartitionRow{
			Topic: p.Topic, Partition: p.Partition, Committed: p.Committed, End: p.End, Lag: p.Lag,
			LagSeconds: p.LagSeconds, LagSecondsKnown: p.LagSecondsKnown, Owned: p.Owned, Stale: p.Stale,
		})
	}
	s.InflightEvents, s.InflightBytes = a.Consumer.Inflight()
	s.Counters = metrics.Snapshot(a.reg)
	for i, p := range s.Partitions {
		// The commit time is the consumer's gauge, labels in name order.
		key := fmt.Sprintf("ampstream_kafka_last_commit_timestamp_seconds{partition=%d,topic=%s}", p.Partition, p.Topic)
		if ts := s.Counters[key]; ts > 0 {
			s.Partitions[i].LastCommit = time.Unix(0, int64(ts*1e9))
		}
	}
	s.Recent = a.recent.Entries()
	return s
}
