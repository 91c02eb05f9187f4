package grouplag_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.uber.org/goleak"

	"github.com/ampstream/ampstream/internal/grouplag"
	"github.com/ampstream/ampstream/internal/kafkatest"
	"github.com/ampstream/ampstream/internal/metrics"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const partitions = 3

// fixture is a topic with records whose timestamps are base + offset seconds, a group id,
// and an exporter reading them with a clock the test sets.
type fixture struct {
	k     *kafkatest.Cluster
	topic string
	group string
	base  time.Time
	now   time.Time
	reg   *prometheus.Registry
	e     *grouplag.Exporter
	cl    *kafka.Client
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureOn(t, kafkatest.Start(t))
}

func newFixtureOn(t *testing.T, k *kafkatest.Cluster) *fixture {
	t.Helper()
	f := &fixture{
		k:     k,
		topic: k.CreateTopic(t, "grouplag", partitions),
		group: kafkatest.UniqueName("grouplag"),
		base:  time.Now().Add(-time.Hour).Truncate(time.Second),
		reg:   prometheus.NewRegistry(),
	}
	f.now = f.base.Add(time.Hour)
	tr := &kafka.Transport{ClientID: "grouplag-test"}
	t.Cleanup(tr.CloseIdleConnections)
	f.cl = &kafka.Client{Addr: kafka.TCP(k.Brokers...), Transport: tr, Timeout: 30 * time.Second}
	f.waitListable(t)
	owned := f.base.Add(30 * time.Minute)
	f.e = grouplag.New(grouplag.Options{
		Client: f.cl, Group: f.group, Topics: []string{f.topic},
		StartEarliest: true, ReadCommitted: true,
		LastOwned:  func() time.Time { return owned },
		Generation: func() int32 { return -1 },
		Now:        func() time.Time { return f.now },
	}, metrics.New(f.reg), zerolog.New(zerolog.NewTestWriter(t)))
	return f
}

// waitListable waits until ListOffsets answers for every partition of the
// topic: a broker may name a new partition's leader in its metadata a moment
// before that leader answers for it, and a partition the exporter cannot list
// fails the refresh.
func (f *fixture) waitListable(t *testing.T) {
	t.Helper()
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for p := range partitions {
		req.Topics[f.topic] = append(req.Topics[f.topic], kafka.LastOffsetOf(p))
	}
	require.Eventually(t, func() bool {
		resp, err := f.cl.ListOffsets(context.Background(), req)
		if err != nil || len(resp.Topics[f.topic]) != partitions {
			return false
		}
		for _, p := range resp.Topics[f.topic] {
			if p.Error != nil {
				return false
			}
		}
		return true
	}, 30*time.Second, 20*time.Millisecond, "partitions of %s never all listable", f.topic)
}

// produce appends n records to partition p, the record at offset o stamped base + o seconds.
func (f *fixture) produce(t *testing.T, p, from, n int) {
	t.Helper()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		o := from + i
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprint(o)), Value: []byte("v"), Time: f.base.Add(time.Duration(o) * time.Second)}
	}
	f.k.ProduceToPartition(t, f.topic, p, msgs...)
}

// commit commits offsets as a simple (generation -1) consumer: the group has offsets and
// no member.
func (f *fixture) commit(t *testing.T, offsets map[int]int64) {
	t.Helper()
	var req []kafka.OffsetCommit
	for p, o := range offsets {
		req = append(req, kafka.OffsetCommit{Partition: p, Offset: o})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := f.cl.OffsetCommit(ctx, &kafka.OffsetCommitRequest{
			GroupID: f.group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{f.topic: req},
		})
		if err == nil {
			for _, p := range resp.Topics[f.topic] {
				if err == nil {
					err = p.Error
				}
			}
		}
		if err == nil {
			return
		}
		// A fresh broker answers COORDINATOR_LOAD_IN_PROGRESS / NOT_COORDINATOR at first.
		var kerr kafka.Error
		require.ErrorAs(t, err, &kerr)
		require.Truef(t, kerr.Temporary(), "commit: %v", err)
		select {
		case <-ctx.Done():
			require.NoError(t, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (f *fixture) refresh(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, f.e.Refresh(ctx))
}

// compare checks the named series exactly. want holds "# HELP" and "# TYPE" lines and sample
// lines in any order (%[1]s is the topic); they are grouped by family, as the text format
// requires.
func (f *fixture) compare(t *testing.T, want string, names ...string) {
	t.Helper()
	var order []string
	fams := map[string][]string{}
	for _, l := range strings.Split(strings.ReplaceAll(want, "%[1]s", f.topic), "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		name := l
		if rest, ok := strings.CutPrefix(l, "# "); ok {
			name = strings.Fields(rest)[1]
		}
		name = strings.FieldsFunc(name, func(r rune) bool { return r == '{' || r == ' ' })[0]
		if _, ok := fams[name]; !ok {
			order = append(order, name)
		}
		fams[name] = append(fams[name], l)
	}
	var b strings.Builder
	for _, n := range order {
		b.WriteString(strings.Join(fams[n], "\n") + "\n")
	}
	assert.NoError(t, testutil.GatherAndCompare(f.reg, strings.NewReader(b.String()), names...))
}

const lagHeader = `
# HELP ampstream_kafka_group_committed_offset The consumer group's committed offset (the next offset to consume) of every partition of the consumed topics, owned or not; -1 when the group has committed none.
# TYPE ampstream_kafka_group_committed_offset gauge
# HELP ampstream_kafka_partition_end_offset End offset of every partition of the consumed topics: the last stable offset with kafka.isolation_level=read_committed, else the high watermark.
# TYPE ampstream_kafka_partition_end_offset gauge
# HELP ampstream_kafka_group_lag End offset minus the group's position (committed offset, or where a partition without one starts), in messages, for every partition whether or not a member owns it.
# TYPE ampstream_kafka_group_lag gauge
# HELP ampstream_kafka_group_lag_seconds Now minus the Kafka timestamp of the record at the group's position, for every partition whether or not a member owns it; 0 when the lag is 0.
# TYPE ampstream_kafka_group_lag_seconds gauge
`

var lagNames = []string{
	"ampstream_kafka_group_committed_offset", "ampstream_kafka_partition_end_offset",
	"ampstream_kafka_group_lag", "ampstream_kafka_group_lag_seconds",
}

const ownerHeader = `
# HELP ampstream_kafka_unowned_partitions Partitions no group member owns: not in any member's assignment of a Stable group; all of them in any other state.
# TYPE ampstream_kafka_unowned_partitions gauge
# HELP ampstream_kafka_group_members Members of the consumer group as this replica last described it.
# TYPE ampstream_kafka_group_members gauge
`

var ownerNames = []string{"ampstream_kafka_unowned_partitions", "ampstream_kafka_group_members"}

func stateIs(state string) string {
	var b strings.Builder
	b.WriteString("# HELP ampstream_kafka_group_state 1 for the consumer group's state as this replica last described it, 0 for the others.\n# TYPE ampstream_kafka_group_state gauge\n")
	for _, s := range metrics.GroupStates() {
		v := 0
		if s == state {
			v = 1
		}
		fmt.Fprintf(&b, "ampstream_kafka_group_state{state=%q} %d\n", s, v)
	}
	return b.String()
}

// With committed offsets and no member at all (every replica down), every partition still
// reports its lag in messages and in seconds, the lag grows as producers write, and every
// partition counts as unowned.
func TestLagWithoutOwners(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 0, 0, 5)
	f.produce(t, 1, 0, 5)
	f.produce(t, 2, 0, 5)
	// Partition 0 halfway, partition 1 caught up, partition 2 never committed
	// (kafka.start_offset earliest: its whole log is lag).
	f.commit(t, map[int]int64{0: 2, 1: 5})
	f.refresh(t)

	f.compare(t, lagHeader+`
ampstream_kafka_group_committed_offset{partition="0",topic="%[1]s"} 2
ampstream_kafka_group_committed_offset{partition="1",topic="%[1]s"} 5
ampstream_kafka_group_committed_offset{partition="2",topic="%[1]s"} -1
ampstream_kafka_partition_end_offset{partition="0",topic="%[1]s"} 5
ampstream_kafka_partition_end_offset{partition="1",topic="%[1]s"} 5
ampstream_kafka_partition_end_offset{partition="2",topic="%[1]s"} 5
ampstream_kafka_group_lag{partition="0",topic="%[1]s"} 3
ampstream_kafka_group_lag{partition="1",topic="%[1]s"} 0
ampstream_kafka_group_lag{partition="2",topic="%[1]s"} 5
ampstream_kafka_group_lag_seconds{partition="0",topic="%[1]s"} 3598
ampstream_kafka_group_lag_seconds{partition="1",topic="%[1]s"} 0
ampstream_kafka_group_lag_seconds{partition="2",topic="%[1]s"} 3600
`, lagNames...)
	f.compare(t, ownerHeader+`
ampstream_kafka_unowned_partitions{topic="%[1]s"} 3
ampstream_kafka_group_members 0
`, ownerNames...)
	f.compare(t, stateIs("Empty"), "ampstream_kafka_group_state")
	f.compare(t, fmt.Sprintf(`
# HELP ampstream_kafka_last_owned_timestamp_seconds Unix time this replica last owned at least one partition; 0 if it never has.
# TYPE ampstream_kafka_last_owned_timestamp_seconds gauge
ampstream_kafka_last_owned_timestamp_seconds %d
# HELP ampstream_kafka_group_generation Generation this replica is a member of; -1 when it is a member of none. Absent while the consumer does not report it.
# TYPE ampstream_kafka_group_generation gauge
ampstream_kafka_group_generation -1
`, f.base.Add(30*time.Minute).Unix()), "ampstream_kafka_last_owned_timestamp_seconds", "ampstream_kafka_group_generation")

	// Producers keep writing, nobody consumes: the lag grows, and the age of the waiting
	// record grows with the clock (read once, cached while the position holds).
	f.produce(t, 0, 5, 4)
	f.produce(t, 1, 5, 2)
	f.now = f.now.Add(10 * time.Second)
	f.refresh(t)
	f.compare(t, lagHeader+`
ampstream_kafka_group_committed_offset{partition="0",topic="%[1]s"} 2
ampstream_kafka_group_committed_offset{partition="1",topic="%[1]s"} 5
ampstream_kafka_group_committed_offset{partition="2",topic="%[1]s"} -1
ampstream_kafka_partition_end_offset{partition="0",topic="%[1]s"} 9
ampstream_kafka_partition_end_offset{partition="1",topic="%[1]s"} 7
ampstream_kafka_partition_end_offset{partition="2",topic="%[1]s"} 5
ampstream_kafka_group_lag{partition="0",topic="%[1]s"} 7
ampstream_kafka_group_lag{partition="1",topic="%[1]s"} 2
ampstream_kafka_group_lag{partition="2",topic="%[1]s"} 5
ampstream_kafka_group_lag_seconds{partition="0",topic="%[1]s"} 3608
ampstream_kafka_group_lag_seconds{partition="1",topic="%[1]s"} 3605
ampstream_kafka_group_lag_seconds{partition="2",topic="%[1]s"} 3610
`, lagNames...)

	snap := f.e.Snapshot()
	assert.Equal(t, "Empty", snap.State)
	assert.Equal(t, 3, snap.Unowned)
	require.Len(t, snap.Partitions, partitions)
	assert.Equal(t, grouplag.Partition{Topic: f.topic, Partition: 0, Committed: 2, End: 9, Lag: 7, LagSeconds: 3608, LagSecondsKnown: true}, snap.Partitions[0])
	f.compare(t, `
# HELP ampstream_kafka_group_lag_refreshes_total Reads of the group's offsets, end offsets and assignment (every kafka.lag_refresh_interval), by result.
# TYPE ampstream_kafka_group_lag_refreshes_total counter
ampstream_kafka_group_lag_refreshes_total{result="error"} 0
ampstream_kafka_group_lag_refreshes_total{result="success"} 2
`, "ampstream_kafka_group_lag_refreshes_total")
}

// A member that owns every partition: nothing is unowned, the group is Stable. When it
// leaves, every partition is unowned again while the lag keeps being reported.
func TestOwnedByAMember(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 0, 0, 3)
	f.commit(t, map[int]int64{0: 1})

	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: f.group, Brokers: f.k.Brokers, Topics: []string{f.topic},
		HeartbeatInterval: 500 * time.Millisecond, SessionTimeout: 10 * time.Second,
		RebalanceTimeout: 5 * time.Second, JoinGroupBackoff: 200 * time.Millisecond,
		Logger: kafka.LoggerFunc(t.Logf),
	})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	gen, err := cg.Next(ctx)
	require.NoError(t, err)
	n := 0
	for _, as := range gen.Assignments {
		n += len(as)
	}
	require.Equal(t, partitions, n, "one member owns every partition")

	// The broker reports Stable once the member's SyncGroup is done: poll for it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		f.refresh(t)
		if s := f.e.Snapshot(); s.State == "Stable" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.compare(t, ownerHeader+`
ampstream_kafka_unowned_partitions{topic="%[1]s"} 0
ampstream_kafka_group_members 1
`, ownerNames...)
	f.compare(t, stateIs("Stable"), "ampstream_kafka_group_state")
	for _, p := range f.e.Snapshot().Partitions {
		assert.True(t, p.Owned, "partition %d owned", p.Partition)
	}

	require.NoError(t, cg.Close())
	deadline = time.Now().Add(30 * time.Second)
	for {
		f.refresh(t)
		if s := f.e.Snapshot(); s.State == "Empty" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	f.compare(t, ownerHeader+`
ampstream_kafka_unowned_partitions{topic="%[1]s"} 3
ampstream_kafka_group_members 0
`, ownerNames...)
	f.compare(t, lagHeader+`
ampstream_kafka_group_committed_offset{partition="0",topic="%[1]s"} 1
ampstream_kafka_group_committed_offset{partition="1",topic="%[1]s"} -1
ampstream_kafka_group_committed_offset{partition="2",topic="%[1]s"} -1
ampstream_kafka_partition_end_offset{partition="0",topic="%[1]s"} 3
ampstream_kafka_partition_end_offset{partition="1",topic="%[1]s"} 0
ampstream_kafka_partition_end_offset{partition="2",topic="%[1]s"} 0
ampstream_kafka_group_lag{partition="0",topic="%[1]s"} 2
ampstream_kafka_group_lag{partition="1",topic="%[1]s"} 0
ampstream_kafka_group_lag{partition="2",topic="%[1]s"} 0
ampstream_kafka_group_lag_seconds{partition="0",topic="%[1]s"} 3599
ampstream_kafka_group_lag_seconds{partition="1",topic="%[1]s"} 0
ampstream_kafka_group_lag_seconds{partition="2",topic="%[1]s"} 0
`, lagNames...)
}

// rawMember joins the group with kafka-go's Client: it can hold an assignment and then simply
// stop answering, as a hung or partitioned replica does.
type rawMember struct {
	f  *fixture
	id string
}

// join joins (retrying MEMBER_ID_REQUIRED with the id the broker hands out) and returns the
// generation and whether this member leads.
func (m *rawMember) join(ctx context.Context) (gen int, leader bool, err error) {
	for range 10 {
		var resp *kafka.JoinGroupResponse
		resp, err = m.f.cl.JoinGroup(ctx, &kafka.JoinGroupRequest{
			GroupID: m.f.group, MemberID: m.id, ProtocolType: "consumer",
			SessionTimeout: 6 * time.Second, RebalanceTimeout: 3 * time.Second,
			Protocols: []kafka.GroupProtocol{{Name: "range", Metadata: kafka.GroupProtocolSubscription{Topics: []string{m.f.topic}}}},
		})
		if err == nil {
			err = resp.Error
		}
		if resp != nil && resp.MemberID != "" {
			m.id = resp.MemberID
		}
		if errors.Is(err, kafka.MemberIDRequired) {
			continue
		}
		var kerr kafka.Error
		if errors.As(err, &kerr) && kerr.Temporary() {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		if err != nil {
			return 0, false, err
		}
		return resp.GenerationID, resp.LeaderID == m.id, nil
	}
	return 0, false, err
}

// A rebalance that does not complete: member a owns every partition, then member b joins and
// the coordinator waits for a, which never rejoins. While the group is in PreparingRebalance
// every partition counts as unowned, although a still has an assignment.
func TestRebalanceThatDoesNotComplete(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 0, 0, 2)
	f.commit(t, map[int]int64{0: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	a := &rawMember{f: f}
	gen, leader, err := a.join(ctx)
	require.NoError(t, err)
	require.True(t, leader, "the only member leads")
	sync, err := f.cl.SyncGroup(ctx, &kafka.SyncGroupRequest{
		GroupID: f.group, GenerationID: gen, MemberID: a.id, ProtocolType: "consumer", ProtocolName: "range",
		Assignments: []kafka.SyncGroupRequestAssignment{{MemberID: a.id, Assignment: kafka.GroupProtocolAssignment{
			AssignedPartitions: map[string][]int{f.topic: {0, 1, 2}},
		}}},
	})
	require.NoError(t, err)
	require.NoError(t, sync.Error)
	f.refresh(t)
	f.compare(t, ownerHeader+`
ampstream_kafka_unowned_partitions{topic="%[1]s"} 0
ampstream_kafka_group_members 1
`, ownerNames...)
	f.compare(t, stateIs("Stable"), "ampstream_kafka_group_state")

	// b's JoinGroup blocks until a rejoins (never) or a's rebalance timeout ends the wait.
	b := &rawMember{f: f}
	joined := make(chan error, 1)
	go func() { _, _, err := b.join(ctx); joined <- err }()
	deadline := time.Now().Add(30 * time.Second)
	for f.e.Snapshot().State != "PreparingRebalance" {
		require.Truef(t, time.Now().Before(deadline), "group never rebalancing: %+v", f.e.Snapshot())
		time.Sleep(20 * time.Millisecond)
		f.refresh(t)
	}
	f.compare(t, ownerHeader+`
ampstream_kafka_unowned_partitions{topic="%[1]s"} 3
ampstream_kafka_group_members 2
`, ownerNames...)
	f.compare(t, stateIs("PreparingRebalance"), "ampstream_kafka_group_state")
	f.compare(t, lagHeader+`
ampstream_kafka_group_committed_offset{partition="0",topic="%[1]s"} 1
ampstream_kafka_group_committed_offset{partition="1",topic="%[1]s"} -1
ampstream_kafka_group_committed_offset{partition="2",topic="%[1]s"} -1
ampstream_kafka_partition_end_offset{partition="0",topic="%[1]s"} 2
ampstream_kafka_partition_end_offset{partition="1",topic="%[1]s"} 0
ampstream_kafka_partition_end_offset{partition="2",topic="%[1]s"} 0
ampstream_kafka_group_lag{partition="0",topic="%[1]s"} 1
ampstream_kafka_group_lag{partition="1",topic="%[1]s"} 0
ampstream_kafka_group_lag{partition="2",topic="%[1]s"} 0
ampstream_kafka_group_lag_seconds{partition="0",topic="%[1]s"} 3599
ampstream_kafka_group_lag_seconds{partition="1",topic="%[1]s"} 0
ampstream_kafka_group_lag_seconds{partition="2",topic="%[1]s"} 0
`, lagNames...)

	// Let b's join end (a's rebalance timeout) and both leave, so the test owns nothing after.
	require.NoError(t, <-joined)
	for _, m := range []*rawMember{a, b} {
		_, _ = f.cl.LeaveGroup(ctx, &kafka.LeaveGroupRequest{GroupID: f.group, Members: []kafka.LeaveGroupRequestMember{{ID: m.id}}})
	}
}

// A consumed topic that does not exist fails the refresh (counted, logged, and the refresh
// timestamp stops moving) without hiding the lag of the topics that do.
// newFaultFixture is a fixture on a kfake cluster of its own (for answer), with 2 records in
// partition 0 and 4 in partition 1.
func newFaultFixture(t *testing.T) (*fixture, *kfake.Cluster) {
	t.Helper()
	k, kc := kafkatest.StartKfake(t)
	f := newFixtureOn(t, k)
	f.produce(t, 0, 0, 2)
	f.produce(t, 1, 0, 4)
	return f, kc
}

// refreshAfterMore appends 6 records to partition 1, moves the clock 10 s and returns the
// error of one refresh.
func (f *fixture) refreshAfterMore(t *testing.T) error {
	t.Helper()
	f.produce(t, 1, 4, 6)
	f.now = f.now.Add(10 * time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return f.e.Refresh(ctx)
}

// answer makes the broker answer every request of key with fn's response, until stop.
func answer(kc *kfake.Cluster, key kmsg.Key, fn func(kmsg.Request) kmsg.Response) (stop func()) {
	var stopped atomic.Bool
	kc.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if stopped.Load() {
			return nil, nil, false
		}
		return fn(req), nil, true
	})
	return func() { stopped.Store(true) }
}

// refreshNames are the series refreshSeries describes.
var refreshNames = []string{"ampstream_kafka_group_lag", "ampstream_kafka_group_lag_refreshes_total", "ampstream_kafka_group_lag_last_refresh_timestamp_seconds"}

// refreshSeries is the expected text of each partition's lag, the refreshes
// that failed and succeeded, and the last successful refresh's Unix time.
func refreshSeries(lag [partitions]int, failed, succeeded int, lastRefresh int64) string {
	var b strings.Builder
	b.WriteString(`
# HELP ampstream_kafka_group_lag End offset minus the group's position (committed offset, or where a partition without one starts), in messages, for every partition whether or not a member owns it.
# TYPE ampstream_kafka_group_lag gauge
`)
	for p, l := range lag {
		fmt.Fprintf(&b, "ampstream_kafka_group_lag{partition=\"%d\",topic=\"%%[1]s\"} %d\n", p, l)
	}
	fmt.Fprintf(&b, `# HELP ampstream_kafka_group_lag_refreshes_total Reads of the group's offsets, end offsets and assignment (every kafka.lag_refresh_interval), by result.
# TYPE ampstream_kafka_group_lag_refreshes_total counter
ampstream_kafka_group_lag_refreshes_total{result="error"} %d
ampstream_kafka_group_lag_refreshes_total{result="success"} %d
# HELP ampstream_kafka_group_lag_last_refresh_timestamp_seconds Unix time of the last successful read of the group's offsets; the ampstream_kafka_group_* values are that old.
# TYPE ampstream_kafka_group_lag_last_refresh_timestamp_seconds gauge
ampstream_kafka_group_lag_last_refresh_timestamp_seconds %d
`, failed, succeeded, lastRefresh)
	return b.String()
}

func TestMissingTopic(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 1, 0, 4)
	reg := prometheus.NewRegistry()
	e := grouplag.New(grouplag.Options{
		Client: f.cl, Group: f.group, Topics: []string{f.topic, kafkatest.UniqueName("missing")},
		StartEarliest: true, Now: func() time.Time { return f.now },
	}, metrics.New(reg), zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.ErrorIs(t, e.Refresh(ctx), kafka.UnknownTopicOrPartition)
	f.reg = reg
	f.compare(t, refreshSeries([partitions]int{0, 4, 0}, 1, 0, 0), refreshNames...)
}

// A partition whose leader refuses ListOffsets (a leader moving, a broker down) fails the
// refresh: its series keep their last values, its row stays on the status page marked stale,
// the last-refresh timestamp stops moving (so the stale alert can fire) and the error names the
// partition, while the other partitions are still read.
func TestPartitionWhoseOffsetsCannotBeListed(t *testing.T) {
	f, kc := newFaultFixture(t)
	f.refresh(t)
	first := f.now

	stop := answer(kc, kmsg.ListOffsets, func(kreq kmsg.Request) kmsg.Response {
		req := kreq.(*kmsg.ListOffsetsRequest)
		resp := req.ResponseKind().(*kmsg.ListOffsetsResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewListOffsetsResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewListOffsetsResponseTopicPartition()
				sp.Partition = rp.Partition
				if rp.Partition == 1 {
					sp.ErrorCode = kerr.NotLeaderForPartition.Code
				} else {
					sp.Offset = 0 // partition 0 starts at 0 and ends at 2; partition 2 is empty
					if rp.Partition == 0 && rp.Timestamp == -1 {
						sp.Offset = 2
					}
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	})

	err := f.refreshAfterMore(t)
	require.ErrorIs(t, err, kafka.NotLeaderForPartition)
	assert.Contains(t, err.Error(), fmt.Sprintf("%s/1", f.topic))
	assert.NotContains(t, err.Error(), fmt.Sprintf("%s/0", f.topic))
	f.compare(t, refreshSeries([partitions]int{2, 4, 0}, 1, 1, first.Unix()), refreshNames...)
	snap := f.e.Snapshot()
	require.Len(t, snap.Partitions, partitions)
	assert.Equal(t, grouplag.Partition{Topic: f.topic, Partition: 1, Committed: -1, End: 4, Lag: 4, LagSeconds: 3600, LagSecondsKnown: true, Stale: true}, snap.Partitions[1])
	assert.False(t, snap.Partitions[0].Stale)
	assert.Equal(t, 3, snap.Unowned, "a partition whose offsets are unknown still counts as unowned")

	stop()
	f.now = f.now.Add(10 * time.Second)
	f.refresh(t)
	snap = f.e.Snapshot()
	assert.Equal(t, grouplag.Partition{Topic: f.topic, Partition: 1, Committed: -1, End: 10, Lag: 10, LagSeconds: 3620, LagSecondsKnown: true}, snap.Partitions[1])
	assert.NoError(t, snap.Err)
}

// A partition whose committed offset the coordinator answers with an error is unknown too,
// not "never committed" (which would report its whole log, or nothing, as lag): the refresh
// fails naming it, and its series and row keep their last values.
func TestPartitionWhoseCommittedOffsetCannotBeRead(t *testing.T) {
	f, kc := newFaultFixture(t)
	f.commit(t, map[int]int64{0: 1, 1: 3})
	f.refresh(t)
	first := f.now

	stop := answer(kc, kmsg.OffsetFetch, func(kreq kmsg.Request) kmsg.Response {
		req := kreq.(*kmsg.OffsetFetchRequest)
		resp := req.ResponseKind().(*kmsg.OffsetFetchResponse)
		for _, rt := range req.Topics {
			st := kmsg.NewOffsetFetchResponseTopic()
			st.Topic = rt.Topic
			for _, p := range rt.Partitions {
				sp := kmsg.NewOffsetFetchResponseTopicPartition()
				sp.Partition, sp.Offset = p, []int64{1, 3, -1}[p]
				if p == 1 {
					sp.Offset, sp.ErrorCode = -1, kerr.TopicAuthorizationFailed.Code
				}
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp
	})

	err := f.refreshAfterMore(t)
	require.ErrorIs(t, err, kafka.TopicAuthorizationFailed)
	assert.Contains(t, err.Error(), fmt.Sprintf("committed offset of %s/1", f.topic))
	f.compare(t, refreshSeries([partitions]int{1, 1, 0}, 1, 1, first.Unix()), refreshNames...)
	snap := f.e.Snapshot()
	require.Len(t, snap.Partitions, partitions)
	assert.Equal(t, grouplag.Partition{Topic: f.topic, Partition: 1, Committed: 3, End: 4, Lag: 1, LagSeconds: 3597, LagSecondsKnown: true, Stale: true}, snap.Partitions[1])

	stop()
	f.refresh(t)
	snap = f.e.Snapshot()
	assert.Equal(t, grouplag.Partition{Topic: f.topic, Partition: 1, Committed: 3, End: 10, Lag: 7, LagSeconds: 3607, LagSecondsKnown: true}, snap.Partitions[1])
}

// Age reads are bounded by a per-refresh budget: when it is spent, a lagging partition whose
// record was not read has no lag-seconds value yet (rather than a made-up 0), while its lag in
// messages is exported.
func TestAgeBudgetSpent(t *testing.T) {
	f := newFixture(t)
	f.produce(t, 0, 0, 3)
	reg := prometheus.NewRegistry()
	e := grouplag.New(grouplag.Options{
		Client: f.cl, Group: f.group, Topics: []string{f.topic}, StartEarliest: true,
		AgeBudget: time.Nanosecond, Now: func() time.Time { return f.now },
	}, metrics.New(reg), zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, e.Refresh(ctx))
	f.reg = reg
	f.compare(t, `
# HELP ampstream_kafka_group_lag End offset minus the group's position (committed offset, or where a partition without one starts), in messages, for every partition whether or not a member owns it.
# TYPE ampstream_kafka_group_lag gauge
ampstream_kafka_group_lag{partition="0",topic="%[1]s"} 3
ampstream_kafka_group_lag{partition="1",topic="%[1]s"} 0
ampstream_kafka_group_lag{partition="2",topic="%[1]s"} 0
# HELP ampstream_kafka_group_lag_seconds Now minus the Kafka timestamp of the record at the group's position, for every partition whether or not a member owns it; 0 when the lag is 0.
# TYPE ampstream_kafka_group_lag_seconds gauge
ampstream_kafka_group_lag_seconds{partition="1",topic="%[1]s"} 0
ampstream_kafka_group_lag_seconds{partition="2",topic="%[1]s"} 0
`, "ampstream_kafka_group_lag", "ampstream_kafka_group_lag_seconds")
	assert.False(t, e.Snapshot().Partitions[0].LagSecondsKnown)
}
