package testintegration

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
)

// The operator's view after a known run: exact funnel counters, DLQ reasons,
// per-partition offsets and lag, and no partition series left once the
// partition is released.
func TestMetricsDescribeARunExactly(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1, nil)
	var msgs []kafka.Message
	for i := 0; i < 10; i++ {
		msgs = append(msgs, kafka.Message{Value: []byte(fmt.Sprintf(`{"event_type":"view","device_id":"metrics-device-%02d","event_id":1}`, i))})
	}
	msgs = append(msgs,
		kafka.Message{Value: []byte(`{"event_type":"view","device_id":`)},
		kafka.Message{Value: []byte(`{"device_id":"metrics-device-99"}`)},
	)
	h.kafka.Produce(t, h.topic, msgs...)
	r := h.start(h.config())
	eventually(t, 30*time.Second, "all committed", func() bool { return h.committedAll() })
	// Let one more commit tick refresh the lag gauges after the last commit.
	eventually(t, 10*time.Second, "lag gauges refreshed", func() bool {
		return testutil.ToFloat64(r.App.Metrics.Lag.WithLabelValues(h.topic, "0")) == 0 &&
			testutil.ToFloat64(r.App.Metrics.HighWatermark.WithLabelValues(h.topic, "0")) == 12
	})

	expect := fmt.Sprintf(`
# HELP ampstream_events_consumed_total Messages fetched from Kafka.
# TYPE ampstream_events_consumed_total counter
ampstream_events_consumed_total 12
# HELP ampstream_dlq_events_total Events written to the dead-letter topic, by reason.
# TYPE ampstream_dlq_events_total counter
ampstream_dlq_events_total{reason="malformed_json"} 1
ampstream_dlq_events_total{reason="missing_event_type"} 1
# HELP ampstream_events_forwarded_total Events by lane and outcome: accepted by Amplitude, dead-lettered, throttled (held back) or retried.
# TYPE ampstream_events_forwarded_total counter
ampstream_events_forwarded_total{lane="batch",outcome="accepted"} 0
ampstream_events_forwarded_total{lane="batch",outcome="dlq"} 0
ampstream_events_forwarded_total{lane="batch",outcome="retried"} 0
ampstream_events_forwarded_total{lane="batch",outcome="throttled"} 0
ampstream_events_forwarded_total{lane="realtime",outcome="accepted"} 10
ampstream_events_forwarded_total{lane="realtime",outcome="dlq"} 0
ampstream_events_forwarded_total{lane="realtime",outcome="retried"} 0
ampstream_events_forwarded_total{lane="realtime",outcome="throttled"} 0
# HELP ampstream_kafka_partition_committed_offset Last committed offset (the next offset to consume) of an owned partition.
# TYPE ampstream_kafka_partition_committed_offset gauge
ampstream_kafka_partition_committed_offset{partition="0",topic="%[1]s"} 12
# HELP ampstream_kafka_partition_high_watermark High watermark of an owned partition, from the latest fetch.
# TYPE ampstream_kafka_partition_high_watermark gauge
ampstream_kafka_partition_high_watermark{partition="0",topic="%[1]s"} 12
# HELP ampstream_kafka_consumer_lag High watermark minus committed offset, in messages, clamped at 0.
# TYPE ampstream_kafka_consumer_lag gauge
ampstream_kafka_consumer_lag{partition="0",topic="%[1]s"} 0
# HELP ampstream_kafka_consumer_lag_seconds Now minus the Kafka timestamp of the oldest unacknowledged event; 0 when nothing is pending.
# TYPE ampstream_kafka_consumer_lag_seconds gauge
ampstream_kafka_consumer_lag_seconds{partition="0",topic="%[1]s"} 0
# HELP ampstream_kafka_assigned_partitions Partitions currently owned by this process.
# TYPE ampstream_kafka_assigned_partitions gauge
ampstream_kafka_assigned_partitions{topic="%[1]s"} 1
# HELP ampstream_amplitude_unauthorized 1 while Amplitude rejects the API key (403 or invalid key): delivery is stopped.
# TYPE ampstream_amplitude_unauthorized gauge
ampstream_amplitude_unauthorized 0
`, h.topic)
	names := []string{
		"ampstream_events_consumed_total", "ampstream_dlq_events_total", "ampstream_events_forwarded_total",
		"ampstream_kafka_partition_committed_offset", "ampstream_kafka_partition_high_watermark",
		"ampstream_kafka_consumer_lag", "ampstream_kafka_consumer_lag_seconds", "ampstream_kafka_assigned_partitions",
		"ampstream_amplitude_unauthorized",
	}
	if err := testutil.GatherAndCompare(r.Reg, strings.NewReader(expect), names...); err != nil {
		t.Fatal(err)
	}

	r.Stop(t)
	// A released partition leaves no frozen series behind.
	gone := []string{
		"ampstream_kafka_partition_committed_offset", "ampstream_kafka_partition_high_watermark",
		"ampstream_kafka_consumer_lag", "ampstream_kafka_consumer_lag_seconds",
		"ampstream_kafka_oldest_unacked_timestamp_seconds", "ampstream_kafka_last_commit_timestamp_seconds",
	}
	if err := testutil.GatherAndCompare(r.Reg, strings.NewReader(""), gone...); err != nil {
		t.Fatalf("partition series after release: %v", err)
	}
}
