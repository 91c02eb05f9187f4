package app

import (
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/consume"
	"github.com/ampstream/ampstream/internal/grouplag"
	"github.com/ampstream/ampstream/internal/metrics"
)

// newGroupLag builds the exporter of the group's lag, on the app's transport
// (TLS, SASL). It reads the group from the brokers, so it reports partitions
// no replica owns.
func newGroupLag(k config.Kafka, tr *kafka.Transport, c *consume.Consumer, m *metrics.Metrics, log zerolog.Logger) *grouplag.Exporter {
	o := &ownership{c: c}
	return grouplag.New(grouplag.Options{
		Client:        &kafka.Client{Addr: kafka.TCP(k.Brokers...), Transport: tr, Timeout: k.LagRefreshInterval},
		Group:         k.Group,
		Topics:        k.Topics,
		StartEarliest: k.StartOffset == config.StartOffsetEarliest,
		ReadCommitted: k.IsolationLevel == config.IsolationReadCommitted,
		Interval:      k.LagRefreshInterval,
		LastOwned:     o.lastOwned,
		// Generation: consume.Consumer does not expose its generation id
		// yet; ampstream_kafka_group_generation stays absent until it does.
	}, m, log)
}

// ownership remembers when the consumer last owned a partition. The exporter
// asks once per refresh, so the time is exact to one lag_refresh_interval.
type ownership struct {
	c    *consume.Consumer
	last atomic.Int64 // unix nanos; 0: never
}

func (o *ownership) lastOwned() time.Time {
	if len(o.c.Status()) > 0 {
		o.last.Store(time.Now().UnixNano())
	}
	if n := o.last.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// GroupLag returns the group's lag for every partition, owned or not, and its
// state as this replica last read them (for the status page).
func (a *App) GroupLag() grouplag.Snapshot { return a.groupLag.Snapshot() }
