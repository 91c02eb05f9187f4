// Package testintegration runs ampstream end to end: the real `run` code
// path (app.Run) over real sockets against a real Kafka broker (the best
// available: KAFKA_BROKERS, testcontainers, or in-process kfake — the test
// log names it) and the Amplitude emulator.
package testintegration

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/kafkatest"
	"github.com/ampstream/ampstream/internal/traffic"
)

// harness is one broker, one source topic, one DLQ topic, one group and one emulator.
type harness struct {
	t       *testing.T
	kafka   *kafkatest.Cluster
	topic   string
	dlq     string
	group   string
	parts   int
	emu     *emulator.Emulator
	emuURL  string
	emuStop context.CancelFunc
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
		group: kafkatest.UniqueName("group"),
		parts: partitions,
	}
	cfg := emulator.DefaultConfig()
	if emuCfg != nil {
		cfg = *emuCfg
	}
	h.emu = emulator.New(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := emulator.Start(ctx, "127.0.0.1:0", h.emu)
	if err != nil {
		cancel()
		t.Fatalf("start emulator: %v", err)
	}
	h.emuURL, h.emuStop = srv.URL(), cancel
	t.Cleanup(func() { cancel(); _ = srv.Wait() })
	return h
}

// config is the service configuration a user would write for this harness,
// with timings shortened for tests.
func (h *harness) config() config.Config {
	c := config.Default()
	c.Kafka.Brokers = h.kafka.Brokers
	c.Kafka.Topics = []string{h.topic}
	c.Kafka.Group = h.group
	c.Kafka.HeartbeatInterval = 500 * time.Millisecond
	c.Kafka.SessionTimeout = 6 * time.Second
	c.Kafka.RebalanceTimeout = 10 * time.Second
	c.Kafka.CommitInterval = 200 * time.Millisecond
	c.Amplitude.APIKey = "test-api-key-0123456789abcdef"
	c.Amplitude.URL = h.emuURL
	c.Amplitude.Timeout = 2 * time.Second
	c.Amplitude.ThrottlePause = 2 * time.Second
	c.Amplitude.RetryMaxBackoff = 500 * time.Millisecond
	c.DLQ.Topic = h.dlq
	c.Admin.Addr = "127.0.0.1:0"
	c.Shutdown.DrainTimeout = 5 * time.Second
	c.Log.Level = "warn"
	return c
}

// running is an App started by start.
type running struct {
	App  *app.App
	Reg  *prometheus.Registry
	stop context.CancelFunc
	done chan struct{} // closed when Run returned
	err  error         // Run's result, valid after done
}

// Stop sends the SIGTERM path (context cancellation) and waits for Run.
func (r *running) Stop(t *testing.T) {
	t.Helper()
	r.stop()
	select {
	case <-r.done:
		if r.err != nil {
			t.Errorf("app.Run returned %v after shutdown, want nil", r.err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("app.Run did not return within 30s of shutdown")
	}
}

func (h *harness) start(cfg config.Config) *running {
	h.t.Helper()
	if err := cfg.Validate(); err != nil {
		h.t.Fatalf("config: %v", err)
	}
	reg := prometheus.NewRegistry()
	log := zerolog.New(zerolog.NewTestWriter(h.t)).Level(zerolog.WarnLevel)
	a, err := app.New(cfg, log, reg, app.Build{Version: "test"})
	if err != nil {
		h.t.Fatalf("app.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{App: a, Reg: reg, stop: cancel, done: make(chan struct{})}
	go func() { r.err = a.Run(ctx); close(r.done) }()
	h.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
		}
	})
	return r
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
