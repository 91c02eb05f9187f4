package group

import (
	"cmp"
	"encoding/binary"
	"errors"
	"slices"

	"github.com/segmentio/kafka-go/protocol/consumer"
)

// Protocol is the assignment protocol members prefer: cooperative
// incremental rebalancing (KIP-429) with a sticky assignor, under the name
// the Java client and franz-go use for the same contract.
const Protocol = "cooperative-sticky"

// RangeProtocol is the fallback members also offer, second: eager
// rebalancing with the range assignor, which kafka-go's ConsumerGroup
// (default GroupBalancers: range, roundrobin) and the Java client share.
// The coordinator picks it only while a member that lacks
// cooperative-sticky is in the group (a replica of a release built on
// kafka-go's ConsumerGroup, during a rolling update); see DESIGN.md.
const RangeProtocol = "range"

// TopicPartition names one partition.
type TopicPartition struct {
	Topic     string
	Partition int
}

func comparePartitions(a, b TopicPartition) int {
	return cmp.Or(cmp.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
}

// Subscription is what one member told the leader in its JoinGroup.
type Subscription struct {
	MemberID string
	Topics   []string
	// Owned are the partitions the member holds now, and Generation the
	// generation it was given them in (-1 when it owns none or is new).
	Owned      []TopicPartition
	Generation int
}

// userData is the subscription's UserData: a version byte and the member's
// generation, big-endian, so the leader can settle two claims on one
// partition (a zombie that missed a generation still lists what it had).
func userData(generation int) []byte {
	b := make([]byte, 5)
	b[0] = 0
	binary.BigEndian.PutUint32(b[1:], uint32(int32(generation)))
	return b
}

func parseUserData(b []byte) int {
	if len(b) < 5 || b[0] > 1 {
		return -1
	}
	return int(int32(binary.BigEndian.Uint32(b[1:])))
}

// Assign is the leader's cooperative sticky assignment of the partitions
// (topic → partition count) to the members.
//
// Rules, in order:
//   - A partition is claimed by the member that lists it as owned with the
//     highest generation; a tie (two members claiming it in the same
//     generation, which a correct group never produces) leaves it unclaimed.
//   - Every member keeps its claimed partitions up to its fair quota:
//     ⌊P/M⌋, or ⌈P/M⌉ for the first P mod M members that have that many.
//   - Free partitions (unclaimed, above a quota, or new) go one by one to
//     the member with the fewest partitions, members in ID order.
//   - A partition that a winning (or tied) claimant other than its new owner
//     holds is withheld: it is in no assignment this generation. Its claimants see it missing, revoke it
//     and rejoin at once, and the next generation assigns it. So no
//     partition is ever held by two members at once.
//
// Members only get partitions of topics they subscribe to; the quotas are
// exact when all members subscribe to the same topics (ampstream's case).
// The result maps every member ID (even those given nothing) to its
// partitions, sorted.
func Assign(members []Subscription, partitions map[string]int) map[string][]TopicPartition {
	ms := slices.Clone(members)
	slices.SortFunc(ms, func(a, b Subscription) int { return cmp.Compare(a.MemberID, b.MemberID) })
	subscribed := make(map[string]map[string]bool, len(ms))
	all := map[TopicPartition]bool{}
	for _, m := range ms {
		s := map[string]bool{}
		for _, t := range m.Topics {
			s[t] = true
			for p := range partitions[t] {
				all[TopicPartition{t, p}] = true
			}
		}
		subscribed[m.MemberID] = s
	}

	// Claims: the highest generation wins; every claimant is remembered.
	// A lower generation's claim is a zombie's: the member is told to drop
	// it by its own assignment, and it does not hold the partition back.
	type claim struct {
		owner      string   // "" when tied
		top        []string // the claimants at the highest generation
		generation int
	}
	claims := map[TopicPartition]*claim{}
	for _, m := range ms {
		for _, tp := range m.Owned {
			if !all[tp] || !subscribed[m.MemberID][tp.Topic] {
				continue
			}
			c := claims[tp]
			switch {
			case c == nil:
				claims[tp] = &claim{m.MemberID, []string{m.MemberID}, m.Generation}
			case m.Generation > c.generation:
				c.owner, c.top, c.generation = m.MemberID, []string{m.MemberID}, m.Generation
			case m.Generation == c.generation && !slices.Contains(c.top, m.MemberID):
				c.owner, c.top = "", append(c.top, m.MemberID)
			}
		}
	}

	out := make(map[string][]TopicPartition, len(ms))
	if len(ms) == 0 {
		return out
	}
	minQuota, extra := len(all)/len(ms), len(all)%len(ms)

	// Keep: claimed partitions up to ⌊P/M⌋, then one more for members that
	// have it while ⌈P/M⌉ slots remain.
	taken := map[TopicPartition]bool{}
	kept := make(map[string][]TopicPartition, len(ms))
	for _, m := range ms {
		var own []TopicPartition
		for _, tp := range m.Owned {
			if c := claims[tp]; c != nil && c.owner == m.MemberID && !taken[tp] {
				own = append(own, tp)
				taken[tp] = true // a member listing a partition twice keeps it once
			}
		}
		slices.SortFunc(own, comparePartitions)
		kept[m.MemberID] = own
	}
	for _, m := range ms {
		own := kept[m.MemberID]
		n := min(len(own), minQuota)
		if len(own) > minQuota && extra > 0 {
			n++
			extra--
		}
		out[m.MemberID] = slices.Clone(own[:n])
	}
	assigned := map[TopicPartition]bool{}
	for _, tps := range out {
		for _, tp := range tps {
			assigned[tp] = true
		}
	}

	// Free partitions to the least loaded subscribed member.
	free := make([]TopicPartition, 0, len(all))
	for tp := range all {
		if !assigned[tp] {
			free = append(free, tp)
		}
	}
	slices.SortFunc(free, comparePartitions)
	for _, tp := range free {
		best := ""
		for _, m := range ms {
			if subscribed[m.MemberID][tp.Topic] && (best == "" || len(out[m.MemberID]) < len(out[best])) {
				best = m.MemberID
			}
		}
		if best != "" {
			out[best] = append(out[best], tp)
		}
	}

	// Withhold partitions that move: someone else still holds them.
	for id, tps := range out {
		tps = slices.DeleteFunc(tps, func(tp TopicPartition) bool {
			c := claims[tp]
			return c != nil && slices.ContainsFunc(c.top, func(m string) bool { return m != id })
		})
		slices.SortFunc(tps, comparePartitions)
		out[id] = tps
	}
	return out
}

// rangeUserData is the range subscription's UserData: version byte 1, the
// generation, and the owned partitions (the ConsumerProtocol
// owned-partitions array). The range metadata itself has no room for them
// (see joinProtocols); kafka-go's range balancer ignores UserData.
func rangeUserData(generation int, owned []TopicPartition) []byte {
	b := userData(generation)
	b[0] = 1
	topics := byTopic(owned)
	b = binary.BigEndian.AppendUint32(b, uint32(len(topics)))
	for _, t := range topics {
		b = binary.BigEndian.AppendUint16(b, uint16(len(t.Topic)))
		b = append(b, t.Topic...)
		b = binary.BigEndian.AppendUint32(b, uint32(len(t.Partitions)))
		for _, p := range t.Partitions {
			b = binary.BigEndian.AppendUint32(b, uint32(p))
		}
	}
	return b
}

// byTopic groups partitions sorted by topic into the ConsumerProtocol's
// owned-partitions array.
func byTopic(tps []TopicPartition) []consumer.TopicPartition {
	var out []consumer.TopicPartition
	for _, tp := range tps {
		if n := len(out); n > 0 && out[n-1].Topic == tp.Topic {
			out[n-1].Partitions = append(out[n-1].Partitions, int32(tp.Partition))
			continue
		}
		out = append(out, consumer.TopicPartition{Topic: tp.Topic, Partitions: []int32{int32(tp.Partition)}})
	}
	return out
}

// withholdClaimed removes from every member's plan the partitions another
// member (the leader included) listed as owned when it joined. In a range
// generation this only happens when cooperative members joined it still
// owning partitions (a member without cooperative-sticky joined their
// group): they keep what they own until their SyncGroup, then revoke what
// they were not assigned and rejoin, and the next generation assigns what
// was withheld.
func withholdClaimed(plan map[string][]TopicPartition, members []Subscription) map[string][]TopicPartition {
	claimants := map[TopicPartition][]string{}
	for _, m := range members {
		for _, tp := range m.Owned {
			claimants[tp] = append(claimants[tp], m.MemberID)
		}
	}
	for id, tps := range plan {
		plan[id] = slices.DeleteFunc(tps, func(tp TopicPartition) bool {
			return slices.ContainsFunc(claimants[tp], func(c string) bool { return c != id })
		})
	}
	return plan
}

// AssignRange is the leader's range assignment (Kafka's RangeAssignor):
// per topic, its partitions in order are cut into contiguous ranges over
// the members subscribed to it, sorted by member ID; the first P mod M
// members get one partition more. Ownership plays no part: in the range
// protocol every member revokes everything before it rejoins. The result
// maps every member ID to its partitions, sorted.
func AssignRange(members []Subscription, partitions map[string]int) map[string][]TopicPartition {
	out := make(map[string][]TopicPartition, len(members))
	byTopic := map[string][]string{}
	for _, m := range members {
		out[m.MemberID] = nil
		for _, t := range m.Topics {
			if !slices.Contains(byTopic[t], m.MemberID) {
				byTopic[t] = append(byTopic[t], m.MemberID)
			}
		}
	}
	for topic, ids := range byTopic {
		slices.Sort(ids)
		n := partitions[topic]
		quota, extra := n/len(ids), n%len(ids)
		next := 0
		for i, id := range ids {
			k := quota
			if i < extra {
				k++
			}
			for p := next; p < next+k; p++ {
				out[id] = append(out[id], TopicPartition{topic, p})
			}
			next += k
		}
	}
	for _, tps := range out {
		slices.SortFunc(tps, comparePartitions)
	}
	return out
}

// errShortSubscription: member metadata that ends before its fields do.
var errShortSubscription = errors.New("consumer protocol subscription: truncated")

// decodeSubscription reads a ConsumerProtocol subscription (the JoinGroup
// member metadata) of any version: version, topics, user data and, from
// version 1 on, owned partitions when present. kafka-go's ConsumerGroup
// sends version 1 without owned partitions, and later Java versions append
// fields (generation, rack) this member does not use: both are accepted,
// which protocol.Unmarshal at one fixed version is not.
func decodeSubscription(memberID string, b []byte) (Subscription, error) {
	s := Subscription{MemberID: memberID, Generation: -1}
	r := &reader{b: b}
	version := r.int16()
	nTopics := r.int32()
	for i := int32(0); i < nTopics && r.err == nil; i++ {
		s.Topics = append(s.Topics, r.string())
	}
	userData := r.bytes()
	if r.err != nil {
		return s, r.err
	}
	s.Generation = parseUserData(userData)
	if len(userData) > 5 && userData[0] == 1 {
		// This member's range metadata: the owned partitions are in the
		// user data.
		ur := &reader{b: userData[5:]}
		if s.Owned = ur.owned(); ur.err != nil {
			return s, ur.err
		}
	}
	if version < 1 || len(r.b) == 0 {
		return s, nil
	}
	s.Owned = append(s.Owned, r.owned()...)
	return s, r.err
}

// owned reads a ConsumerProtocol owned-partitions array.
func (r *reader) owned() []TopicPartition {
	var out []TopicPartition
	n := r.int32()
	for i := int32(0); i < n && r.err == nil; i++ {
		topic := r.string()
		k := r.int32()
		for j := int32(0); j < k && r.err == nil; j++ {
			out = append(out, TopicPartition{topic, int(r.int32())})
		}
	}
	return out
}

// reader decodes big-endian Kafka primitives, remembering the first error.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.err = errShortSubscription
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) int16() int16 {
	if b := r.take(2); b != nil {
		return int16(binary.BigEndian.Uint16(b))
	}
	return 0
}

func (r *reader) int32() int32 {
	if b := r.take(4); b != nil {
		return int32(binary.BigEndian.Uint32(b))
	}
	return 0
}

func (r *reader) string() string {
	return string(r.take(int(r.int16())))
}

func (r *reader) bytes() []byte {
	n := r.int32()
	if n < 0 || r.err != nil {
		return nil // null
	}
	return r.take(int(n))
}
