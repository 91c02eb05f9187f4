// Package testintegration runs ampstream end to end: the real `run` code
// path (app.Run) over real sockets against a real Kafka broker (the best
// available: KAFKA_BROKERS, testcontainers, or in-process kfake — the test
// log names it) and the Amplitude emulator.
package testintegration

import (
	"encoding/json"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/kafkatest"
	"github.com/ampstream/ampstream/internal/sandbox"
	"github.com/ampstream/ampstream/internal/traffic"
)

// harness is one broker, one source topic, one DLQ topic, one group and one emulator.
type harness struct {
	t      *testing.T
	kafka  *kafkatest.Cluster
	topic  string
	dlq    string
	users  string // the user-rate topic: one per harness, as one per deployment
	group  string
	parts  int
	emu    *emulator.Emulator
	emuURL string
	// replicas counts the apps started, to name each one in its logs.
	replicas atomic.Int32
}

func newHarness(t *testing.T, partitions int, emuCfg *emulator.Config) *harness {
	t.Helper()
	return newHarnessOn(t, kafkatest.Start(t), partitions, emuCfg)
}

// newHarnessOn is newHarness on a broker the test manages itself (the
// broker-restart scenario runs its own kfake cluster).
func newHarnessOn(t *testing.T, k *kafkatest.Cluster, partitions int, emuCfg *emulator.Config) *harness {
	t.Helper()
	return newHarnessTopics(t, k, k.CreateTopic(t, "events", partitions), k.CreateTopic(t, "dlq", 1), partitions, emuCfg)
}

// newHarnessTopics is newHarnessOn on topics the test created itself (the
// cluster scenarios create theirs with replication factor 3).
func newHarnessTopics(t *testing.T, k *kafkatest.Cluster, topic, dlq string, partitions int, emuCfg *emulator.Config) *harness {
	t.Helper()
	h := &harness{
		t:     t,
		kafka: k,
		topic: topic,
		dlq:   dlq,
		users: kafkatest.UniqueName("userrate"),
		group: kafkatest.UniqueName("group"),
		parts: partitions,
	}
	cfg := emulator.DefaultConfig()
	if emuCfg != nil {
		cfg = *emuCfg
	}
	emu, err := sandbox.StartEmulator(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	h.emu, h.emuURL = emu.Emulator, emu.URL()
	t.Cleanup(func() { _ = emu.Close() })
	return h
}

// config is the service configuration a user would write for this harness
// (sandbox.Config), with timings shortened further for tests.
func (h *harness) config() config.Config {
	c := sandbox.Config(h.kafka.Brokers, h.topic, h.group, h.dlq, h.emuURL)
	c.Kafka.HeartbeatInterval = 500 * time.Millisecond
	c.Kafka.SessionTimeout = 6 * time.Second
	c.Kafka.RebalanceTimeout = 10 * time.Second
	c.Kafka.CommitInterval = 200 * time.Millisecond
	c.Amplitude.Timeout = 2 * time.Second
	c.Amplitude.ThrottlePause = 2 * time.Second
	c.Amplitude.RetryMaxBackoff = 500 * time.Millisecond
	c.UserRate.Topic = h.users
	c.Shutdown.DrainTimeout = 5 * time.Second
	c.Log.Level = "warn"
	return c
}

// running is an App started by start.
type running struct {
	*sandbox.App
}

// Stop sends the SIGTERM path (context cancellation) and waits for Run.
func (r *running) Stop(t *testing.T) {
	t.Helper()
	if err := r.App.Stop(30 * time.Second); err != nil {
		t.Errorf("after shutdown: %v, want app.Run to return nil", err)
	}
}

func (h *harness) start(cfg config.Config) *running {
	h.t.Helper()
	replica := h.replicas.Add(1)
	level := zerolog.WarnLevel
	if l, err := zerolog.ParseLevel(os.Getenv("AMPSTREAM_TEST_LOG_LEVEL")); err == nil && l != zerolog.NoLevel {
		level = l // AMPSTREAM_TEST_LOG_LEVEL=debug: the replicas' own logs, each line naming its replica
	}
	log := zerolog.New(zerolog.NewTestWriter(h.t)).Level(level).With().Timestamp().Int32("replica", replica).Logger()
	a, err := sandbox.StartApp(cfg, log, app.Build{Version: "test"})
	if err != nil {
		h.t.Fatalf("start ampstream: %v", err)
	}
	h.t.Cleanup(func() { _ = a.Stop(30 * time.Second) })
	return &running{App: a}
}

// produce writes generator messages to the source topic.
func (h *harness) produce(msgs []traffic.Msg) {
	h.t.Helper()
	km := make([]kafka.Message, len(msgs))
	for i, m := range msgs {
		km[i] = kafka.Message{Key: m.Key, Value: m.Value}
		for k, v := range m.Headers {
			km[i].Headers = append(km[i].Headers, kafka.Header{Key: k, Value: []byte(v)})
		}
	}
	h.kafka.Produce(h.t, h.topic, km...)
}

// committedAll reports whether the group committed every partition's end offset.
func (h *harness) committedAll() bool {
	end := h.kafka.EndOffsets(h.t, h.topic)
	got := h.kafka.CommittedOffsets(h.t, h.group, h.topic)
	for p, e := range end {
		if got[p] != e {
			return false
		}
	}
	return true
}

// eventually polls cond every 50 ms until it holds or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
}

// assertCommitsCovered proves invariant 1: every offset below the committed
// offset of its partition was accepted by Amplitude (found in the emulator)
// or written to the DLQ (found there by source offset).
func (h *harness) assertCommitsCovered() {
	h.t.Helper()
	committed := h.kafka.CommittedOffsets(h.t, h.group, h.topic)
	dead := map[string]bool{}
	for _, m := range h.kafka.ReadAll(h.t, h.dlq) {
		var p, o string
		for _, hd := range m.Headers {
			switch hd.Key {
			case "ampstream-source-partition":
				p = string(hd.Value)
			case "ampstream-source-offset":
				o = string(hd.Value)
			}
		}
		dead[p+"/"+o] = true
	}
	stored := map[string]map[int64]bool{}
	for _, d := range h.emu.AllDevices() {
		stored[d] = map[int64]bool{}
		for _, in := range h.emu.Events(d) {
			var ev struct {
				EventID int64 `json:"event_id"`
			}
			_ = json.Unmarshal(in.Event, &ev)
			stored[d][ev.EventID] = true
		}
	}
	uncovered := 0
	defer func() {
		if uncovered > 10 {
			h.t.Errorf("... %d committed offsets uncovered in all", uncovered)
		}
	}()
	for _, m := range h.kafka.ReadAll(h.t, h.topic) {
		c, ok := committed[m.Partition]
		if !ok || m.Offset >= c {
			continue
		}
		if dead[strconv.Itoa(m.Partition)+"/"+strconv.FormatInt(m.Offset, 10)] {
			continue
		}
		var ev struct {
			DeviceID string `json:"device_id"`
			UserID   string `json:"user_id"`
			EventID  int64  `json:"event_id"`
		}
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			h.t.Errorf("partition %d offset %d committed (at %d) but neither in Amplitude nor in the DLQ (unparsable)", m.Partition, m.Offset, c)
			continue
		}
		dev := ev.DeviceID
		if dev == "" {
			dev = emulator.UserDeviceID(ev.UserID)
		}
		if !stored[dev][ev.EventID] {
			if uncovered++; uncovered > 10 {
				continue // the first ten say enough
			}
			h.t.Errorf("partition %d offset %d (device %s event %d) committed (at %d) but not accepted by Amplitude nor dead-lettered",
				m.Partition, m.Offset, dev, ev.EventID, c)
		}
	}
}
