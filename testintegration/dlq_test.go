package testintegration

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ampstream/ampstream/internal/kafkatest"
	"github.com/ampstream/ampstream/internal/traffic"
)

// When the dead-letter topic cannot take writes, the partition holding a bad
// event stops advancing — it never skips it — and ampstream says so in its
// metrics and readiness; once the DLQ works, everything completes.
func TestAnUnavailableDLQStopsThePartitionInsteadOfSkipping(t *testing.T) {
	t.Parallel()
	// A broker without auto topic creation, and a DLQ topic that does not exist yet.
	cluster, _ := kafkatest.StartKfake(t, kfake.GroupMinSessionTimeout(time.Second))
	h := newHarnessOn(t, cluster, 1, nil)
	h.dlq = kafkatest.UniqueName("missing-dlq")

	g := traffic.New(51, 10, 0, nil)
	msgs := []traffic.Msg{g.Normal(), g.Normal(), g.Invalid(), g.Normal(), g.Normal()}
	h.produce(msgs)
	r := h.start(h.config())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	addr, err := r.App.AdminAddr(ctx)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "DLQ write errors", func() bool {
		return testutil.ToFloat64(r.App.Metrics.DLQWriteErrors) >= 2
	})
	eventually(t, 10*time.Second, "readiness to report the DLQ", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 503 && strings.Contains(string(b), "dead-letter")
	})
	// The valid events after the bad one were delivered, but the commit
	// stops right before the event that is not yet dead-lettered.
	eventually(t, 30*time.Second, "valid events delivered", func() bool { return traffic.Check(h.emu, g.Expected()).OK() })
	eventually(t, 10*time.Second, "the commit to reach the bad event", func() bool {
		return h.kafka.CommittedOffsets(t, h.group, h.topic)[0] == 2
	})
	// Let several more failed DLQ attempts (and commit ticks) pass: the
	// watermark must stay put.
	seen := testutil.ToFloat64(r.App.Metrics.DLQWriteErrors)
	eventually(t, 30*time.Second, "more DLQ retries", func() bool {
		return testutil.ToFloat64(r.App.Metrics.DLQWriteErrors) >= seen+3
	})
	if got := h.kafka.CommittedOffsets(t, h.group, h.topic)[0]; got != 2 {
		t.Fatalf("committed offset %d while offset 2 is not dead-lettered, want 2", got)
	}

	// The operator creates the topic: the partition resumes.
	cl := &kafka.Client{Addr: kafka.TCP(h.kafka.Brokers...)}
	if _, err := cl.CreateTopics(context.Background(), &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: h.dlq, NumPartitions: 1, ReplicationFactor: 1}}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "everything committed after the DLQ recovered", func() bool { return h.committedAll() })
	if n := len(h.kafka.ReadAll(t, h.dlq)); n != 1 {
		t.Fatalf("DLQ holds %d events, want exactly 1", n)
	}
	r.Stop(t)
	h.assertCommitsCovered()
}
