package kafkatest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestHelpersRoundTrip(t *testing.T) {
	t.Parallel()
	c := Start(t)
	topic := c.CreateTopic(t, t.Name(), 3)
	if !strings.HasPrefix(topic, "TestHelpersRoundTrip-") {
		t.Fatalf("topic %q: want the cleaned prefix and a suffix", topic)
	}
	if other := c.CreateTopic(t, t.Name(), 1); other == topic {
		t.Fatalf("two CreateTopic calls returned the same name %q", topic)
	}

	group := UniqueName("group")
	if got, want := c.CommittedOffsets(t, group, topic), map[int]int64{0: -1, 1: -1, 2: -1}; !equalOffsets(got, want) {
		t.Fatalf("committed offsets of a new group = %v, want %v", got, want)
	}
	if got, want := c.EndOffsets(t, topic), map[int]int64{0: 0, 1: 0, 2: 0}; !equalOffsets(got, want) {
		t.Fatalf("end offsets of an empty topic = %v, want %v", got, want)
	}
	if got := c.ReadAll(t, topic); len(got) != 0 {
		t.Fatalf("ReadAll of an empty topic returned %d messages", len(got))
	}

	var msgs []kafka.Message
	for i := range 30 {
		msgs = append(msgs, kafka.Message{
			Key:     fmt.Appendf(nil, "user-%d", i%7),
			Value:   fmt.Appendf(nil, "v%d", i),
			Headers: []kafka.Header{{Key: "n", Value: fmt.Appendf(nil, "%d", i)}},
		})
	}
	c.Produce(t, topic, msgs...)
	c.ProduceToPartition(t, topic, 2, kafka.Message{Value: []byte("pinned-1")}, kafka.Message{Value: []byte("pinned-2")})

	ends := c.EndOffsets(t, topic)
	total := int64(0)
	for _, o := range ends {
		total += o
	}
	if total != 32 {
		t.Fatalf("end offsets %v add up to %d, want 32", ends, total)
	}

	got := c.ReadAll(t, topic)
	if len(got) != 32 {
		t.Fatalf("ReadAll returned %d messages, want 32", len(got))
	}
	keyPartition := map[string]int{}
	values := map[string]bool{}
	for i, m := range got {
		if i > 0 {
			prev := got[i-1]
			if m.Partition < prev.Partition || (m.Partition == prev.Partition && m.Offset != prev.Offset+1) {
				t.Fatalf("message %d at %d/%d follows %d/%d: want partitions ascending, offsets consecutive", i, m.Partition, m.Offset, prev.Partition, prev.Offset)
			}
		}
		values[string(m.Value)] = true
		if len(m.Key) == 0 {
			if m.Partition != 2 {
				t.Fatalf("pinned message %q on partition %d, want 2", m.Value, m.Partition)
			}
			continue
		}
		if p, ok := keyPartition[string(m.Key)]; ok && p != m.Partition {
			t.Fatalf("key %q on partitions %d and %d: murmur2 must be consistent", m.Key, p, m.Partition)
		}
		keyPartition[string(m.Key)] = m.Partition
		if len(m.Headers) != 1 || m.Headers[0].Key != "n" || "v"+string(m.Headers[0].Value) != string(m.Value) {
			t.Fatalf("message %q has headers %v, want n=<its number>", m.Value, m.Headers)
		}
	}
	if len(values) != 32 {
		t.Fatalf("ReadAll returned %d distinct values, want 32", len(values))
	}
	// murmur2 of "user-0".."user-6" over 3 partitions (the Java client's placement).
	want := map[string]int{}
	for i := range 7 {
		k := fmt.Sprintf("user-%d", i)
		want[k] = (&kafka.Murmur2Balancer{Consistent: true}).Balance(kafka.Message{Key: []byte(k)}, 0, 1, 2)
	}
	for k, p := range want {
		if keyPartition[k] != p {
			t.Fatalf("key %q on partition %d, want %d (murmur2)", k, keyPartition[k], p)
		}
	}
}

func TestUniqueNameIsLegal(t *testing.T) {
	t.Parallel()
	for _, prefix := range []string{"", "Test/sub case #1", strings.Repeat("x", 300)} {
		n := UniqueName(prefix)
		if len(n) > 249 {
			t.Errorf("UniqueName(%.20q...) has %d characters, Kafka allows 249", prefix, len(n))
		}
		for _, r := range n {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
				t.Errorf("UniqueName(%.20q) = %q contains %q", prefix, n, r)
			}
		}
	}
	if UniqueName("a") == UniqueName("a") {
		t.Error("UniqueName returned the same name twice")
	}
}

func equalOffsets(a, b map[int]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
