// Package grouplag exports the consumer group's lag for every partition of
// the consumed topics, whether or not any member owns it, and who owns what.
//
// The owned-partition series (ampstream_kafka_consumer_lag and friends) come
// from the member that fetches a partition and disappear when it is revoked.
// When delivery stops for the whole group (a rebalance that does not
// complete, a coordinator failover, every replica crash-looping) they all
// vanish, and max(lag) reads nothing exactly when it matters. This package
// reads the group from the brokers instead, like kminion or Burrow, every
// Options.Interval:
//
//   - Metadata: the partitions of the consumed topics;
//   - ListOffsets (latest, with the configured isolation level, so the last
//     stable offset under read_committed) and ListOffsets (earliest);
//   - OffsetFetch: the group's committed offsets;
//   - DescribeGroups: the group's state and members' assignments;
//   - for partitions with lag only, one small Fetch at the group's position
//     to read its record's timestamp (lag in seconds, not interpolated).
//
// Every replica exports: the series survive any subset of replicas being
// down (one live replica is enough), and the dashboards and alerts already
// take max by (topic, partition), so N identical copies cost cardinality
// (N × partitions series) but no correctness. The cost on the brokers is
// five small requests per replica per interval, plus the bounded age reads.
//
// Position: the committed offset; a partition without one starts where
// kafka.start_offset says (earliest: the log start offset, latest: the end);
// a committed offset below the log start offset (retention deleted the
// records) counts from the log start, since the deleted records can no longer
// be delivered. Lag is end offset minus position, clamped at 0.
//
// Lag in seconds is now minus the Kafka timestamp (CreateTime or
// LogAppendTime, as the topic says) of the first record at or after the
// position. It is read only for partitions with lag > 0 and only when the
// position moved since the last read (a stalled partition costs no reads: its
// age keeps growing from the cached timestamp), with a small MaxBytes, at most
// AgeConcurrency reads at once and within AgeBudget per refresh; a partition
// whose age cannot be read keeps its last value (and has none until the first
// read succeeds). Clock skew between producers and this host can make it
// negative; it is clamped at 0.
//
// Ownership: a partition is owned when it is in a member's assignment in a
// Stable group. In PreparingRebalance and CompletingRebalance every member of
// kafka-go's eager protocol has stopped consuming (the broker also reports no
// assignments outside Stable), and Empty and Dead groups have no members, so
// all partitions count as unowned. When the group cannot be described the
// state reads Unknown and the unowned count keeps its last value: this
// replica does not know, and guessing either way would lie. A member that
// crashed without leaving still owns its partitions in a Stable group until
// its session times out; the stalled alert (committed offset not moving while
// lag grows) covers that case.
//
// Series are never deleted while the process runs: partitions cannot be
// removed from a topic, and a topic that disappears, or a partition whose
// leader does not answer ListOffsets (a broker down, a leader moving) or
// whose committed offset the coordinator answers with an error, keeps
// its last values while the refreshes count as errors
// (ampstream_kafka_group_lag_refreshes_total), the error names it, and
// ampstream_kafka_group_lag_last_refresh_timestamp_seconds stops moving; the
// other partitions are still read. Such a partition stays in the Snapshot
// with its last values, marked Stale.
//
// Concurrency: Run owns the refresh loop and the age reads it starts, and
// returns once they have finished; Snapshot is safe for concurrent use.
package grouplag

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/metrics"
)

// Defaults of Options.
const (
	// DefaultInterval: lag seconds resolve to about this; 5 s is a third of
	// the usual 15 s scrape interval.
	DefaultInterval = 5 * time.Second
	// DefaultAgeMaxBytes: one record's timestamp is needed. The broker
	// still returns the first whole record batch when it is larger (KIP-74).
	DefaultAgeMaxBytes = 16 << 10
	// DefaultAgeConcurrency bounds the age reads in flight per replica.
	DefaultAgeConcurrency = 4
)

// Options configure an Exporter.
type Options struct {
	Client *kafka.Client // Addr and Transport (TLS, SASL) of the app
	Group  string
	Topics []string
	// StartEarliest: where a partition without a committed offset starts
	// (kafka.start_offset earliest; false means latest).
	StartEarliest bool
	ReadCommitted bool // end offset = last stable offset

	Interval       time.Duration // 0 = DefaultInterval
	AgeMaxBytes    int           // 0 = DefaultAgeMaxBytes
	AgeConcurrency int           // 0 = DefaultAgeConcurrency
	AgeBudget      time.Duration // time for all age reads of one refresh; 0 = Interval/2

	// LastOwned returns when this replica last owned at least one partition
	// (zero: never). Nil: the series stays 0.
	LastOwned func() time.Time
	// Generation returns the generation this replica is a member of, -1
	// when none. Nil: ampstream_kafka_group_generation is not exported.
	Generation func() int32

	Now func() time.Time // nil = time.Now
}

// Partition is one partition's lag as last read.
type Partition struct {
	Topic     string
	Partition int
	Committed int64 // -1: the group has committed nothing
	End       int64
	Lag       int64
	// LagSeconds is valid when LagSecondsKnown.
	LagSeconds      float64
	LagSecondsKnown bool
	Owned           bool
	// Stale: the partition's offsets could not be read in the last refresh
	// (its leader did not answer ListOffsets, or the coordinator answered
	// its committed offset with an error); the numbers are from the last
	// refresh that read them.
	Stale bool
}

// Snapshot is the group as last read, for the status page.
type Snapshot struct {
	At         time.Time // last successful refresh; zero before the first
	Err        error     // the last refresh's error, nil when it succeeded
	State      string
	Members    int
	Unowned    int
	Partitions []Partition // sorted by topic, partition
}

// Exporter reads the group's lag and ownership and sets metrics.Group.
type Exporter struct {
	opts Options
	m    metrics.Group
	log  zerolog.Logger

	// Refresh state, touched only by the goroutine calling Refresh.
	ages        map[tp]age
	cursor      int    // rotates which partitions get their age read first
	lastErr     string // for logging transitions only
	lastDescErr string
	lastState   string
	lastNoOwn   int
	noOwnSince  time.Time

	mu   sync.Mutex
	snap Snapshot
}

type tp struct {
	topic     string
	partition int
}

// age is the timestamp of the record at a position.
type age struct {
	position int64
	ts       time.Time
}

// New returns an Exporter; Run starts it.
func New(opts Options, m *metrics.Metrics, log zerolog.Logger) *Exporter {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.AgeMaxBytes <= 0 {
		opts.AgeMaxBytes = DefaultAgeMaxBytes
	}
	if opts.AgeConcurrency <= 0 {
		opts.AgeConcurrency = DefaultAgeConcurrency
	}
	if opts.AgeBudget <= 0 {
		opts.AgeBudget = opts.Interval / 2
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Exporter{
		opts: opts,
		m:    m.Group,
		log:  log.With().Str("component", "grouplag").Logger(),
		ages: map[tp]age{},
		snap: Snapshot{State: metrics.GroupStateUnknown},
	}
}

// Run refreshes every Interval until ctx is cancelled.
func (e *Exporter) Run(ctx context.Context) {
	t := time.NewTicker(e.opts.Interval)
	defer t.Stop()
	for {
		// Each refresh gets one interval, so a hung broker delays the next
		// one but never stacks them up.
		rctx, cancel := context.WithTimeout(ctx, e.opts.Interval)
		_ = e.Refresh(rctx)
		cancel()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Snapshot returns the group as last read.
func (e *Exporter) Snapshot() Snapshot {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.snap
	s.Partitions = slices.Clone(s.Partitions)
	return s
}

// Refresh reads the group once and updates the metrics and the snapshot. Not
// safe for concurrent calls (Run makes them one at a time).
func (e *Exporter) Refresh(ctx context.Context) error {
	if e.opts.LastOwned != nil {
		if t := e.opts.LastOwned(); !t.IsZero() {
			e.m.LastOwnedTS.Set(float64(t.UnixNano()) / 1e9)
		}
	}
	if e.opts.Generation != nil {
		e.m.Generation.WithLabelValues().Set(float64(e.opts.Generation()))
	}
	err := e.refresh(ctx)
	if err != nil {
		e.m.Refreshes.WithLabelValues("error").Inc()
		if msg := err.Error(); msg != e.lastErr && ctx.Err() == nil {
			e.log.Warn().Err(err).Str("group", e.opts.Group).Msg("cannot read the consumer group's lag; the ampstream_kafka_group_* series it could not read keep their last values")
			e.lastErr = msg
		}
		e.mu.Lock()
		e.snap.Err = err
		e.mu.Unlock()
		return err
	}
	e.m.Refreshes.WithLabelValues("success").Inc()
	if e.lastErr != "" {
		e.log.Info().Str("group", e.opts.Group).Msg("reading the consumer group's lag again")
		e.lastErr = ""
	}
	return nil
}

// read is one refresh's view of a partition.
type read struct {
	tp
	start, end, committed int64
	position, lag         int64
}

func (e *Exporter) refresh(ctx context.Context) error {
	// A topic that cannot be described (deleted, not authorised) fails the
	// refresh but not the other topics' series; its own keep their last
	// values.
	parts, topicErr := e.partitions(ctx)
	if len(parts) == 0 {
		return topicErr
	}
	byTopic := map[string][]int{}
	for _, p := range parts {
		byTopic[p.topic] = append(byTopic[p.topic], p.partition)
	}

	// One ListOffsets per timestamp: a broker refuses a request that names
	// a partition twice.
	iso := kafka.ReadUncommitted
	if e.opts.ReadCommitted {
		iso = kafka.ReadCommitted
	}
	// A partition whose leader refuses ListOffsets (leader moving, broker
	// down) fails the refresh like an undescribable topic: its series keep
	// their last values and the last-refresh timestamp stops moving, so the
	// stale alert fires if it lasts; the other partitions are still read.
	ends, endErr := e.listOffsets(ctx, byTopic, kafka.LastOffset, iso)
	if ends == nil {
		return endErr
	}
	starts, startErr := e.listOffsets(ctx, byTopic, kafka.FirstOffset, iso)
	if starts == nil {
		return startErr
	}
	topicErr = errors.Join(topicErr, endErr, startErr)
	committed, unknown, err := e.committed(ctx, byTopic)
	if committed == nil {
		return err
	}
	topicErr = errors.Join(topicErr, err)
	rawState, members, owned, descErr := e.describe(ctx)
	state := rawState
	if !slices.Contains(metrics.GroupStates(), state) {
		state = metrics.GroupStateUnknown
	}

	now := e.opts.Now()
	reads := make([]read, 0, len(parts))
	var stale []tp
	for _, p := range parts {
		end, okEnd := ends[p]
		start, okStart := starts[p]
		if !okEnd || !okStart || unknown[p] {
			stale = append(stale, p)
			continue
		}
		r := read{tp: p, start: start, end: end, committed: -1}
		if c, ok := committed[p]; ok {
			r.committed = c
		}
		r.position = r.committed
		switch {
		case r.position < 0 && e.opts.StartEarliest:
			r.position = start
		case r.position < 0:
			r.position = end
		case r.position < start:
			r.position = start
		}
		r.lag = max(0, end-r.position)
		reads = append(reads, r)
	}
	e.readAges(ctx, reads)

	snap := Snapshot{At: now, State: rawState, Members: members}
	unowned := map[string]int{}
	for t := range byTopic {
		unowned[t] = 0
	}
	for _, p := range parts {
		if !owned[p] {
			unowned[p.topic]++
		}
	}
	for _, p := range stale {
		if row, ok := e.lastRow(p); ok {
			row.Owned, row.Stale = owned[p], true
			snap.Partitions = append(snap.Partitions, row)
		}
	}
	for _, r := range reads {
		l := []string{r.topic, strconv.Itoa(r.partition)}
		e.m.CommittedOffset.WithLabelValues(l...).Set(float64(r.committed))
		e.m.EndOffset.WithLabelValues(l...).Set(float64(r.end))
		e.m.Lag.WithLabelValues(l...).Set(float64(r.lag))
		row := Partition{Topic: r.topic, Partition: r.partition, Committed: r.committed, End: r.end, Lag: r.lag, Owned: owned[r.tp]}
		switch a, ok := e.ages[r.tp]; {
		case r.lag == 0:
			row.LagSeconds, row.LagSecondsKnown = 0, true
		case ok && a.position == r.position:
			row.LagSeconds, row.LagSecondsKnown = max(0, now.Sub(a.ts).Seconds()), true
		default:
			// Position moved but its record could not be read this time:
			// keep the last value rather than invent one.
			row.LagSeconds, row.LagSecondsKnown = e.lastLagSeconds(r.tp)
		}
		if row.LagSecondsKnown {
			e.m.LagSeconds.WithLabelValues(l...).Set(row.LagSeconds)
		}
		snap.Partitions = append(snap.Partitions, row)
	}
	slices.SortFunc(snap.Partitions, func(a, b Partition) int {
		if a.Topic != b.Topic {
			return strings.Compare(a.Topic, b.Topic)
		}
		return a.Partition - b.Partition
	})
	if descErr == nil {
		n := 0
		for t, c := range unowned {
			e.m.Unowned.WithLabelValues(t).Set(float64(c))
			n += c
		}
		snap.Unowned = n
		e.m.Members.Set(float64(members))
		e.logOwnership(now, rawState, members, n)
		if e.lastDescErr != "" {
			e.log.Info().Str("group", e.opts.Group).Msg("describing the consumer group again")
			e.lastDescErr = ""
		}
	} else {
		e.mu.Lock()
		snap.Unowned = e.snap.Unowned
		e.mu.Unlock()
		if msg := descErr.Error(); msg != e.lastDescErr && ctx.Err() == nil {
			e.log.Warn().Err(descErr).Msg("cannot describe the consumer group: its state reads Unknown and the unowned count keeps its last value")
			e.lastDescErr = msg
		}
	}
	for _, s := range metrics.GroupStates() {
		v := 0.0
		if s == state {
			v = 1
		}
		e.m.State.WithLabelValues(s).Set(v)
	}
	snap.Err = errors.Join(topicErr, descErr)
	if topicErr == nil {
		e.m.LastRefreshTS.Set(float64(now.UnixNano()) / 1e9)
	}
	e.mu.Lock()
	e.snap = snap
	e.mu.Unlock()
	return topicErr
}

// lastLagSeconds is the partition's lag in seconds as last exported, if any.
func (e *Exporter) lastLagSeconds(p tp) (float64, bool) {
	r, _ := e.lastRow(p)
	return r.LagSeconds, r.LagSecondsKnown
}

// lastRow is the partition as last read, if it ever was.
func (e *Exporter) lastRow(p tp) (Partition, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range e.snap.Partitions {
		if r.Topic == p.topic && r.Partition == p.partition {
			return r, true
		}
	}
	return Partition{}, false
}

// logOwnership logs when partitions lose or regain their owners (not every
// refresh): the log says what the metrics say, once.
func (e *Exporter) logOwnership(now time.Time, state string, members, unowned int) {
	if state != e.lastState {
		e.log.Info().Str("group", e.opts.Group).Str("state", state).Str("previous", e.lastState).Int("members", members).Msg("consumer group state changed")
		e.lastState = state
	}
	switch {
	case unowned > 0 && e.lastNoOwn == 0:
		e.noOwnSince = now
		e.log.Warn().Str("group", e.opts.Group).Str("state", state).Int("members", members).Int("unowned", unowned).
			Msg("partitions have no owner in the consumer group: nothing is delivered from them")
	case unowned == 0 && e.lastNoOwn > 0:
		e.log.Info().Str("group", e.opts.Group).Float64("unowned_seconds", now.Sub(e.noOwnSince).Round(time.Millisecond).Seconds()).
			Msg("every partition has an owner again")
	}
	e.lastNoOwn = unowned
}

// partitions lists the partitions of the consumed topics. A topic that does
// not exist (or may not be described) is an error: its lag is unknown.
func (e *Exporter) partitions(ctx context.Context) ([]tp, error) {
	md, err := e.opts.Client.Metadata(ctx, &kafka.MetadataRequest{Topics: e.opts.Topics})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	var out []tp
	var errs []error
	for _, t := range md.Topics {
		if t.Error != nil {
			errs = append(errs, fmt.Errorf("metadata of topic %s: %w", t.Name, t.Error))
			continue
		}
		for _, p := range t.Partitions {
			out = append(out, tp{t.Name, p.ID})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].topic != out[j].topic {
			return out[i].topic < out[j].topic
		}
		return out[i].partition < out[j].partition
	})
	if len(out) == 0 {
		errs = append(errs, errors.New("no partitions found for the consumed topics"))
	}
	return out, errors.Join(errs...)
}

// listOffsets returns the partitions' offsets. A failed request returns a
// nil map; partitions the broker refused are absent from the map and named
// in the error.
func (e *Exporter) listOffsets(ctx context.Context, byTopic map[string][]int, which int64, iso kafka.IsolationLevel) (map[tp]int64, error) {
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}, IsolationLevel: iso}
	for t, ps := range byTopic {
		for _, p := range ps {
			req.Topics[t] = append(req.Topics[t], kafka.OffsetRequest{Partition: p, Timestamp: which})
		}
	}
	resp, err := e.opts.Client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	name := "earliest"
	if which == kafka.LastOffset {
		name = "latest"
	}
	out := map[tp]int64{}
	answered := map[tp]bool{}
	var errs []error
	for t, ps := range resp.Topics {
		for _, p := range ps {
			answered[tp{t, p.Partition}] = true
			switch {
			case p.Error != nil:
				errs = append(errs, fmt.Errorf("list %s offset of %s/%d: %w", name, t, p.Partition, p.Error))
			case which == kafka.LastOffset:
				out[tp{t, p.Partition}] = p.LastOffset
			default:
				out[tp{t, p.Partition}] = p.FirstOffset
			}
		}
	}
	// Partitions the broker left out of its answer are just as unknown.
	for t, ps := range byTopic {
		for _, p := range ps {
			if !answered[tp{t, p}] {
				errs = append(errs, fmt.Errorf("list %s offset of %s/%d: not in the broker's answer", name, t, p))
			}
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return out, errors.Join(errs...)
}

// committed returns the group's committed offsets; partitions without one
// are absent. A failed request returns a nil map; partitions the broker
// answered with an error are in unknown and named in the error (taking them
// for "no commit" would report the whole log, or nothing, as lag).
func (e *Exporter) committed(ctx context.Context, byTopic map[string][]int) (offsets map[tp]int64, unknown map[tp]bool, err error) {
	resp, err := e.opts.Client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: e.opts.Group, Topics: byTopic})
	if err == nil {
		err = resp.Error
	}
	// Apache Kafka answers -1 per partition for a group it does not know;
	// some brokers (kfake) answer GROUP_ID_NOT_FOUND: both mean "none".
	if errors.Is(err, kafka.GroupIdNotFound) {
		return map[tp]int64{}, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("offset fetch for group %s: %w", e.opts.Group, err)
	}
	offsets, unknown = map[tp]int64{}, map[tp]bool{}
	var errs []error
	for t, ps := range resp.Topics {
		for _, p := range ps {
			switch {
			case p.Error != nil:
				unknown[tp{t, p.Partition}] = true
				errs = append(errs, fmt.Errorf("committed offset of %s/%d: %w", t, p.Partition, p.Error))
			case p.CommittedOffset >= 0:
				offsets[tp{t, p.Partition}] = p.CommittedOffset
			}
		}
	}
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return offsets, unknown, errors.Join(errs...)
}

// describe returns the group's state as the broker names it, the member
// count and the partitions owned (see the package doc for what counts).
func (e *Exporter) describe(ctx context.Context) (state string, members int, owned map[tp]bool, err error) {
	owned = map[tp]bool{}
	resp, err := e.opts.Client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{e.opts.Group}})
	if err == nil && len(resp.Groups) != 1 {
		err = fmt.Errorf("%d groups in the answer", len(resp.Groups))
	}
	if err == nil {
		err = resp.Groups[0].Error
	}
	if err != nil {
		return metrics.GroupStateUnknown, 0, owned, fmt.Errorf("describe group %s: %w", e.opts.Group, err)
	}
	g := resp.Groups[0]
	if g.GroupState == "Stable" {
		for _, m := range g.Members {
			for _, t := range m.MemberAssignments.Topics {
				for _, p := range t.Partitions {
					owned[tp{t.Topic, p}] = true
				}
			}
		}
	}
	return g.GroupState, len(g.Members), owned, nil
}
