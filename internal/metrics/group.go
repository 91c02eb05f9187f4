package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// GroupStateUnknown is the state reported when this replica could not
// describe the group (coordinator unreachable) or the broker named a state
// outside GroupStates.
const GroupStateUnknown = "Unknown"

// GroupStates returns the label values of ampstream_kafka_group_state: the
// classic group protocol's states as DescribeGroups names them, and
// GroupStateUnknown.
func GroupStates() []string {
	return []string{"Stable", "PreparingRebalance", "CompletingRebalance", "Empty", "Dead", GroupStateUnknown}
}

// Group is the consumer group as this replica reads it from the brokers,
// whoever owns the partitions (internal/grouplag). Every replica exports the
// same values, so dashboards and alerts take max by (topic, partition); unlike
// the owned-partition series above, these are not deleted on revoke and keep
// reporting when no member owns anything.
type Group struct {
	CommittedOffset *prometheus.GaugeVec
	EndOffset       *prometheus.GaugeVec
	Lag             *prometheus.GaugeVec
	LagSeconds      *prometheus.GaugeVec
	Unowned         *prometheus.GaugeVec
	State           *prometheus.GaugeVec
	Generation      *prometheus.GaugeVec
	Members         prometheus.Gauge
	LastOwnedTS     prometheus.Gauge
	Refreshes       *prometheus.CounterVec
	LastRefreshTS   prometheus.Gauge
}

func newGroup(f promauto.Factory) Group {
	tp := []string{"topic", "partition"}
	g := Group{
		CommittedOffset: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_group_committed_offset",
			Help: "The consumer group's committed offset (the next offset to consume) of every partition of the consumed topics, owned or not; -1 when the group has committed none.",
		}, tp),
		EndOffset: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_partition_end_offset",
			Help: "End offset of every partition of the consumed topics: the last stable offset with kafka.isolation_level=read_committed, else the high watermark.",
		}, tp),
		Lag: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_group_lag",
			Help: "End offset minus the group's position (committed offset, or where a partition without one starts), in messages, for every partition whether or not a member owns it.",
		}, tp),
		LagSeconds: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_group_lag_seconds",
			Help: "Now minus the Kafka timestamp of the record at the group's position, for every partition whether or not a member owns it; 0 when the lag is 0.",
		}, tp),
		Unowned: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_unowned_partitions",
			Help: "Partitions no group member owns: not in any member's assignment of a Stable group; all of them in any other state.",
		}, []string{"topic"}),
		State: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_group_state",
			Help: "1 for the consumer group's state as this replica last described it, 0 for the others.",
		}, []string{"state"}),
		Generation: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_group_generation",
			Help: "Generation this replica is a member of; -1 when it is a member of none. Absent while the consumer does not report it.",
		}, nil),
		Members: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_kafka_group_members",
			Help: "Members of the consumer group as this replica last described it.",
		}),
		LastOwnedTS: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_kafka_last_owned_timestamp_seconds",
			Help: "Unix time this replica last owned at least one partition; 0 if it never has.",
		}),
		Refreshes: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_kafka_group_lag_refreshes_total",
			Help: "Reads of the group's offsets, end offsets and assignment (every kafka.lag_refresh_interval), by result.",
		}, []string{"result"}),
		LastRefreshTS: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_kafka_group_lag_last_refresh_timestamp_seconds",
			Help: "Unix time of the last successful read of the group's offsets; the ampstream_kafka_group_* values are that old.",
		}),
	}
	for _, s := range GroupStates() {
		g.State.WithLabelValues(s)
	}
	g.State.WithLabelValues(GroupStateUnknown).Set(1)
	for _, r := range []string{"success", "error"} {
		g.Refreshes.WithLabelValues(r)
	}
	return g
}
