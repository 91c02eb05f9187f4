package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/sandbox"
)

// cluster is the broker the benchmark runs against: the brokers named by
// KAFKA_BROKERS, else kfake in a child process (Options.BrokerCommand), else
// kfake in this process.
type cluster struct {
	brokers []string
	k       *sandbox.Kafka
	child   *childBroker // nil unless kfake runs in a child process
	tr      *kafka.Transport
	cl      *kafka.Client
}

func startCluster(ctx context.Context, brokers string, command []string) (*cluster, error) {
	var list []string
	for _, s := range strings.Split(brokers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, s)
		}
	}
	var child *childBroker
	if len(list) == 0 && len(command) > 0 {
		var err error
		if child, err = startChildBroker(ctx, command[0], command[1:]...); err != nil {
			return nil, err
		}
		list = strings.Split(child.addr, ",")
	}
	k, err := sandbox.StartKafka(list)
	if err != nil {
		return nil, err
	}
	c := &cluster{brokers: k.Brokers, k: k, child: child}
	// A transport of our own: fresh metadata (kafka-go's default transport
	// caches it for 6 s and would not know a topic created a moment ago).
	c.tr = &kafka.Transport{ClientID: "ampstream-bench", MetadataTTL: 500 * time.Millisecond}
	c.cl = &kafka.Client{Addr: kafka.TCP(c.brokers...), Timeout: 30 * time.Second, Transport: c.tr}
	return c, nil
}

func (c *cluster) kind() string {
	switch {
	case c.k.InProcess():
		return "kfake (in-process)"
	case c.child != nil:
		return "kfake (child process)"
	}
	return "external (KAFKA_BROKERS)"
}

// usage is this process's resource counters, and the broker child's.
func (c *cluster) usage() usage {
	u := takeUsage()
	if c.child != nil {
		u = c.child.usage(u)
	}
	return u
}

func (c *cluster) close() {
	c.tr.CloseIdleConnections()
	c.k.Close()
	if c.child != nil {
		c.child.close()
	}
}

func uniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// createTopic creates topic and waits until every partition has a leader.
func (c *cluster) createTopic(ctx context.Context, topic string, partitions int) error {
	resp, err := c.cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: topic, NumPartitions: partitions, ReplicationFactor: 1,
	}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := resp.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for {
		parts, err := c.partitions(ctx, topic)
		if err == nil && len(parts) == partitions {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s: partitions have no leader yet: %w", topic, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *cluster) deleteTopics(ctx context.Context, topics ...string) {
	_, _ = c.cl.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: topics})
}

func (c *cluster) partitions(ctx context.Context, topic string) ([]int, error) {
	meta, err := c.cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	if len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		return nil, fmt.Errorf("topic %s not in metadata", topic)
	}
	var ids []int
	for _, p := range meta.Topics[0].Partitions {
		if p.Error == nil && p.Leader.Host != "" {
			ids = append(ids, p.ID)
		}
	}
	return ids, nil
}

// endOffsets returns each partition's end offset (the next offset to be written).
func (c *cluster) endOffsets(ctx context.Context, topic string, parts []int) (map[int]int64, error) {
	var offs []kafka.OffsetRequest
	for _, p := range parts {
		offs = append(offs, kafka.LastOffsetOf(p))
	}
	resp, err := c.cl.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: offs}})
	if err != nil {
		return nil, fmt.Errorf("list offsets of %s: %w", topic, err)
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		if p.Error != nil {
			return nil, fmt.Errorf("list offsets of %s/%d: %w", topic, p.Partition, p.Error)
		}
		out[p.Partition] = p.LastOffset
	}
	return out, nil
}

// committed returns group's committed offsets of topic (-1: none).
func (c *cluster) committed(ctx context.Context, group, topic string, parts []int) (map[int]int64, error) {
	resp, err := c.cl.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, err
	}
	if resp.Error != nil {
		return nil, resp.Error
	}
	out := map[int]int64{}
	for _, p := range resp.Topics[topic] {
		out[p.Partition] = p.CommittedOffset
	}
	return out, nil
}

// allCommitted reports whether group committed every partition's end offset.
func (c *cluster) allCommitted(ctx context.Context, group, topic string, end map[int]int64) (bool, error) {
	parts := make([]int, 0, len(end))
	for p := range end {
		parts = append(parts, p)
	}
	got, err := c.committed(ctx, group, topic, parts)
	if err != nil {
		return false, err
	}
	for p, e := range end {
		if e > 0 && got[p] != e {
			return false, nil
		}
	}
	return true, nil
}

// waitCommitted polls until group committed the end offsets, and returns
// when it saw them.
func (c *cluster) waitCommitted(ctx context.Context, group, topic string, end map[int]int64) (time.Time, error) {
	var last error
	for {
		ok, err := c.allCommitted(ctx, group, topic, end)
		if ok {
			return time.Now(), nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return time.Time{}, fmt.Errorf("offsets of %s not committed by %s (last error: %v): %w", topic, group, last, ctx.Err())
			}
			return time.Time{}, fmt.Errorf("offsets of %s not committed by %s: %w", topic, group, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (c *cluster) writer(topic string) *kafka.Writer {
	return &kafka.Writer{
		Addr:      kafka.TCP(c.brokers...),
		Topic:     topic,
		Transport: c.tr,
		Balancer:  &kafka.Murmur2Balancer{Consistent: true},
		BatchSize: 5000,
		// Below the broker's default max.message.bytes (1 MiB + 12 B): a
		// record batch larger than that is refused whole.
		BatchBytes:   1_000_000,
		BatchTimeout: 5 * time.Millisecond,
		RequiredAcks: kafka.RequireOne,
	}
}

// writeErr shortens kafka-go's per-message error lists to a count and the
// first error.
func writeErr(err error) error {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil {
				return fmt.Errorf("%d of %d messages failed, first: %w", we.Count(), len(we), e)
			}
		}
	}
	return err
}
