package group

import (
	"fmt"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

func tps(topic string, ps ...int) []TopicPartition {
	out := make([]TopicPartition, len(ps))
	for i, p := range ps {
		out[i] = TopicPartition{topic, p}
	}
	return out
}

// checkDisjoint: no partition is in two members' assignments.
func checkDisjoint(t *testing.T, plan map[string][]TopicPartition) {
	t.Helper()
	seen := map[TopicPartition]string{}
	for id, ps := range plan {
		for _, tp := range ps {
			other, dup := seen[tp]
			require.False(t, dup, "%v assigned to %s and %s", tp, other, id)
			seen[tp] = id
		}
	}
}

// round runs rebalances the way members do until the assignment is
// stable: each member keeps what it was assigned (revoking the rest), and
// rejoins with it. It returns the stable plan and every round's plan.
func round(t *testing.T, subs []Subscription, counts map[string]int) (map[string][]TopicPartition, []map[string][]TopicPartition) {
	t.Helper()
	var plans []map[string][]TopicPartition
	gen := 10
	for range 5 {
		gen++
		plan := Assign(subs, counts)
		checkDisjoint(t, plan)
		plans = append(plans, plan)
		changed := false
		for i := range subs {
			if fmt.Sprint(subs[i].Owned) != fmt.Sprint(plan[subs[i].MemberID]) {
				changed = true
			}
			subs[i].Owned, subs[i].Generation = plan[subs[i].MemberID], gen
		}
		if !changed {
			return plan, plans
		}
	}
	t.Fatalf("no stable assignment after 5 rounds: %v", plans)
	return nil, nil
}

func TestAssignFreshGroupIsBalanced(t *testing.T) {
	subs := []Subscription{
		{MemberID: "b", Topics: []string{"t"}, Generation: -1},
		{MemberID: "a", Topics: []string{"t"}, Generation: -1},
		{MemberID: "c", Topics: []string{"t"}, Generation: -1},
	}
	plan := Assign(subs, map[string]int{"t": 8})
	checkDisjoint(t, plan)
	require.Equal(t, map[string][]TopicPartition{
		"a": tps("t", 0, 3, 6), "b": tps("t", 1, 4, 7), "c": tps("t", 2, 5),
	}, plan)
}

func TestAssignKeepsOwnedPartitions(t *testing.T) {
	subs := []Subscription{
		{MemberID: "a", Topics: []string{"t"}, Owned: tps("t", 1, 3), Generation: 4},
		{MemberID: "b", Topics: []string{"t"}, Owned: tps("t", 0, 2), Generation: 4},
	}
	require.Equal(t, map[string][]TopicPartition{"a": tps("t", 1, 3), "b": tps("t", 0, 2)},
		Assign(subs, map[string]int{"t": 4}))
}

// A third member joins: only the partitions that move leave their owners,
// they are withheld for one generation, and the next one gives them to the
// new member; nothing the old members keep ever leaves them.
func TestAssignNewMemberMovedPartitionsWithheldOneRound(t *testing.T) {
	subs := []Subscription{
		{MemberID: "a", Topics: []string{"t"}, Owned: tps("t", 0, 1, 2), Generation: 7},
		{MemberID: "b", Topics: []string{"t"}, Owned: tps("t", 3, 4, 5), Generation: 7},
		{MemberID: "c", Topics: []string{"t"}, Generation: -1},
	}
	first := Assign(subs, map[string]int{"t": 6})
	require.Equal(t, map[string][]TopicPartition{"a": tps("t", 0, 1), "b": tps("t", 3, 4), "c": nil}, nilEmpty(first),
		"partitions 2 and 5 move: withheld while a and b still hold them")

	stable, plans := round(t, subs, map[string]int{"t": 6})
	require.Len(t, plans, 3, "withheld round, assigning round, confirming round")
	require.Equal(t, map[string][]TopicPartition{"a": tps("t", 0, 1), "b": tps("t", 3, 4), "c": tps("t", 2, 5)}, stable)
	for _, p := range plans {
		require.Subset(t, p["a"], tps("t", 0, 1), "a never loses what it keeps")
		require.Subset(t, p["b"], tps("t", 3, 4))
	}
}

func TestAssignMemberLeavesItsPartitionsSpread(t *testing.T) {
	subs := []Subscription{
		{MemberID: "a", Topics: []string{"t"}, Owned: tps("t", 0, 1), Generation: 3},
		{MemberID: "c", Topics: []string{"t"}, Owned: tps("t", 4, 5), Generation: 3},
	}
	plan := Assign(subs, map[string]int{"t": 6}) // b, which held 2 and 3, is gone
	checkDisjoint(t, plan)
	require.Equal(t, map[string][]TopicPartition{"a": tps("t", 0, 1, 2), "c": tps("t", 3, 4, 5)}, plan,
		"free partitions are not withheld: nobody holds them")
}

func TestAssignOverQuotaOwnerKeepsUpToQuota(t *testing.T) {
	subs := []Subscription{
		{MemberID: "a", Topics: []string{"t"}, Owned: tps("t", 0, 1, 2, 3, 4), Generation: 2},
		{MemberID: "b", Topics: []string{"t"}, Generation: -1},
	}
	stable, _ := round(t, subs, map[string]int{"t": 5})
	require.Equal(t, tps("t", 0, 1, 2), stable["a"])
	require.Equal(t, tps("t", 3, 4), stable["b"])
}

// A zombie that missed a generation still lists a partition: the claim of
// the higher generation wins and the partition stays where it is.
func TestAssignConflictingClaimsHigherGenerationWins(t *testing.T) {
	subs := []Subscription{
		{MemberID: "a", Topics: []string{"t"}, Owned: tps("t", 0, 1), Generation: 5}, // zombie
		{MemberID: "b", Topics: []string{"t"}, Owned: tps("t", 1, 2), Generation: 6},
		{MemberID: "c", Topics: []string{"t"}, Owned: tps("t", 3), Generation: 6},
	}
	plan := Assign(subs, map[string]int{"t": 4})
	checkDisjoint(t, plan)
	require.Contains(t, plan["b"], TopicPartition{"t", 1}, "the newer claim keeps partition 1")
	require.NotContains(t, plan["a"], TopicPartition{"t", 1})
}

// Two claims in the same generation: neither keeps it, and nobody else gets
// it until both have let go.
func TestAssignTiedClaimsWithheld(t *testing.T) {
	subs := []Subscription{
		{MemberID: "a", Topics: []string{"t"}, Owned: tps("t", 0, 1), Generation: 6},
		{MemberID: "b", Topics: []string{"t"}, Owned: tps("t", 1, 2), Generation: 6},
		{MemberID: "c", Topics: []string{"t"}, Owned: tps("t", 3), Generation: 6},
	}
	plan := Assign(subs, map[string]int{"t": 4})
	checkDisjoint(t, plan)
	for id, ps := range plan {
		require.NotContains(t, ps, TopicPartition{"t", 1}, "member %s", id)
	}
	stable, _ := round(t, subs, map[string]int{"t": 4})
	n := 0
	for _, ps := range stable {
		n += len(ps)
		require.LessOrEqual(t, len(ps), 2)
		require.GreaterOrEqual(t, len(ps), 1)
	}
	require.Equal(t, 4, n)
}

func TestAssignIgnoresVanishedPartitionsAndUnsubscribedTopics(t *testing.T) {
	subs := []Subscription{
		{MemberID: "a", Topics: []string{"t"}, Owned: append(tps("t", 0, 9), tps("u", 0)...), Generation: 1},
	}
	require.Equal(t, map[string][]TopicPartition{"a": tps("t", 0, 1)}, Assign(subs, map[string]int{"t": 2, "u": 1}))
}

func TestAssignBalancedAndDisjointForManyShapes(t *testing.T) {
	for members := 1; members <= 6; members++ {
		for parts := 0; parts <= 13; parts++ {
			subs := make([]Subscription, members)
			for i := range subs {
				subs[i] = Subscription{MemberID: fmt.Sprintf("m%d", i), Topics: []string{"t"}, Generation: -1}
			}
			// Skewed start: the first member owns everything.
			for p := range parts {
				subs[0].Owned = append(subs[0].Owned, TopicPartition{"t", p})
			}
			subs[0].Generation = 1
			stable, _ := round(t, subs, map[string]int{"t": parts})
			lo, hi, n := parts, 0, 0
			for _, ps := range stable {
				lo, hi, n = min(lo, len(ps)), max(hi, len(ps)), n+len(ps)
			}
			require.Equal(t, parts, n, "%d members, %d partitions", members, parts)
			require.LessOrEqual(t, hi-lo, 1, "%d members, %d partitions: %v", members, parts, stable)
		}
	}
}

func TestUserDataRoundTrip(t *testing.T) {
	for _, g := range []int{-1, 0, 7, 1 << 30} {
		require.Equal(t, g, parseUserData(userData(g)))
		require.Equal(t, g, parseUserData(rangeUserData(g, tps("t", 1))))
	}
	require.Equal(t, -1, parseUserData(nil))
	require.Equal(t, -1, parseUserData([]byte{2, 0, 0, 0, 1}), "unknown version")
}

func nilEmpty(plan map[string][]TopicPartition) map[string][]TopicPartition {
	for id, ps := range plan {
		if len(ps) == 0 {
			plan[id] = nil
		}
	}
	return plan
}

func TestAssignRangeCutsContiguousRangesPerTopic(t *testing.T) {
	subs := []Subscription{
		{MemberID: "c", Topics: []string{"t", "u"}},
		{MemberID: "a", Topics: []string{"t", "u"}, Owned: tps("t", 7), Generation: 3}, // ownership plays no part
		{MemberID: "b", Topics: []string{"t"}},
	}
	plan := AssignRange(subs, map[string]int{"t": 8, "u": 3, "x": 4})
	checkDisjoint(t, plan)
	require.Equal(t, map[string][]TopicPartition{
		// t: 8 over a, b, c → 3, 3, 2; u: 3 over a, c → 2, 1; x: nobody subscribes.
		"a": append(tps("t", 0, 1, 2), tps("u", 0, 1)...),
		"b": tps("t", 3, 4, 5),
		"c": append(tps("t", 6, 7), tps("u", 2)...),
	}, plan)

	// More members than partitions: the last ones get nothing, but are in
	// the plan.
	plan = AssignRange([]Subscription{{MemberID: "b", Topics: []string{"t"}}, {MemberID: "a", Topics: []string{"t"}},
		{MemberID: "c", Topics: []string{"t"}}}, map[string]int{"t": 2})
	require.Equal(t, map[string][]TopicPartition{"a": tps("t", 0), "b": tps("t", 1), "c": nil}, plan)
	require.Empty(t, AssignRange(nil, map[string]int{"t": 2}))
}

// The member metadata of every sender the leader may meet decodes:
// kafka-go's ConsumerGroup (version 1 without owned partitions), this
// member's range (version 0) and cooperative (version 1) metadata, and a
// later Java version's (trailing generation and rack).
func TestDecodeSubscriptionOfEverySender(t *testing.T) {
	kafkaGo := []byte{0, 1, 0, 0, 0, 1, 0, 1, 't', 0xff, 0xff, 0xff, 0xff} // version 1, ["t"], null user data
	s, err := decodeSubscription("k", kafkaGo)
	require.NoError(t, err)
	require.Equal(t, Subscription{MemberID: "k", Topics: []string{"t"}, Generation: -1}, s)

	owned := []TopicPartition{{"t", 1}, {"t", 3}, {"u", 0}}
	ps, err := joinProtocols([]string{"t", "u"}, 7, owned)
	require.NoError(t, err)
	require.Equal(t, []string{Protocol, RangeProtocol}, []string{ps[0].Name, ps[1].Name})
	for _, p := range ps {
		s, err = decodeSubscription("m", p.Metadata)
		require.NoError(t, err)
		require.Equal(t, Subscription{MemberID: "m", Topics: []string{"t", "u"}, Generation: 7, Owned: owned}, s, p.Name)
	}
	// kafka-go's ConsumerGroup leader requires the range metadata to end
	// right after the user data: version 0, topics, user data (which
	// carries the owned partitions).
	ud := []byte{1, 0, 0, 0, 7, 0, 0, 0, 2, 0, 1, 't', 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 1, 'u', 0, 0, 0, 1, 0, 0, 0, 0}
	require.Equal(t, ud, rangeUserData(7, owned))
	want := append([]byte{0, 0, 0, 0, 0, 2, 0, 1, 't', 0, 1, 'u', 0, 0, 0, byte(len(ud))}, ud...)
	require.Equal(t, want, ps[1].Metadata)

	java := append(slices.Clone(ps[0].Metadata), 0, 0, 0, 7, 0xff, 0xff) // + generation, null rack
	java[1] = 3
	s, err = decodeSubscription("j", java)
	require.NoError(t, err)
	require.Len(t, s.Owned, 3)

	_, err = decodeSubscription("x", kafkaGo[:7])
	require.ErrorIs(t, err, errShortSubscription)
}

// A range generation that finds members still owning partitions (they were
// cooperative) hands none of them to another member, the leader's included:
// the owners revoke after their SyncGroup, rejoin, and the next generation
// assigns them.
func TestWithholdClaimedKeepsOwnedPartitionsFromOthers(t *testing.T) {
	subs := []Subscription{
		{MemberID: "a", Topics: []string{"t"}, Owned: tps("t", 2), Generation: 4}, // the leader
		{MemberID: "b", Topics: []string{"t"}, Owned: tps("t", 0, 4), Generation: 4},
		{MemberID: "old", Topics: []string{"t"}, Generation: -1},
	}
	plan := withholdClaimed(AssignRange(subs, map[string]int{"t": 6}), subs)
	// Range: a 0 1, b 2 3, old 4 5; b's 0 and 4 are withheld from a and
	// old, a's 2 from b.
	require.Equal(t, map[string][]TopicPartition{"a": tps("t", 1), "b": tps("t", 3), "old": tps("t", 5)}, plan)
}
