// Package consume reads Amplitude events from Kafka with kafka-go's
// ConsumerGroup/Generation API and commits offsets only after delivery.
//
// Data path: one owned goroutine per assigned partition fetches in offset
// order, validates each event, dead-letters the invalid ones and submits the
// rest to delivery. Each partition tracks its offsets until they are
// resolved (accepted by Amplitude, or acknowledged by the DLQ) and commits
// the contiguous watermark: an offset is committed only when it and every
// earlier offset of its partition were resolved. Commits go through the
// generation that fetched the events, so a revoked generation never commits.
//
// Concurrency and lifecycle: Run owns the group and every goroutine it
// starts. When a generation ends (rebalance) or Run's context is cancelled
// (SIGTERM), each partition stops fetching, waits up to DrainTimeout for its
// in-flight events, commits its watermark and returns; then kafka-go leaves
// the group. Events not resolved by then are redelivered to the next owner,
// and Amplitude deduplicates them by insert_id. See DESIGN.md for the
// kafka-go behaviour this relies on.
package consume

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/deliver"
	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/metrics"
)

// Options configure a Consumer.
type Options struct {
	Brokers           []string
	Topics            []string
	Group             string
	Dialer            *kafka.Dialer
	StartOffset       int64 // kafka.FirstOffset or kafka.LastOffset
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
	CommitInterval    time.Duration
	FetchMaxBytes     int
	FetchMaxWait      time.Duration
	ReadCommitted     bool // hide aborted transactions' records (fetch.Config)
	DrainTimeout      time.Duration
	MinIDLength       int
	LagThreshold      time.Duration // events older than this (Kafka time) are catch-up traffic; 0 = off

	MaxInflightEvents          int
	MaxInflightBytes           int
	PartitionMaxInflightEvents int

	// OwnershipChanged, when set, is called whenever the set of owned
	// partitions changes: owned is how many this member owns now, total
	// how many the consumed topics have.
	OwnershipChanged func(owned, total int)
}

// Submitter is the delivery side (deliver.Deliverer).
type Submitter interface {
	// SubmitBatch hands items over in their order; on error it returns
	// those it never handed over.
	SubmitBatch(ctx context.Context, items []*deliver.Item, at time.Time) (unhanded []*deliver.Item, err error)
}

// DeadLetterer is the DLQ side (dlq.Writer).
type DeadLetterer interface {
	Write(r dlq.Record)
}

// Consumer is a consumer-group member.
type Consumer struct {
	opts   Options
	deliv  Submitter
	dlq    DeadLetterer
	m      *metrics.Metrics
	log    zerolog.Logger
	budget *budget

	joined atomic.Bool
	beat   atomic.Int64 // unix nanos of the last sign of life of the consume loop
	// commitMu serialises reading a watermark and committing it, so a
	// periodic commit computed before a partition's final commit cannot land
	// after it and move the committed offset back (redelivery, not loss, but
	// needless). Lock order: commitMu, then statusMu, then partition.mu.
	commitMu sync.Mutex
	statusMu sync.Mutex
	parts    map[partKey]*partition
	// lastTotal is the last count of the topics' partitions (totalPartitions).
	lastTotal int
}

type partKey struct {
	topic     string
	partition int
}

// New returns a Consumer.
func New(opts Options, deliv Submitter, dl DeadLetterer, m *metrics.Metrics, log zerolog.Logger) *Consumer {
	if opts.CommitInterval <= 0 {
		opts.CommitInterval = time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 20 * time.Second
	}
	if opts.MaxInflightEvents <= 0 {
		opts.MaxInflightEvents = 200_000
	}
	if opts.MaxInflightBytes <= 0 {
		opts.MaxInflightBytes = 256 << 20
	}
	if opts.PartitionMaxInflightEvents <= 0 {
		opts.PartitionMaxInflightEvents = 50_000
	}
	if opts.StartOffset == 0 {
		opts.StartOffset = kafka.FirstOffset
	}
	c := &Consumer{
		opts:   opts,
		deliv:  deliv,
		dlq:    dl,
		m:      m,
		log:    log.With().Str("component", "consume").Logger(),
		budget: newBudget(opts.MaxInflightEvents, opts.MaxInflightBytes),
		parts:  map[partKey]*partition{},
	}
	c.beat.Store(time.Now().UnixNano())
	return c
}

// Ready reports whether the consumer is a member of a live generation.
func (c *Consumer) Ready() bool { return c.joined.Load() }

// LastBeat is the last time the consume loop showed progress (a fetch, a
// commit tick, or a group state change). It never depends on Amplitude.
func (c *Consumer) LastBeat() time.Time { return time.Unix(0, c.beat.Load()) }

func (c *Consumer) heartbeat() { c.beat.Store(time.Now().UnixNano()) }

// Run joins the group and consumes until ctx is cancelled, then drains,
// commits and leaves the group. It returns nil after a clean shutdown.
func (c *Consumer) Run(ctx context.Context) error {
	kl := c.log.With().Str("component", "kafka-go").Logger()
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID:                c.opts.Group,
		Brokers:           c.opts.Brokers,
		Dialer:            c.opts.Dialer,
		Topics:            c.opts.Topics,
		HeartbeatInterval: c.opts.HeartbeatInterval,
		SessionTimeout:    c.opts.SessionTimeout,
		RebalanceTimeout:  c.opts.RebalanceTimeout,
		StartOffset:       c.opts.StartOffset,
		// kafka-go logs group chatter at Printf level: debug for us, errors at warn.
		Logger:      kafka.LoggerFunc(func(msg string, args ...any) { kl.Debug().Msgf(msg, args...) }),
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) { kl.Warn().Msgf(msg, args...) }),
	})
	if err != nil {
		return fmt.Errorf("create consumer group %s: %w", c.opts.Group, err)
	}
	c.log.Info().Str("group", c.opts.Group).Strs("topics", c.opts.Topics).Msg("joining consumer group")
	for {
		gen, err := cg.Next(ctx)
		c.heartbeat()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, kafka.ErrGroupClosed) {
				break
			}
			c.joined.Store(false)
			c.log.Warn().Err(err).Msg("consumer group join failed; kafka-go retries")
			continue
		}
		c.startGeneration(gen)
	}
	c.joined.Store(false)
	c.log.Info().Msg("stopping: draining partitions, committing, leaving the group")
	// Close ends the generation (each partition drains and commits before
	// its function returns; kafka-go waits for them), then leaves the group.
	if err := cg.Close(); err != nil {
		return fmt.Errorf("leave consumer group: %w", err)
	}
	c.log.Info().Msg("left the consumer group")
	return nil
}

func (c *Consumer) startGeneration(gen *kafka.Generation) {
	c.m.Rebalances.WithLabelValues("assigned").Inc()
	n := 0
	for topic, assigns := range gen.Assignments {
		for _, a := range assigns {
			n++
			topic, a := topic, a
			gen.Start(func(ctx context.Context) { c.runPartition(ctx, gen, topic, a.ID, a.Offset) })
		}
		c.m.AssignedPartitions.WithLabelValues(topic).Set(float64(len(assigns)))
	}
	c.log.Info().Int32("generation", gen.ID).Str("member", gen.MemberID).Int("partitions", n).Msg("generation joined")
	total := c.totalPartitions()
	if c.opts.OwnershipChanged != nil && total > 0 {
		c.opts.OwnershipChanged(n, total)
	}
	c.joined.Store(true)
	gen.Start(func(ctx context.Context) { c.commitLoop(ctx, gen) })
	gen.Start(func(ctx context.Context) {
		<-ctx.Done()
		c.m.Rebalances.WithLabelValues("revoked").Inc()
		if c.opts.OwnershipChanged != nil && total > 0 {
			c.opts.OwnershipChanged(0, total)
		}
		for topic := range gen.Assignments {
			c.m.AssignedPartitions.WithLabelValues(topic).Set(0)
		}
	})
}

// totalPartitions counts the partitions of the consumed topics: the last
// count when the metadata cannot be read, 0 when there is none. Called from
// Run's goroutine only.
func (c *Consumer) totalPartitions() int {
	if c.opts.OwnershipChanged == nil {
		return 0
	}
	d := c.opts.Dialer
	if d == nil {
		d = kafka.DefaultDialer
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	for _, b := range c.opts.Brokers {
		n := 0
		for _, topic := range c.opts.Topics {
			var ps []kafka.Partition
			if ps, err = d.LookupPartitions(ctx, "tcp", b, topic); err != nil {
				break
			}
			n += len(ps)
		}
		if err == nil {
			c.lastTotal = n
			return n
		}
	}
	c.log.Warn().Err(err).Int("partitions", c.lastTotal).Msg("cannot count the consumed topics' partitions; using the last count")
	return c.lastTotal
}

// commitLoop commits every partition's watermark of gen that moved, in one
// request per tick.
func (c *Consumer) commitLoop(ctx context.Context, gen *kafka.Generation) {
	t := time.NewTicker(c.opts.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return // each partition commits its own final watermark
		case <-t.C:
		}
		c.heartbeat()
		ev, by := c.budget.usage()
		c.m.InflightEvents.Set(float64(ev))
		c.m.InflightBytes.Set(float64(by))
		c.commitOnce(ctx, gen)
	}
}

// commitOnce commits every partition's watermark of gen that moved, in one
// request.
func (c *Consumer) commitOnce(ctx context.Context, gen *kafka.Generation) {
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	offsets := map[string]map[int]int64{}
	var moved []*partition
	c.statusMu.Lock()
	for _, p := range c.parts {
		if p.gen != gen {
			continue
		}
		if off, ok := p.toCommit(); ok {
			if offsets[p.topic] == nil {
				offsets[p.topic] = map[int]int64{}
			}
			offsets[p.topic][p.id] = off
			moved = append(moved, p)
		}
		p.updateLag()
	}
	c.statusMu.Unlock()
	if len(moved) == 0 {
		return
	}
	if err := gen.CommitOffsets(offsets); err != nil {
		c.m.Commits.WithLabelValues("error").Inc()
		if ctx.Err() == nil {
			c.log.Warn().Err(err).Msg("offset commit failed; retrying next tick")
		}
		return
	}
	c.m.Commits.WithLabelValues("success").Inc()
	for _, p := range moved {
		p.committedOK(offsets[p.topic][p.id])
	}
}

// PartitionStatus is a snapshot for the status page.
type PartitionStatus struct {
	Topic         string
	Partition     int
	Committed     int64
	HighWatermark int64
	Lag           int64
	LagSeconds    float64
	Inflight      int
}

// Status returns a snapshot of owned partitions.
func (c *Consumer) Status() []PartitionStatus {
	c.statusMu.Lock()
	defer c.statusMu.Unlock()
	out := make([]PartitionStatus, 0, len(c.parts))
	for _, p := range c.parts {
		out = append(out, p.status())
	}
	return out
}

// Inflight returns the events and bytes fetched but not yet resolved.
func (c *Consumer) Inflight() (events, bytes int) { return c.budget.usage() }
