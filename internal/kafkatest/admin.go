package kafkatest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// opTimeout bounds every helper call. A real broker answers in milliseconds; the margin is for
// a loaded 2-core CI machine and the first __consumer_offsets creation.
const opTimeout = 30 * time.Second

// client returns a kafka-go client on its own transport. Closing the transport afterwards
// stops its metadata goroutine and connections; the shared kafka.DefaultTransport would keep
// them alive after the test and trip goroutine-leak checks. A fresh transport also means fresh
// metadata: kafka-go otherwise answers Metadata requests from a cache refreshed every 6 s.
func (c *Cluster) client() (*kafka.Client, func()) {
	tr := &kafka.Transport{ClientID: "kafkatest"}
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: opTimeout, Transport: tr}, tr.CloseIdleConnections
}

// CreateTopic creates a uniquely named topic (prefix + random suffix) with n partitions and
// returns its name once every partition has a leader, so the next produce or fetch does not
// race the broker's metadata propagation.
func (c *Cluster) CreateTopic(t testing.TB, prefix string, partitions int) string {
	t.Helper()
	if partitions < 1 {
		t.Fatalf("kafkatest: CreateTopic(%q, %d): need at least one partition", prefix, partitions)
	}
	name := uniqueName(prefix)
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cl, closeFn := c.client()
	defer closeFn()
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: 1,
	}}})
	if err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", name, err)
	}
	if err := resp.Errors[name]; err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", name, err)
	}
	if err := c.waitForLeaders(ctx, name, partitions); err != nil {
		t.Fatalf("kafkatest: topic %s: %v", name, err)
	}
	return name
}

func (c *Cluster) waitForLeaders(ctx context.Context, topic string, partitions int) error {
	var last error
	for {
		n, err := c.leaders(ctx, topic)
		if err == nil && n == partitions {
			return nil
		}
		last = err
		if last == nil {
			last = fmt.Errorf("%d of %d partitions have a leader", n, partitions)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for partition leaders: %w", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// leaders asks a broker directly (kafka.Conn, no metadata cache) how many partitions of topic
// have a leader.
func (c *Cluster) leaders(ctx context.Context, topic string) (int, error) {
	conn, err := kafka.DialContext(ctx, "tcp", c.Brokers[0])
	if err != nil {
		return 0, fmt.Errorf("dial %s: %w", c.Brokers[0], err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if err != nil {
		return 0, fmt.Errorf("read partitions: %w", err)
	}
	n := 0
	for _, p := range parts {
		if p.Leader.Host != "" && p.Leader.ID >= 0 {
			n++
		}
	}
	return n, nil
}

// uniqueName keeps the prefix readable in broker logs and makes it a legal topic/group name
// (t.Name() contains '/'); the random suffix keeps tests on a shared broker apart.
func uniqueName(prefix string) string {
	clean := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		default:
			return '-'
		}
	}, prefix)
	if len(clean) > 200 {
		clean = clean[:200]
	}
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥1.24)
	if clean == "" {
		return hex.EncodeToString(b[:])
	}
	return clean + "-" + hex.EncodeToString(b[:])
}

// UniqueName returns prefix plus a random suffix, cleaned to characters legal in topic and
// group names. Use it for consumer group IDs so tests sharing a broker do not join each
// other's groups.
func UniqueName(prefix string) string { return uniqueName(prefix) }

// Produce writes messages (key, value, headers) synchronously, partitioned by key with
// kafka.Murmur2Balancer{Consistent: true} (the Java client's and franz-go's partitioner, which
// ampstream uses too). Message.Topic and Message.Partition are ignored; use
// ProduceToPartition to choose the partition.
func (c *Cluster) Produce(t testing.TB, topic string, msgs ...kafka.Message) {
	t.Helper()
	if err := c.produce(topic, &kafka.Murmur2Balancer{Consistent: true}, msgs); err != nil {
		t.Fatalf("kafkatest: produce %d messages to %s: %v", len(msgs), topic, err)
	}
}

// ProduceToPartition writes messages synchronously to one partition.
func (c *Cluster) ProduceToPartition(t testing.TB, topic string, partition int, msgs ...kafka.Message) {
	t.Helper()
	fixed := kafka.BalancerFunc(func(kafka.Message, ...int) int { return partition })
	if err := c.produce(topic, fixed, msgs); err != nil {
		t.Fatalf("kafkatest: produce %d messages to %s/%d: %v", len(msgs), topic, partition, err)
	}
}

func (c *Cluster) produce(topic string, balancer kafka.Balancer, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	out := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		m.Topic = "" // the Writer rejects a topic set both on it and on the message
		out[i] = m
	}
	// A Writer with no Transport uses the shared kafka.DefaultTransport, whose metadata cache
	// (refreshed every 6 s) does not know a topic created since: the write fails at once with
	// UNKNOWN_TOPIC_OR_PARTITION, and its goroutines outlive the Writer. So: a transport per
	// call, closed here. BatchSize = all messages and a tiny BatchTimeout: WriteMessages
	// otherwise waits up to 1 s for a batch to fill.
	tr := &kafka.Transport{ClientID: "kafkatest"}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Transport:    tr,
		Addr:         kafka.TCP(c.Brokers...),
		Topic:        topic,
		Balancer:     balancer,
		RequiredAcks: kafka.RequireAll,
		BatchSize:    len(out),
		BatchBytes:   64 << 20,
		BatchTimeout: time.Millisecond,
		WriteTimeout: opTimeout,
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	err := w.WriteMessages(ctx, out...)
	if cerr := w.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("close writer: %w", cerr)
	}
	return err
}

// partitions lists the topic's partition IDs, sorted.
func (c *Cluster) partitions(ctx context.Context, cl *kafka.Client, topic string) ([]int, error) {
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("metadata: %w", err)
	}
	for _, tp := range md.Topics {
		if tp.Name != topic {
			continue
		}
		if tp.Error != nil {
			return nil, fmt.Errorf("metadata for %s: %w", topic, tp.Error)
		}
		ids := make([]int, 0, len(tp.Partitions))
		for _, p := range tp.Partitions {
			ids = append(ids, p.ID)
		}
		sort.Ints(ids)
		return ids, nil
	}
	return nil, fmt.Errorf("metadata: topic %s not found", topic)
}

// CommittedOffsets returns the group's committed offsets for a topic (partition → offset; -1
// when none). The committed offset is the next offset the group will read.
func (c *Cluster) CommittedOffsets(t testing.TB, group, topic string) map[int]int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cl, closeFn := c.client()
	defer closeFn()
	ids, err := c.partitions(ctx, cl, topic)
	if err != nil {
		t.Fatalf("kafkatest: committed offsets of %s on %s: %v", group, topic, err)
	}
	var resp *kafka.OffsetFetchResponse
	err = retryTemporary(ctx, func() error {
		var err error
		resp, err = cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ids}})
		if err == nil {
			err = resp.Error
		}
		return err
	})
	out := make(map[int]int64, len(ids))
	for _, id := range ids {
		out[id] = -1
	}
	// Apache Kafka answers -1 per partition for a group it does not know; kfake answers
	// GROUP_ID_NOT_FOUND. Both mean "nothing committed".
	if errors.Is(err, kafka.GroupIdNotFound) {
		return out
	}
	if err != nil {
		t.Fatalf("kafkatest: committed offsets of %s on %s: %v", group, topic, err)
	}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("kafkatest: committed offset of %s on %s/%d: %v", group, topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.CommittedOffset
	}
	return out
}

// EndOffsets returns each partition's high watermark (the offset the next message will get).
func (c *Cluster) EndOffsets(t testing.TB, topic string) map[int]int64 {
	t.Helper()
	offs, err := c.offsets(topic)
	if err != nil {
		t.Fatalf("kafkatest: end offsets of %s: %v", topic, err)
	}
	out := make(map[int]int64, len(offs))
	for id, o := range offs {
		out[id] = o.LastOffset
	}
	return out
}

func (c *Cluster) offsets(topic string) (map[int]kafka.PartitionOffsets, error) {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cl, closeFn := c.client()
	defer closeFn()
	ids, err := c.partitions(ctx, cl, topic)
	if err != nil {
		return nil, err
	}
	reqs := make([]kafka.OffsetRequest, 0, 2*len(ids))
	for _, id := range ids {
		reqs = append(reqs, kafka.FirstOffsetOf(id), kafka.LastOffsetOf(id))
	}
	resp, err := cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	out := make(map[int]kafka.PartitionOffsets, len(ids))
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("list offsets of partition %d: %w", p.Partition, p.Error)
		}
		out[p.Partition] = p
	}
	if len(out) != len(ids) {
		return nil, fmt.Errorf("list offsets: %d of %d partitions answered", len(out), len(ids))
	}
	return out, nil
}

// ReadAll reads every message currently in the topic: each partition from its first to its end
// offset as of the call, partitions in ascending order, offsets ascending within a partition.
// It is meant for inspecting small topics such as the DLQ.
func (c *Cluster) ReadAll(t testing.TB, topic string) []kafka.Message {
	t.Helper()
	offs, err := c.offsets(topic)
	if err != nil {
		t.Fatalf("kafkatest: read %s: %v", topic, err)
	}
	ids := make([]int, 0, len(offs))
	for id := range offs {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	var out []kafka.Message
	for _, id := range ids {
		msgs, err := c.readPartition(topic, id, offs[id].FirstOffset, offs[id].LastOffset)
		if err != nil {
			t.Fatalf("kafkatest: read %s/%d: %v", topic, id, err)
		}
		out = append(out, msgs...)
	}
	return out
}

func (c *Cluster) readPartition(topic string, partition int, first, end int64) ([]kafka.Message, error) {
	if first >= end {
		return nil, nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   c.Brokers,
		Topic:     topic,
		Partition: partition,
		MinBytes:  1,
		// 1 MiB per fetch and a 2 s wait: kafka-go's read deadline is MaxWait,
		// and a loaded in-process broker needs more than 100 ms to start
		// answering a 16 MiB fetch (testintegration/CHAOS.md finding 1).
		MaxBytes: 1 << 20,
		MaxWait:  2 * time.Second,
	})
	defer r.Close()
	if err := r.SetOffset(first); err != nil {
		return nil, fmt.Errorf("set offset %d: %w", first, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	var out []kafka.Message
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				return out, fmt.Errorf("read %d messages up to offset %d, end offset %d not reached in %v: %w", len(out), r.Offset(), end, opTimeout, err)
			}
			return out, fmt.Errorf("fetch: %w", err)
		}
		out = append(out, m)
		// Offsets can have gaps (compaction, transaction markers), so stop on the offset
		// reached, not on a message count.
		if m.Offset+1 >= end {
			return out, nil
		}
	}
}

// retryTemporary retries fn while it fails with a retriable Kafka error. A real broker answers
// NOT_COORDINATOR / COORDINATOR_LOAD_IN_PROGRESS while it creates and loads __consumer_offsets,
// which happens on the first group request after it starts.
func retryTemporary(ctx context.Context, fn func() error) error {
	for {
		err := fn()
		var kerr kafka.Error
		if err == nil || !errors.As(err, &kerr) || !kerr.Temporary() {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (still retrying when %w)", err, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}
