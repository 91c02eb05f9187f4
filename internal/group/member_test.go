package group

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/ampstream/ampstream/internal/kafkatest"
)

// ledger records what every member of a test was handed, and checks on
// each assignment that no other member holds the partition.
type ledger struct {
	t        *testing.T
	mu       sync.Mutex
	owner    map[TopicPartition]string
	assigned map[string][]Assignment
	revoked  map[string][]TopicPartition
	lost     map[string][]TopicPartition
	// drain is how long a member's revocations take (the owner draining
	// and committing) before the partitions are released; 0 by default.
	// Guarded by mu.
	drain map[string]time.Duration
	// commitOnRevoke: the member commits its revoked partitions (offset
	// 0) before it releases them, as the consumer's final commit does;
	// commitErrs collects what failed. Guarded by mu.
	commitOnRevoke map[string]bool
	commitErrs     []error
}

func newLedger(t *testing.T) *ledger {
	return &ledger{t: t, owner: map[TopicPartition]string{}, assigned: map[string][]Assignment{},
		revoked: map[string][]TopicPartition{}, lost: map[string][]TopicPartition{}, drain: map[string]time.Duration{},
		commitOnRevoke: map[string]bool{}}
}

// offsetsOf maps each assignment's partition to the offset it starts from.
func offsetsOf(as []Assignment) map[int]int64 {
	out := map[int]int64{}
	for _, a := range as {
		out[a.Partition] = a.Offset
	}
	return out
}

func (l *ledger) owned(name string) []TopicPartition {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []TopicPartition
	for tp, o := range l.owner {
		if o == name {
			out = append(out, tp)
		}
	}
	slices.SortFunc(out, comparePartitions)
	return out
}

func (l *ledger) revokedOf(name string) []TopicPartition {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.revoked[name])
}

type running struct {
	m    *Member
	stop func() error
}

// start runs a member named name (its instance id, when static is set).
func (l *ledger) start(c *kafkatest.Cluster, group, topic, name string, static bool) running {
	t := l.t
	var m *Member
	cfg := Config{
		Brokers: c.Brokers, Group: group, Topics: []string{topic},
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond, RebalanceTimeout: 15 * time.Second,
		Log: zerolog.New(zerolog.NewTestWriter(t)).With().Str("member", name).Logger().Level(zerolog.InfoLevel),
		Assigned: func(added []Assignment) {
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, a := range added {
				if o, ok := l.owner[a.TopicPartition]; ok {
					t.Errorf("%v assigned to %s while %s owns it", a.TopicPartition, name, o)
				}
				l.owner[a.TopicPartition] = name
			}
			l.assigned[name] = append(l.assigned[name], added...)
		},
		Revoked: func(tps []TopicPartition) {
			l.mu.Lock()
			drain, commit := l.drain[name], l.commitOnRevoke[name]
			l.mu.Unlock()
			time.Sleep(drain) // a drain takes time; the partitions are still owned meanwhile
			if commit {
				offsets := map[TopicPartition]int64{}
				for _, tp := range tps {
					offsets[tp] = 0
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err := m.Commit(ctx, offsets)
				cancel()
				if err != nil {
					l.mu.Lock()
					l.commitErrs = append(l.commitErrs, fmt.Errorf("%s revoking %v: %w", name, tps, err))
					l.mu.Unlock()
				}
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, tp := range tps {
				require.Equal(t, name, l.owner[tp], "%v revoked from a member that does not own it", tp)
				delete(l.owner, tp)
			}
			l.revoked[name] = append(l.revoked[name], tps...)
		},
		Lost: func(tps []TopicPartition) {
			l.mu.Lock()
			defer l.mu.Unlock()
			for _, tp := range tps {
				delete(l.owner, tp)
			}
			l.lost[name] = append(l.lost[name], tps...)
		},
	}
	if static {
		cfg.InstanceID = name
	}
	m = New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(30 * time.Second):
				err = fmt.Errorf("member %s did not stop in 30 s", name)
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return running{m: m, stop: stop}
}

func (l *ledger) waitOwned(counts map[string]int) {
	l.t.Helper()
	require.Eventually(l.t, func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		got := map[string]int{}
		for _, o := range l.owner {
			got[o]++
		}
		return maps.Equal(got, counts)
	}, 60*time.Second, 20*time.Millisecond, "ownership never became %v", counts)
}

func TestMemberJoinCommitAndResume(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "group-join", 4)
	group := kafkatest.UniqueName("group-join")
	l := newLedger(t)
	a := l.start(c, group, topic, "a", false)
	l.waitOwned(map[string]int{"a": 4})
	for _, as := range l.assigned["a"] {
		require.Equal(t, int64(-1), as.Offset, "nothing committed yet")
	}
	st := a.m.State()
	require.True(t, st.Member)
	require.Equal(t, 4, st.Owned)
	require.Equal(t, 4, st.Total)
	require.NotEmpty(t, st.MemberID)

	ctx := context.Background()
	require.NoError(t, a.m.Commit(ctx, map[TopicPartition]int64{{topic, 0}: 5, {topic, 2}: 7}))
	got, err := a.m.FetchOffsets(ctx, []TopicPartition{{topic, 0}, {topic, 1}, {topic, 2}})
	require.NoError(t, err)
	require.Equal(t, map[TopicPartition]int64{{topic, 0}: 5, {topic, 1}: -1, {topic, 2}: 7}, got)

	require.NoError(t, a.stop())
	require.Len(t, l.revokedOf("a"), 4, "stopping revokes everything")
	require.False(t, a.m.State().Member)

	// A new member (a left the group) resumes from the commits.
	l.start(c, group, topic, "b", false)
	l.waitOwned(map[string]int{"b": 4})
	require.Equal(t, map[int]int64{0: 5, 1: -1, 2: 7, 3: -1}, offsetsOf(l.assigned["b"]))
}

// Cooperative rebalancing: a joining member takes only the partitions that
// move to it; the others keep fetching theirs and are never revoked.
func TestMemberCooperativeRebalanceRevokesOnlyMovedPartitions(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "group-coop", 6)
	group := kafkatest.UniqueName("group-coop")
	l := newLedger(t)
	a := l.start(c, group, topic, "a", false)
	l.waitOwned(map[string]int{"a": 6})

	b := l.start(c, group, topic, "b", false)
	l.waitOwned(map[string]int{"a": 3, "b": 3})
	require.Len(t, l.revokedOf("a"), 3, "a gave up exactly what b took")
	require.ElementsMatch(t, l.revokedOf("a"), l.owned("b"))
	require.Empty(t, l.revokedOf("b"))

	keptA, keptB := l.owned("a"), l.owned("b")
	revA, revB := len(l.revokedOf("a")), len(l.revokedOf("b"))
	l.start(c, group, topic, "c", false)
	l.waitOwned(map[string]int{"a": 2, "b": 2, "c": 2})
	movedA, movedB := l.revokedOf("a")[revA:], l.revokedOf("b")[revB:]
	require.Len(t, movedA, 1, "a revoked only what moved")
	require.Len(t, movedB, 1, "b revoked only what moved")
	require.ElementsMatch(t, append(movedA, movedB...), l.owned("c"))
	require.Subset(t, keptA, l.owned("a"), "a's remaining partitions were never revoked")
	require.Subset(t, keptB, l.owned("b"))
	require.Empty(t, l.lost)

	// Every member holds the same generation, and it is a member.
	ga, gb := a.m.State(), b.m.State()
	require.True(t, ga.Member)
	require.Equal(t, ga.Generation, gb.Generation)
}

// Static membership: a restarted member with the same instance id gets its
// partitions back, and on Apache Kafka without a rebalance (the other
// member is never revoked, the generation does not change).
func TestMemberStaticRestartGetsItsPartitionsBack(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "group-static", 4)
	group := kafkatest.UniqueName("group-static")
	l := newLedger(t)
	a := l.start(c, group, topic, "a", true)
	l.waitOwned(map[string]int{"a": 4})
	b := l.start(c, group, topic, "b", true)
	l.waitOwned(map[string]int{"a": 2, "b": 2})
	// Let the follow-up rebalance settle: both synced the same generation.
	require.Eventually(t, func() bool {
		sa, sb := a.m.State(), b.m.State()
		return sa.Member && sb.Member && sa.Generation == sb.Generation
	}, 30*time.Second, 20*time.Millisecond)
	genBefore := a.m.State().Generation
	partsB := l.owned("b")
	revokedA := len(l.revokedOf("a"))

	require.NoError(t, b.stop())
	require.Empty(t, l.owned("b"))
	b2 := l.start(c, group, topic, "b", true)
	require.Eventually(t, func() bool { return slices.Equal(l.owned("b"), partsB) }, 30*time.Second, 20*time.Millisecond,
		"the restarted static member gets its partitions back")
	require.Equal(t, partsB, l.owned("b"))

	if c.Provider == kafkatest.ProviderKfake {
		// kfake replaces a static member without a rebalance only when its
		// JoinGroup is byte for byte the old one (groups.go sameJoin);
		// Apache Kafka compares the protocol name only. A restarted member
		// no longer lists owned partitions, so kfake rebalances.
		t.Log("kfake rebalances on a static rejoin whose subscription changed: generation not checked")
		return
	}
	require.Equal(t, genBefore, b2.m.State().Generation, "no rebalance: same generation")
	require.Equal(t, genBefore, a.m.State().Generation)
	require.Len(t, l.revokedOf("a"), revokedA, "the other member was not revoked")
}

// A dynamic member that stops leaves the group: the other gets its
// partitions at once, not after a session timeout.
func TestMemberLeaveHandsPartitionsOverAtOnce(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "group-leave", 4)
	group := kafkatest.UniqueName("group-leave")
	l := newLedger(t)
	l.start(c, group, topic, "a", false)
	l.waitOwned(map[string]int{"a": 4})
	b := l.start(c, group, topic, "b", false)
	l.waitOwned(map[string]int{"a": 2, "b": 2})
	start := time.Now()
	require.NoError(t, b.stop())
	l.waitOwned(map[string]int{"a": 4})
	require.Less(t, time.Since(start), 5*time.Second, "well under the 6 s session timeout")
}

// commitRefused answers req with code for every partition it commits.
func commitRefused(req *kmsg.OffsetCommitRequest, code int16) *kmsg.OffsetCommitResponse {
	resp := req.ResponseKind().(*kmsg.OffsetCommitResponse)
	for _, rt := range req.Topics {
		st := kmsg.NewOffsetCommitResponseTopic()
		st.Topic = rt.Topic
		for _, rp := range rt.Partitions {
			sp := kmsg.NewOffsetCommitResponseTopicPartition()
			sp.Partition, sp.ErrorCode = rp.Partition, code
			st.Partitions = append(st.Partitions, sp)
		}
		resp.Topics = append(resp.Topics, st)
	}
	return resp
}

// The coordinator answers NOT_COORDINATOR, then COORDINATOR_LOAD_IN_PROGRESS
// to every heartbeat and commit for 3 s (a coordinator moving): the member
// keeps its id and generation, loses and revokes nothing, and a commit
// issued meanwhile lands once the coordinator is back. kfake only: the
// faults are injected into its request handling.
func TestMemberKeepsItsIDThroughCoordinatorErrors(t *testing.T) {
	c, kc := kafkatest.StartKfake(t, kfake.GroupMinSessionTimeout(time.Second))
	topic := c.CreateTopic(t, "group-faults", 2)
	group := kafkatest.UniqueName("group-faults")
	l := newLedger(t)
	a := l.start(c, group, topic, "a", false)
	l.waitOwned(map[string]int{"a": 2})
	before := a.m.State()

	var mu sync.Mutex
	faulted := map[int16]int{}
	start := time.Now()
	fault := func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		if time.Since(start) > 3*time.Second {
			kc.DropControl()
			return nil, nil, false
		}
		code := kerr.NotCoordinator.Code
		if time.Since(start) > 1500*time.Millisecond {
			code = kerr.CoordinatorLoadInProgress.Code
		}
		mu.Lock()
		faulted[kreq.Key()]++
		mu.Unlock()
		switch req := kreq.(type) {
		case *kmsg.HeartbeatRequest:
			resp := req.ResponseKind().(*kmsg.HeartbeatResponse)
			resp.ErrorCode = code
			return resp, nil, true
		case *kmsg.OffsetCommitRequest:
			return commitRefused(req, code), nil, true
		}
		return nil, nil, false
	}
	kc.ControlKey(int16(kmsg.Heartbeat), fault)
	kc.ControlKey(int16(kmsg.OffsetCommit), fault)

	commitStart := time.Now()
	require.NoError(t, a.m.Commit(context.Background(), map[TopicPartition]int64{{topic, 1}: 42}))
	require.GreaterOrEqual(t, time.Since(commitStart), 2*time.Second, "the commit waited out the faults")
	got, err := a.m.FetchOffsets(context.Background(), []TopicPartition{{topic, 1}})
	require.NoError(t, err)
	require.Equal(t, int64(42), got[TopicPartition{topic, 1}])

	// Heartbeats go through again, in the same generation.
	require.Eventually(t, func() bool { return time.Since(start) > 4*time.Second }, 10*time.Second, 50*time.Millisecond)
	after := a.m.State()
	require.True(t, after.Member)
	require.Equal(t, before.MemberID, after.MemberID)
	require.Equal(t, before.Generation, after.Generation)
	require.Empty(t, l.revokedOf("a"))
	require.Empty(t, l.lost)
	mu.Lock()
	defer mu.Unlock()
	require.Positive(t, faulted[int16(kmsg.Heartbeat)])
	require.Positive(t, faulted[int16(kmsg.OffsetCommit)])
}

// A commit answered REBALANCE_IN_PROGRESS (what a coordinator answers
// between a generation's JoinGroup and SyncGroup) waits for the rebalance to
// settle and is redone with the new generation: the member is not lost, and
// the offset is committed.
func TestMemberRedoesACommitRefusedDuringARebalanceInTheNextGeneration(t *testing.T) {
	c, kc := kafkatest.StartKfake(t, kfake.GroupMinSessionTimeout(time.Second))
	topic := c.CreateTopic(t, "group-commit-rebalance", 2)
	group := kafkatest.UniqueName("group-commit-rebalance")
	l := newLedger(t)
	a := l.start(c, group, topic, "a", false)
	l.waitOwned(map[string]int{"a": 2})
	before := a.m.State()

	// Every commit of a's first generation is refused as a rebalance in
	// progress; later generations' commits go through.
	var mu sync.Mutex
	var refused, passed []int32
	kc.ControlKey(int16(kmsg.OffsetCommit), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		kc.KeepControl()
		req := kreq.(*kmsg.OffsetCommitRequest)
		mu.Lock()
		defer mu.Unlock()
		if req.Group != group || int(req.Generation) != before.Generation {
			if req.Group == group {
				passed = append(passed, req.Generation)
			}
			return nil, nil, false
		}
		refused = append(refused, req.Generation)
		return commitRefused(req, kerr.RebalanceInProgress.Code), nil, true
	})

	committed := make(chan error, 1)
	go func() {
		committed <- a.m.Commit(context.Background(), map[TopicPartition]int64{{topic, 0}: 42, {topic, 1}: 43})
	}()
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(refused) > 0
	}, 10*time.Second, 10*time.Millisecond, "the commit never reached the broker")
	// The rebalance the refusal announced: a second member joins.
	l.start(c, group, topic, "b", false)
	l.waitOwned(map[string]int{"a": 1, "b": 1})
	select {
	case err := <-committed:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("the commit did not finish after the rebalance")
	}

	got, err := a.m.FetchOffsets(context.Background(), []TopicPartition{{topic, 0}, {topic, 1}})
	require.NoError(t, err)
	require.Equal(t, map[TopicPartition]int64{{topic, 0}: 42, {topic, 1}: 43}, got)
	after := a.m.State()
	require.Equal(t, before.MemberID, after.MemberID, "a kept its member id")
	require.Greater(t, after.Generation, before.Generation)
	require.Empty(t, l.lost, "nothing lost")
	mu.Lock()
	defer mu.Unlock()
	require.NotEmpty(t, passed, "the commit went through in a later generation")
	require.Greater(t, int(passed[0]), before.Generation)
}

// Two processes with one instance id: the older one is fenced, stops with
// ErrFenced and hands its partitions to Lost (never to Revoked: it may not
// commit for partitions another process now owns).
func TestMemberFencedByTheSameInstanceID(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "group-fenced", 2)
	group := kafkatest.UniqueName("group-fenced")
	l1, l2 := newLedger(t), newLedger(t)
	a := l1.start(c, group, topic, "x", true)
	l1.waitOwned(map[string]int{"x": 2})
	l2.start(c, group, topic, "x", true)
	l2.waitOwned(map[string]int{"x": 2})
	require.Eventually(t, func() bool { return a.m.State().Reason == "stopped" }, 30*time.Second, 20*time.Millisecond,
		"the older process stops once fenced")
	err := a.stop()
	require.ErrorIs(t, err, ErrFenced)
	require.Len(t, l1.lost["x"], 2)
	require.Empty(t, l1.revokedOf("x"))
}
