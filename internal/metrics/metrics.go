// Package metrics defines every Prometheus series ampstream exports.
//
// One struct, built once per process with New(reg), is passed to the
// packages on the data path. Keeping the definitions together lets tests
// (and the Helm chart test) enumerate exactly what the service exports.
//
// Labels are bounded: topic, partition, lane, outcome, reason, code, op,
// result, event and state. Device, user and insert ids never become labels.
//
// Concurrency: every method is safe for concurrent use.
package metrics

import (
	"runtime"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Lanes.
const (
	LaneRealtime = "realtime"
	LaneBatch    = "batch"
)

// Metrics holds every ampstream series.
type Metrics struct {
	// Kafka partition state (deleted on revoke).
	CommittedOffset    *prometheus.GaugeVec
	HighWatermark      *prometheus.GaugeVec
	Lag                *prometheus.GaugeVec
	LagSeconds         *prometheus.GaugeVec
	OldestUnackedTS    *prometheus.GaugeVec
	LastCommitTS       *prometheus.GaugeVec
	AssignedPartitions *prometheus.GaugeVec
	Rebalances         *prometheus.CounterVec
	Commits            *prometheus.CounterVec
	FetchBlocked       prometheus.Counter

	// The group's offsets and assignment, read from the brokers whoever
	// owns the partitions (never deleted on revoke).
	Group Group

	// Funnel.
	EventsConsumed  prometheus.Counter
	AbortedSkipped  prometheus.Counter
	EventsForwarded *prometheus.CounterVec
	DLQEvents       *prometheus.CounterVec
	DLQWriteErrors  prometheus.Counter

	// Amplitude requests.
	Requests        *prometheus.CounterVec
	RequestDuration *prometheus.HistogramVec
	RequestEvents   *prometheus.HistogramVec
	RequestBytes    *prometheus.HistogramVec
	ThrottledEvents *prometheus.CounterVec
	Unauthorized    prometheus.Gauge

	// Routing.
	LaneSwitches   *prometheus.CounterVec
	HotKeys        prometheus.Gauge
	ThrottledKeys  prometheus.Gauge
	TrackedKeys    prometheus.Gauge
	InflightEvents prometheus.Gauge
	InflightBytes  prometheus.Gauge
	InflightReqs   *prometheus.GaugeVec

	// Budget shares: this replica's part of the project-wide caps.
	BudgetShareRatio    prometheus.Gauge
	BudgetShareEvents   prometheus.Gauge
	BudgetShareRequests prometheus.Gauge

	// User rates shared by the group (package userrate). No user labels.
	UserRatePublished   prometheus.Counter
	UserRatePublishKeys prometheus.Counter
	UserRateReceived    prometheus.Counter
	UserRateErrors      *prometheus.CounterVec
	UserRateTrackedKeys prometheus.Gauge
	UserRateReplicas    prometheus.Gauge
	UserRateHealthy     prometheus.Gauge

	BuildInfo *prometheus.GaugeVec
}

// Outcome label values of ampstream_events_forwarded_total.
const (
	OutcomeAccepted  = "accepted"
	OutcomeDLQ       = "dlq"
	OutcomeThrottled = "throttled"
	OutcomeRetried   = "retried"
)

// New registers every series on reg.
func New(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	tp := []string{"topic", "partition"}
	m := &Metrics{
		CommittedOffset: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_partition_committed_offset",
			Help: "Last committed offset (the next offset to consume) of an owned partition.",
		}, tp),
		HighWatermark: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_partition_high_watermark",
			Help: "High watermark of an owned partition, from the latest fetch.",
		}, tp),
		Lag: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_consumer_lag",
			Help: "High watermark minus committed offset, in messages, clamped at 0.",
		}, tp),
		LagSeconds: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_consumer_lag_seconds",
			Help: "Now minus the Kafka timestamp of the oldest unacknowledged event; 0 when nothing is pending.",
		}, tp),
		OldestUnackedTS: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_oldest_unacked_timestamp_seconds",
			Help: "Kafka timestamp of the oldest fetched but unacknowledged event (Unix seconds); 0 when none.",
		}, tp),
		LastCommitTS: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_last_commit_timestamp_seconds",
			Help: "Unix time of the last successful offset commit of an owned partition.",
		}, tp),
		AssignedPartitions: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_kafka_assigned_partitions",
			Help: "Partitions currently owned by this process.",
		}, []string{"topic"}),
		Rebalances: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_kafka_rebalances_total",
			Help: "Consumer group handovers: partitions added to this process (assigned), and taken from it (revoked; lost ones included).",
		}, []string{"event"}),
		Commits: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_kafka_commits_total",
			Help: "Offset commit attempts by result.",
		}, []string{"result"}),
		FetchBlocked: f.NewCounter(prometheus.CounterOpts{
			Name: "ampstream_kafka_fetch_paused_total",
			Help: "Times fetching paused because the in-flight event or byte cap was reached.",
		}),
		EventsConsumed: f.NewCounter(prometheus.CounterOpts{
			Name: "ampstream_events_consumed_total",
			Help: "Messages fetched from Kafka.",
		}),
		AbortedSkipped: f.NewCounter(prometheus.CounterOpts{
			Name: "ampstream_kafka_aborted_records_skipped_total",
			Help: "Records of aborted transactions passed over (kafka.isolation_level=read_committed): never sent to Amplitude.",
		}),
		EventsForwarded: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_events_forwarded_total",
			Help: "Events by lane and outcome: accepted by Amplitude, dead-lettered, throttled (held back) or retried.",
		}, []string{"lane", "outcome"}),
		DLQEvents: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_dlq_events_total",
			Help: "Events written to the dead-letter topic, by reason.",
		}, []string{"reason"}),
		DLQWriteErrors: f.NewCounter(prometheus.CounterOpts{
			Name: "ampstream_dlq_write_errors_total",
			Help: "Failed dead-letter writes (retried; the partition does not advance meanwhile).",
		}),
		Requests: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_amplitude_requests_total",
			Help: "Amplitude requests by lane and result code (200, 400, 403, 413, 429, 5xx, timeout, error).",
		}, []string{"lane", "code"}),
		RequestDuration: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ampstream_amplitude_request_duration_seconds",
			Help: "Amplitude request latency.",
			// 1 ms to ~16 s: loopback emulators answer in a millisecond,
			// Amplitude's SDKs time out at 10 s.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"lane"}),
		RequestEvents: f.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ampstream_amplitude_request_events",
			Help:    "Events per Amplitude request.",
			Buckets: []float64{1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000},
		}, []string{"lane"}),
		RequestBytes: f.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ampstream_amplitude_request_bytes",
			Help: "Uncompressed Amplitude request body size.",
			// 256 B to 32 MiB covers a single event up to the 20 MB Batch limit.
			Buckets: prometheus.ExponentialBuckets(256, 4, 10),
		}, []string{"lane"}),
		ThrottledEvents: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_amplitude_throttled_events_total",
			Help: "Events Amplitude answered 429 for, by reason (eps or daily_quota).",
		}, []string{"lane", "reason"}),
		Unauthorized: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_amplitude_unauthorized",
			Help: "1 while Amplitude rejects the API key (403 or invalid key): delivery is stopped.",
		}),
		LaneSwitches: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_lane_switches_total",
			Help: "Keys moved between lanes, by destination lane.",
		}, []string{"to"}),
		HotKeys: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_hot_keys",
			Help: "Device and user keys currently routed to the Batch lane by their rate.",
		}),
		ThrottledKeys: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_throttled_keys",
			Help: "Device and user keys currently quarantined after a 429.",
		}),
		TrackedKeys: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_rate_tracked_keys",
			Help: "Keys held by the per-key rate tracker.",
		}),
		InflightEvents: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_inflight_events",
			Help: "Events fetched but not yet accepted or dead-lettered.",
		}),
		InflightBytes: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_inflight_bytes",
			Help: "Bytes of events fetched but not yet accepted or dead-lettered.",
		}),
		InflightReqs: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_inflight_requests",
			Help: "Amplitude requests in flight by lane.",
		}, []string{"lane"}),
		BudgetShareRatio: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_budget_share_ratio",
			Help: "This replica's part of the project-wide budget: partitions it owns / partitions of the consumed topics (kept while it drains after giving its partitions up).",
		}),
		BudgetShareEvents: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_budget_share_events_per_second",
			Help: "Events/s this replica may send: budget.events_per_second × the share ratio; 0 when the cap is off.",
		}),
		BudgetShareRequests: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_budget_share_requests_per_second",
			Help: "Requests/s this replica may send: budget.requests_per_second × the share ratio; 0 when the cap is off.",
		}),
		UserRatePublished: f.NewCounter(prometheus.CounterOpts{
			Name: "ampstream_userrate_reports_published_total",
			Help: "Reports of this replica's per-user rates written to the user-rate topic.",
		}),
		UserRatePublishKeys: f.NewCounter(prometheus.CounterOpts{
			Name: "ampstream_userrate_keys_published_total",
			Help: "User keys (hashed) carried by the published reports.",
		}),
		UserRateReceived: f.NewCounter(prometheus.CounterOpts{
			Name: "ampstream_userrate_reports_received_total",
			Help: "Reports read from the user-rate topic, this replica's own included.",
		}),
		UserRateErrors: f.NewCounterVec(prometheus.CounterOpts{
			Name: "ampstream_userrate_errors_total",
			Help: "User-rate channel failures, by operation (create_topic, publish, read, decode).",
		}, []string{"op"}),
		UserRateTrackedKeys: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_userrate_tracked_keys",
			Help: "User keys with a rate reported by other replicas.",
		}),
		UserRateReplicas: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_userrate_replicas",
			Help: "Replicas with a fresh report on the user-rate topic, this one included.",
		}),
		UserRateHealthy: f.NewGauge(prometheus.GaugeOpts{
			Name: "ampstream_userrate_healthy",
			Help: "1 while this replica's reports make the round trip through the user-rate topic; 0 means user keys fall back to router.user_eps_margin.",
		}),
		BuildInfo: f.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ampstream_build_info",
			Help: "Build information; always 1.",
		}, []string{"version", "revision", "goversion"}),
	}
	m.Group = newGroup(f)
	// Series exist from the start so rate() and alerts see zeros, not gaps.
	for _, lane := range []string{LaneRealtime, LaneBatch} {
		for _, o := range []string{OutcomeAccepted, OutcomeDLQ, OutcomeThrottled, OutcomeRetried} {
			m.EventsForwarded.WithLabelValues(lane, o)
		}
		m.InflightReqs.WithLabelValues(lane)
		m.RequestDuration.WithLabelValues(lane)
	}
	for _, r := range []string{"success", "error"} {
		m.Commits.WithLabelValues(r)
	}
	for _, e := range []string{"assigned", "revoked"} {
		m.Rebalances.WithLabelValues(e)
	}
	return m
}

// SetBuildInfo sets ampstream_build_info.
func (m *Metrics) SetBuildInfo(version, revision string) {
	m.BuildInfo.WithLabelValues(version, revision, runtime.Version()).Set(1)
}

// DeletePartition removes every series of a partition this process no longer owns,
// so a revoked partition does not leave a frozen lag series behind.
func (m *Metrics) DeletePartition(topic string, partition int) {
	p := strconv.Itoa(partition)
	for _, v := range []*prometheus.GaugeVec{m.CommittedOffset, m.HighWatermark, m.Lag, m.LagSeconds, m.OldestUnackedTS, m.LastCommitTS} {
		v.DeleteLabelValues(topic, p)
	}
}

// Snapshot flattens the counters and gauges of g into name{label=value,...}
// keys (labels in name order), for the status page and the demo summary.
func Snapshot(g prometheus.Gatherer) map[string]float64 {
	out := map[string]float64{}
	mfs, err := g.Gather()
	if err != nil {
		return out
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			key := mf.GetName()
			if lp := m.GetLabel(); len(lp) > 0 {
				parts := make([]string, 0, len(lp))
				for _, l := range lp {
					parts = append(parts, l.GetName()+"="+l.GetValue())
				}
				key += "{" + strings.Join(parts, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}
