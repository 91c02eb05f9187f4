package consume

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/ampstream/ampstream/internal/deliver"
	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/kafkatest"
	"github.com/ampstream/ampstream/internal/metrics"
)

// acceptAll is a delivery side on which Amplitude accepts every event at
// once, and that counts what each consumer delivered.
type acceptAll struct {
	mu sync.Mutex
	n  int
}

func (a *acceptAll) SubmitBatch(_ context.Context, items []*deliver.Item, _ time.Time) ([]*deliver.Item, error) {
	a.mu.Lock()
	a.n += len(items)
	a.mu.Unlock()
	for _, it := range items {
		it.Owner.Accepted([]*deliver.Item{it})
	}
	return nil, nil
}

func (a *acceptAll) delivered() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

type noDLQ struct{ t *testing.T }

func (d noDLQ) Write(r dlq.Record) { d.t.Errorf("dead letter %s: %s", r.Reason, r.Detail) }

// ownership records the last OwnershipChanged call.
type ownership struct {
	mu           sync.Mutex
	owned, total int
}

func (o *ownership) set(owned, total int) {
	o.mu.Lock()
	o.owned, o.total = owned, total
	o.mu.Unlock()
}

func (o *ownership) get() (int, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.owned, o.total
}

func startConsumer(t *testing.T, c *kafkatest.Cluster, group, topic string, sub Submitter, own *ownership) (*Consumer, func() error) {
	t.Helper()
	cons := New(Options{
		Brokers: c.Brokers, Topics: []string{topic}, Group: group,
		SessionTimeout: 6 * time.Second, HeartbeatInterval: 300 * time.Millisecond, RebalanceTimeout: 15 * time.Second,
		CommitInterval: 100 * time.Millisecond, FetchMaxWait: 200 * time.Millisecond, DrainTimeout: 5 * time.Second,
		MinIDLength: 5, OwnershipChanged: own.set,
	}, sub, noDLQ{t}, metrics.New(prometheus.NewRegistry()), zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- cons.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return cons, stop
}

// Partitions follow the group: OwnershipChanged reports each change, a
// second consumer takes half, everything is committed when it leaves, and
// the first takes everything back.
func TestConsumerFollowsTheGroupAndReportsOwnership(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "consume-own", 4)
	group := kafkatest.UniqueName("consume-own")
	msgs := make([]kafka.Message, 200)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf(`{"event_type":"e","device_id":"device-%d"}`, i))}
	}
	c.Produce(t, topic, msgs...)
	end := c.EndOffsets(t, topic)

	var s1, s2 acceptAll
	var o1, o2 ownership
	c1, _ := startConsumer(t, c, group, topic, &s1, &o1)
	require.Equal(t, "not started", New(Options{}, nil, nil, nil, zerolog.Nop()).GroupState().Reason)
	require.Eventually(t, func() bool { o, tot := o1.get(); return o == 4 && tot == 4 }, 30*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return s1.delivered() == len(msgs) }, 30*time.Second, 10*time.Millisecond)
	require.True(t, c1.Ready())
	st := c1.GroupState()
	require.True(t, st.Member)
	require.Equal(t, 4, st.Owned)

	_, stop2 := startConsumer(t, c, group, topic, &s2, &o2)
	require.Eventually(t, func() bool {
		a, _ := o1.get()
		b, _ := o2.get()
		return a == 2 && b == 2
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, stop2())
	require.Eventually(t, func() bool { a, _ := o1.get(); return a == 4 }, 30*time.Second, 10*time.Millisecond)

	// Everything was delivered once and committed to the end.
	require.Eventually(t, func() bool {
		committed := c.CommittedOffsets(t, group, topic)
		for p, e := range end {
			if committed[p] != e {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond)
	require.Equal(t, len(msgs), s1.delivered()+s2.delivered())
}
