package kafkatest

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TransactionalClient returns a franz-go client that produces to topic
// under a transactional id unique to name (kafka-go's Writer has no
// transactions), with opts added. It is closed when the test ends; the
// caller begins and ends its transactions.
func (c *Cluster) TransactionalClient(t testing.TB, topic, name string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts = append([]kgo.Opt{kgo.SeedBrokers(c.Brokers...), kgo.DefaultProduceTopic(topic),
		kgo.TransactionalID(UniqueName(name))}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatalf("kafkatest: transactional client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}
