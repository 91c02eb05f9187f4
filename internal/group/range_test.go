package group

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/ampstream/ampstream/internal/kafkatest"
)

// oldMember is a member of an ampstream release built on kafka-go's
// ConsumerGroup: default GroupBalancers (range, roundrobin), eager.
type oldMember struct {
	cg   *kafka.ConsumerGroup
	mu   sync.Mutex
	gen  *kafka.Generation
	done chan struct{}
}

// startOld runs an old-release member named name on the ledger: a
// generation's partitions are recorded as its own when Next hands them
// out, and released when the generation ends (kafka-go waits for that
// before it rejoins).
func (l *ledger) startOld(c *kafkatest.Cluster, group, topic, name string) *oldMember {
	t := l.t
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: group, Brokers: c.Brokers, Topics: []string{topic},
		HeartbeatInterval: 300 * time.Millisecond, SessionTimeout: 6 * time.Second,
		RebalanceTimeout: 15 * time.Second, JoinGroupBackoff: 500 * time.Millisecond,
	})
	require.NoError(t, err)
	o := &oldMember{cg: cg, done: make(chan struct{})}
	go func() {
		defer close(o.done)
		for {
			gen, err := cg.Next(context.Background())
			if errors.Is(err, kafka.ErrGroupClosed) {
				return
			}
			if err != nil {
				t.Logf("old member %s: %v (kafka-go rejoins by itself)", name, err)
				continue
			}
			var mine []TopicPartition
			l.mu.Lock()
			for _, pa := range gen.Assignments[topic] {
				tp := TopicPartition{topic, pa.ID}
				if other, ok := l.owner[tp]; ok {
					t.Errorf("%v assigned to %s while %s owns it", tp, name, other)
				}
				l.owner[tp] = name
				l.assigned[name] = append(l.assigned[name], Assignment{tp, pa.Offset})
				mine = append(mine, tp)
			}
			l.mu.Unlock()
			o.mu.Lock()
			o.gen = gen
			o.mu.Unlock()
			gen.Start(func(ctx context.Context) {
				<-ctx.Done()
				l.mu.Lock()
				defer l.mu.Unlock()
				for _, tp := range mine {
					delete(l.owner, tp)
				}
				l.revoked[name] = append(l.revoked[name], mine...)
			})
		}
	}()
	t.Cleanup(o.stop)
	return o
}

func (o *oldMember) commit(topic string, offsets map[int]int64) error {
	o.mu.Lock()
	gen := o.gen
	o.mu.Unlock()
	return gen.CommitOffsets(map[string]map[int]int64{topic: offsets})
}

// stop closes the ConsumerGroup: it leaves the group.
func (o *oldMember) stop() {
	_ = o.cg.Close()
	<-o.done
}

func waitProtocol(t *testing.T, proto string, ms ...running) {
	t.Helper()
	require.Eventually(t, func() bool {
		gen := -2
		for _, r := range ms {
			s := r.m.State()
			if !s.Member || s.Protocol != proto || (gen != -2 && s.Generation != gen) {
				return false
			}
			gen = s.Generation
		}
		return true
	}, 60*time.Second, 20*time.Millisecond, "members never all in one %s generation", proto)
}

// A rolling update from a release on kafka-go's ConsumerGroup: the new
// member joins the old one's group at once (range, no
// INCONSISTENT_GROUP_PROTOCOL), both commit; once the old member is gone
// the group goes back to cooperative-sticky by itself.
func TestMemberSharesAGroupWithKafkaGoConsumerGroup(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "group-range", 4)
	group := kafkatest.UniqueName("group-range")
	l := newLedger(t)
	old := l.startOld(c, group, topic, "old")
	l.waitOwned(map[string]int{"old": 4})

	a := l.start(c, group, topic, "a", false)
	l.waitOwned(map[string]int{"old": 2, "a": 2})
	waitProtocol(t, RangeProtocol, a)
	mineA, mineOld := l.owned("a"), l.owned("old")

	commitsA := map[TopicPartition]int64{}
	for _, tp := range mineA {
		commitsA[tp] = 10 + int64(tp.Partition)
	}
	require.NoError(t, a.m.Commit(context.Background(), commitsA))
	commitsOld := map[int]int64{}
	for _, tp := range mineOld {
		commitsOld[tp.Partition] = 20 + int64(tp.Partition)
	}
	require.NoError(t, old.commit(topic, commitsOld))

	// The old member leaves: a rejoins eagerly (revoking its two first),
	// the group is cooperative again and a owns all four, each from its
	// last commit.
	revokedA := len(l.revokedOf("a"))
	old.stop()
	l.waitOwned(map[string]int{"a": 4})
	waitProtocol(t, Protocol, a)
	require.Len(t, l.revokedOf("a")[revokedA:], 2, "range: a revoked everything before rejoining")
	l.mu.Lock()
	resumed := offsetsOf(l.assigned["a"][2:])
	l.mu.Unlock()
	want := map[int]int64{}
	for tp, off := range commitsA {
		want[tp.Partition] = off
	}
	for p, off := range commitsOld {
		want[p] = off
	}
	require.Equal(t, want, resumed)

	// A second new member: cooperative, only what moves is revoked.
	revokedA = len(l.revokedOf("a"))
	b := l.start(c, group, topic, "b", false)
	l.waitOwned(map[string]int{"a": 2, "b": 2})
	waitProtocol(t, Protocol, a, b)
	require.ElementsMatch(t, l.revokedOf("a")[revokedA:], l.owned("b"), "a gave up only what b took")
	require.Empty(t, l.lost)
}

// The other way round (a rollback): an old member joins a cooperative
// group of two. The generation switches to range; the leader withholds
// every partition a member still owns from the others, both revoke what
// they were not assigned after their SyncGroup and commit it (a commit
// before the SyncGroup would be refused: the group is completing its
// rebalance), and their rejoin gets it assigned: no partition is ever
// owned twice (the ledger checks every hand-over) and every revocation
// commits.
func TestMemberFallsBackToRangeWhenAKafkaGoMemberJoins(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "group-rollback", 6)
	group := kafkatest.UniqueName("group-rollback")
	l := newLedger(t)
	a := l.start(c, group, topic, "a", false)
	l.waitOwned(map[string]int{"a": 6})
	b := l.start(c, group, topic, "b", false)
	l.waitOwned(map[string]int{"a": 3, "b": 3})
	waitProtocol(t, Protocol, a, b)

	// The follower's revocations take a while from now on: an old member
	// handed a partition that b is still draining would show in the
	// ledger.
	l.mu.Lock()
	l.drain["b"] = time.Second
	l.commitOnRevoke["a"], l.commitOnRevoke["b"] = true, true
	l.mu.Unlock()
	old := l.startOld(c, group, topic, "old")
	l.waitOwned(map[string]int{"old": 2, "a": 2, "b": 2})
	waitProtocol(t, RangeProtocol, a, b)
	require.NoError(t, old.commit(topic, map[int]int64{l.owned("old")[0].Partition: 3}))

	old.stop()
	l.waitOwned(map[string]int{"a": 3, "b": 3})
	waitProtocol(t, Protocol, a, b)
	require.Empty(t, l.lost)
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Empty(t, l.commitErrs, "a revocation's commit failed")
}
