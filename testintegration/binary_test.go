package testintegration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/traffic"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary builds cmd/ampstream once per test run.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ampstream-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "ampstream")
		out, err := exec.Command("go", "build", "-race", "-o", binPath, "../cmd/ampstream").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// env renders the harness configuration as the environment a Kubernetes
// Deployment would give the binary.
func (h *harness) env(adminAddr string) []string {
	c := h.config()
	return append(os.Environ(),
		"AMPSTREAM_KAFKA_BROKERS="+strings.Join(c.Kafka.Brokers, ","),
		"AMPSTREAM_KAFKA_TOPICS="+h.topic,
		"AMPSTREAM_KAFKA_GROUP="+h.group,
		"AMPSTREAM_KAFKA_HEARTBEAT_INTERVAL=500ms",
		"AMPSTREAM_KAFKA_SESSION_TIMEOUT=6s",
		"AMPSTREAM_KAFKA_REBALANCE_TIMEOUT=10s",
		"AMPSTREAM_KAFKA_COMMIT_INTERVAL=200ms",
		"AMPSTREAM_AMPLITUDE_API_KEY="+c.Amplitude.APIKey.Reveal(),
		"AMPSTREAM_AMPLITUDE_URL="+h.emuURL,
		"AMPSTREAM_AMPLITUDE_TIMEOUT=2s",
		"AMPSTREAM_DLQ_TOPIC="+h.dlq,
		"AMPSTREAM_ADMIN_ADDR="+adminAddr,
		"AMPSTREAM_SHUTDOWN_DRAIN_TIMEOUT=5s",
		"AMPSTREAM_LOG_LEVEL=info",
	)
}

// SIGTERM on the real binary: stop fetching, drain in-flight work under the
// deadline, commit, leave the group, exit 0 — while Amplitude is slow, so
// there is in-flight work to drain.
func TestBinaryDrainsCommitsAndExitsZeroOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	t.Parallel()
	bin := binary(t)
	h := newHarness(t, 3, nil)
	g := traffic.New(31, 200, 0.5, nil)
	var msgs []traffic.Msg
	for i := 0; i < 2000; i++ {
		msgs = append(msgs, g.Normal())
	}
	h.produce(msgs)
	// Every answer takes 300 ms: work is in flight when SIGTERM arrives.
	if err := h.emu.SetFaultRate(1, 1, emulator.Fault{Delay: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "run")
	cmd.Env = h.env("127.0.0.1:0")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })

	eventually(t, 60*time.Second, "some events delivered", func() bool { return h.emu.Stats().Ingested >= 200 })
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("ampstream exited with %v after SIGTERM, want 0\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("ampstream still running 30 s after SIGTERM\n%s", logs.String())
	}
	took := time.Since(sent)
	out := logs.String()
	for _, want := range []string{"stopping: draining partitions", "final offset committed", "left the consumer group"} {
		if !strings.Contains(out, want) {
			t.Errorf("shutdown log lacks %q", want)
		}
	}
	// Nothing committed beyond what Amplitude accepted.
	h.assertCommitsCovered()
	committed := h.kafka.CommittedOffsets(t, h.group, h.topic)
	var n int64
	for _, c := range committed {
		n += max(c, 0)
	}
	t.Logf("SIGTERM: exited 0 after %s; %d events committed, %d ingested", took.Round(time.Millisecond), n, h.emu.Stats().Ingested)
	if n == 0 {
		t.Errorf("nothing committed before exit")
	}

	// A second incarnation picks up exactly where the first left off.
	h.emu.ClearFaults()
	cmd2 := exec.CommandContext(context.Background(), bin, "run")
	cmd2.Env = h.env("127.0.0.1:0")
	var logs2 bytes.Buffer
	cmd2.Stdout, cmd2.Stderr = &logs2, &logs2
	if err := cmd2.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd2.Process.Kill() })
	eventually(t, 60*time.Second, "the rest delivered and committed", func() bool {
		return traffic.Check(h.emu, g.Expected()).OK() && h.committedAll()
	})
	_ = cmd2.Process.Signal(syscall.SIGTERM)
	if err := cmd2.Wait(); err != nil {
		t.Errorf("second run exited with %v\n%s", err, logs2.String())
	}
	if rep := traffic.Check(h.emu, g.Expected()); !rep.OK() {
		t.Fatalf("delivery: %s", rep)
	}
}
