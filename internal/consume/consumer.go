// Package consume reads Amplitude events from Kafka as a member of a
// consumer group (internal/group) and commits offsets only after delivery.
//
// Data path: one owned goroutine per owned partition fetches in offset
// order, validates each event, dead-letters the invalid ones and submits the
// rest to delivery. Each partition tracks its offsets until they are
// resolved (accepted by Amplitude, or acknowledged by the DLQ) and commits
// the contiguous watermark: an offset is committed only when it and every
// earlier offset of its partition were resolved. Commits go through the
// group member with its current generation, and only for partitions this
// member owns.
//
// Concurrency and lifecycle: Run owns the group member, the commit loop and
// every partition goroutine. Partitions belong to the Consumer across
// generations: a rebalance (cooperative) touches only the partitions that
// move. A revoked partition stops fetching, waits up to DrainTimeout for its
// in-flight events, commits its watermark and is released; partitions
// revoked together drain in parallel, and the member rejoins only when all
// are released, so their next owner starts from that commit. A lost
// partition (the group already gave it away) stops without committing.
// When Run's context is cancelled (SIGTERM) every partition is revoked that
// way, then the member leaves the group (a static member does not). Events
// not resolved in time are redelivered to the next owner, and Amplitude
// deduplicates them by insert_id. See DESIGN.md.
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
	"github.com/ampstream/ampstream/internal/group"
	"github.com/ampstream/ampstream/internal/metrics"
)

// Options configure a Consumer.
type Options struct {
	Brokers []string
	Topics  []string
	Group   string
	// GroupInstanceID makes this replica a static member (KIP-345);
	// empty: dynamic membership.
	GroupInstanceID   string
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

	// OwnershipChanged, if set, is called whenever the set of partitions
	// this member owns changes: owned now, and the partitions of the
	// consumed topics (0 until known). It runs on the group member's
	// goroutine and must not block.
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

	member atomic.Pointer[group.Member] // set by Run
	beat   atomic.Int64                 // unix nanos of the last sign of life of the consume loop
	// partWG counts the partition goroutines.
	partWG sync.WaitGroup
	// owned and perTopic are the partitions handed over by the member;
	// only the member's callbacks (one goroutine) touch them.
	owned    map[partKey]*partition
	perTopic map[string]int
	// commitMu serialises reading a watermark and committing it, so a
	// periodic commit computed before a partition's final commit cannot land
	// after it and move the committed offset back (redelivery, not loss, but
	// needless). Lock order: commitMu, then statusMu, then partition.mu.
	// parts holds the partitions that fetch or drain, until released.
	commitMu sync.Mutex
	statusMu sync.Mutex
	parts    map[partKey]*partition
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
		owned:  map[partKey]*partition{},

		perTopic: map[string]int{},
	}
	c.beat.Store(time.Now().UnixNano())
	return c
}

// Ready reports whether the consumer is a member of the group.
func (c *Consumer) Ready() bool { return c.GroupState().Member }

// GroupState is the group member's state (group.State); before Run, not a
// member, reason "not started".
func (c *Consumer) GroupState() group.State {
	if m := c.member.Load(); m != nil {
		return m.State()
	}
	return group.State{Reason: "not started", Generation: -1}
}

// LastBeat is the last time the consume loop showed progress (a fetch, a
// commit tick, or a group state change). It never depends on Amplitude.
func (c *Consumer) LastBeat() time.Time { return time.Unix(0, c.beat.Load()) }

func (c *Consumer) heartbeat() { c.beat.Store(time.Now().UnixNano()) }

// Run joins the group and consumes until ctx is cancelled, then drains,
// commits and leaves the group. It returns nil after a clean shutdown.
func (c *Consumer) Run(ctx context.Context) error {
	tr := &kafka.Transport{DialTimeout: 10 * time.Second}
	if d := c.opts.Dialer; d != nil {
		tr.ClientID, tr.TLS, tr.SASL = d.ClientID, d.TLS, d.SASLMechanism
		if d.Timeout > 0 {
			tr.DialTimeout = d.Timeout
		}
	}
	m := group.New(group.Config{
		Brokers:           c.opts.Brokers,
		Transport:         tr,
		Group:             c.opts.Group,
		Topics:            c.opts.Topics,
		InstanceID:        c.opts.GroupInstanceID,
		SessionTimeout:    c.opts.SessionTimeout,
		HeartbeatInterval: c.opts.HeartbeatInterval,
		RebalanceTimeout:  c.opts.RebalanceTimeout,
		Log:               c.log,
		Assigned:          c.assigned,
		Revoked:           func(tps []group.TopicPartition) { c.release(tps, false) },
		Lost:              func(tps []group.TopicPartition) { c.release(tps, true) },
	})
	c.member.Store(m)

	commitCtx, stopCommits := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.commitLoop(commitCtx)
	}()
	// On cancellation the member revokes every partition (each drains and
	// commits) before it leaves; the commit loop runs until then.
	err := m.Run(ctx)
	stopCommits()
	wg.Wait()
	c.partWG.Wait()
	if err != nil {
		return fmt.Errorf("consumer group %s: %w", c.opts.Group, err)
	}
	c.log.Info().Msg("consumer stopped")
	return nil
}

// assigned starts a goroutine for each partition added to this member.
func (c *Consumer) assigned(added []group.Assignment) {
	c.heartbeat()
	c.m.Rebalances.WithLabelValues("assigned").Inc()
	for _, a := range added {
		p := c.newPartition(a.Topic, a.Partition, a.Offset)
		c.owned[partKey{a.Topic, a.Partition}] = p
		c.perTopic[a.Topic]++
		c.partWG.Add(1)
		go func() {
			defer c.partWG.Done()
			c.runPartition(p, a.Offset)
		}()
	}
	c.ownershipChanged()
}

// release stops the partitions and waits until each is released: revoked
// ones drain and commit first, in parallel; lost ones do not commit.
func (c *Consumer) release(tps []group.TopicPartition, lost bool) {
	c.heartbeat()
	c.m.Rebalances.WithLabelValues("revoked").Inc()
	deadline := time.Now().Add(c.opts.DrainTimeout)
	var ps []*partition
	for _, tp := range tps {
		k := partKey{tp.Topic, tp.Partition}
		p := c.owned[k]
		if p == nil {
			continue
		}
		delete(c.owned, k)
		c.perTopic[tp.Topic]--
		p.stop(lost, deadline)
		ps = append(ps, p)
	}
	for _, p := range ps {
		<-p.done
	}
	c.ownershipChanged()
	c.heartbeat()
}

func (c *Consumer) ownershipChanged() {
	for topic, n := range c.perTopic {
		c.m.AssignedPartitions.WithLabelValues(topic).Set(float64(n))
	}
	if f := c.opts.OwnershipChanged; f != nil {
		total := 0
		if m := c.member.Load(); m != nil {
			total = m.State().Total
		}
		f(len(c.owned), total)
	}
}

// commitLoop commits every owned partition's watermark that moved, in one
// request per tick.
func (c *Consumer) commitLoop(ctx context.Context) {
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
		c.commitOnce(ctx)
	}
}

// periodicCommitTimeout bounds one tick's commit. A tick that fails (the
// coordinator is moving) is not lost: the next tick commits the watermark,
// which only grows. Bounding it keeps commitMu free for the final commits
// of revoked partitions, which retry for longer.
const periodicCommitTimeout = 5 * time.Second

// commitOnce commits every owned partition's watermark that moved, in one
// request.
func (c *Consumer) commitOnce(ctx context.Context) {
	m := c.member.Load()
	c.commitMu.Lock()
	defer c.commitMu.Unlock()
	offsets := map[group.TopicPartition]int64{}
	var moved []*partition
	c.statusMu.Lock()
	for _, p := range c.parts {
		if off, ok := p.toCommit(); ok {
			offsets[group.TopicPartition{Topic: p.topic, Partition: p.id}] = off
			moved = append(moved, p)
		}
		p.updateLag()
	}
	c.statusMu.Unlock()
	if len(moved) == 0 || m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, periodicCommitTimeout)
	defer cancel()
	if err := m.Commit(ctx, offsets); err != nil {
		c.m.Commits.WithLabelValues("error").Inc()
		if !errors.Is(ctx.Err(), context.Canceled) {
			c.log.Warn().Err(err).Msg("offset commit failed; retrying next tick")
		}
		return
	}
	c.m.Commits.WithLabelValues("success").Inc()
	for _, p := range moved {
		p.committedOK(offsets[group.TopicPartition{Topic: p.topic, Partition: p.id}])
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
