package testintegration

// The chaos suite: ampstream under crashes, rebalances, broker restarts,
// Amplitude outages and slowness, poison input and overload. Every scenario
// ends with the same proof (chaosFinish): every valid event accepted exactly
// once after deduplication and in per-device order among first deliveries,
// every partition committed to its end offset, and every committed offset
// accepted or dead-lettered. Each logs one line
//
//	CHAOS scenario=<name> broker=<provider> events=… duplicates=… …
//
// whose figures CHAOS.md collects. Run them alone with
// `go test -race -run Chaos ./testintegration/`; -short shortens the long
// windows and skips the heaviest scenarios.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/traffic"
)

// producer writes generator traffic to the source topic at a steady rate
// from its own goroutine until stopped, like the services upstream of a
// real deployment. A failed write is retried (the broker may be
// restarting); the generator is only touched by the producer goroutine, so
// Expected is read after stop.
type producer struct {
	h      *harness
	g      *traffic.Generator
	stopCh chan struct{}
	done   chan struct{}

	// onAck, when set, is called with every batch the broker acknowledged
	// (kafka.Writer.Completion: Partition and Offset are set), from the
	// writer's goroutines.
	onAck func([]kafka.Message)

	mu      sync.Mutex
	valid   int
	invalid int
	retries int
	err     error
}

// startProducer produces about perSecond messages a second in ten ticks a
// second (mix: bursts, user-only, forced-batch and every 50th invalid).
func startProducer(h *harness, g *traffic.Generator, perSecond int) *producer {
	return startProducerAcked(h, g, perSecond, nil)
}

// startProducerAcked is startProducer with an acknowledgement callback
// (producer.onAck).
func startProducerAcked(h *harness, g *traffic.Generator, perSecond int, onAck func([]kafka.Message)) *producer {
	p := &producer{h: h, g: g, onAck: onAck, stopCh: make(chan struct{}), done: make(chan struct{})}
	go p.run(max(perSecond/10, 1))
	h.t.Cleanup(func() { p.stop() })
	return p
}

func (p *producer) run(perTick int) {
	defer close(p.done)
	tr := &kafka.Transport{ClientID: "chaos-producer"}
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Transport:    tr,
		Addr:         kafka.TCP(p.h.kafka.Brokers...),
		Topic:        p.h.topic,
		Balancer:     &kafka.Murmur2Balancer{Consistent: true},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    perTick,
		BatchBytes:   16 << 20,
		BatchTimeout: time.Millisecond,
		WriteTimeout: 10 * time.Second,
		MaxAttempts:  3,
	}
	if p.onAck != nil {
		w.Completion = func(msgs []kafka.Message, err error) {
			if err == nil {
				p.onAck(msgs)
			}
		}
	}
	defer w.Close()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-p.stopCh:
			return
		case <-tick.C:
		}
		msgs := make([]traffic.Msg, perTick)
		for i := range msgs {
			msgs[i] = mixed(p.g, n)
			n++
		}
		km := make([]kafka.Message, len(msgs))
		for i, m := range msgs {
			km[i] = kafka.Message{Key: m.Key, Value: m.Value}
			for k, v := range m.Headers {
				km[i].Headers = append(km[i].Headers, kafka.Header{Key: k, Value: []byte(v)})
			}
		}
		// Generated messages are counted in Expected, so a batch is written
		// until it succeeds, even across a stop request; a write retried
		// after an unclear failure may land twice, which insert_id dedup
		// absorbs. Bounded: 2 minutes of failures fail the test.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			err := w.WriteMessages(ctx, km...)
			cancel()
			if err == nil {
				break
			}
			p.mu.Lock()
			p.retries++
			if time.Now().After(deadline) {
				p.err = fmt.Errorf("produce: %w", err)
				p.mu.Unlock()
				return
			}
			p.mu.Unlock()
			t := time.NewTimer(200 * time.Millisecond)
			<-t.C
		}
		v, inv := countValid(msgs)
		p.mu.Lock()
		p.valid += v
		p.invalid += inv
		p.mu.Unlock()
	}
}

// mixed is message i of the stream mix makes: every 50th invalid, user-only,
// forced-batch and bursting events among normal ones.
func mixed(g *traffic.Generator, i int) traffic.Msg {
	switch {
	case i%50 == 49:
		return g.Invalid()
	case i%17 == 0:
		return g.UserOnly()
	case i%23 == 0:
		return g.Forced("batch")
	case i%3 == 0:
		return g.Burst(i % 2)
	default:
		return g.Normal()
	}
}

// stop ends production and returns the totals. Safe to call twice.
func (p *producer) stop() (valid, invalid int) {
	select {
	case <-p.stopCh:
	default:
		close(p.stopCh)
	}
	<-p.done
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		p.h.t.Errorf("producer: %v", p.err)
		p.err = nil
	}
	return p.valid, p.invalid
}

func (p *producer) counts() (valid, invalid, retries int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.valid, p.invalid, p.retries
}

// chaosFinish waits until valid events were all stored and every partition
// is committed to its end, then proves the suite's invariants and returns
// the delivery report.
func (h *harness) chaosFinish(want map[string]int, valid int, timeout time.Duration) traffic.Report {
	h.t.Helper()
	// Stats().Ingested is cheap; traffic.Check parses every stored event,
	// so it runs once at the end.
	eventually(h.t, timeout, fmt.Sprintf("%d valid events stored and all offsets committed", valid), func() bool {
		return h.emu.Stats().Ingested >= int64(valid) && h.committedAll()
	})
	rep := traffic.Check(h.emu, want)
	if !rep.OK() || rep.Expected != valid {
		h.t.Errorf("delivery: %s (producer counted %d valid events)", rep, valid)
	}
	h.assertCommitsCovered()
	return rep
}

// chaosLine logs the scenario's figures in the fixed format CHAOS.md uses.
// redelivered is Accepted-Ingested: events Amplitude answered 200 for more
// than once, minus those it ingested under a failed answer.
func (h *harness) chaosLine(scenario string, rep traffic.Report, dead int, extra ...string) {
	h.t.Helper()
	s := h.emu.Stats()
	line := fmt.Sprintf("CHAOS scenario=%s broker=%s events=%d dlq=%d accepted=%d ingested=%d duplicates=%d redelivered=%d requests=%d faults=%d",
		scenario, h.kafka.Provider, rep.Expected, dead, s.Accepted, s.Ingested, s.Duplicates, s.Accepted-s.Ingested, s.Requests, s.Faults)
	if len(extra) > 0 {
		line += " " + strings.Join(extra, " ")
	}
	h.t.Log(line)
}

func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 1, 64) }

// committedSum is the sum of the group's committed offsets (-1s count as 0).
func (h *harness) committedSnapshot() map[int]int64 {
	return h.kafka.CommittedOffsets(h.t, h.group, h.topic)
}

// allAdvanced reports whether every partition's committed offset is beyond
// its value in before.
func allAdvanced(before, now map[int]int64) bool {
	for p, b := range before {
		if now[p] <= b {
			return false
		}
	}
	return true
}

// --- ampstream as a child process -------------------------------------------

// buildAmpstream compiles cmd/ampstream (without -race: the child is the
// system under test, the race detector runs in the test binary) into the
// test's temporary directory. The build cache makes repeats cheap.
func buildAmpstream(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go tool on PATH to build cmd/ampstream: %v", err)
	}
	out := filepath.Join(t.TempDir(), "ampstream")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", out, "github.com/ampstream/ampstream/cmd/ampstream")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ampstream: %v\n%s", err, b)
	}
	return out
}

// child is an `ampstream run` process.
type child struct {
	t       *testing.T
	cmd     *exec.Cmd
	logPath string
	admin   string
	done    chan struct{}
	err     error // Wait's result, valid after done
}

// childEnv is the harness configuration as AMPSTREAM_* variables, the way
// an operator would deploy it; extra entries ("KEY=value") are appended and
// win.
func (h *harness) childEnv(admin string, extra ...string) []string {
	c := h.config()
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"AMPSTREAM_KAFKA_BROKERS=" + strings.Join(c.Kafka.Brokers, ","),
		"AMPSTREAM_KAFKA_TOPICS=" + h.topic,
		"AMPSTREAM_KAFKA_GROUP=" + h.group,
		"AMPSTREAM_KAFKA_HEARTBEAT_INTERVAL=" + c.Kafka.HeartbeatInterval.String(),
		"AMPSTREAM_KAFKA_SESSION_TIMEOUT=" + c.Kafka.SessionTimeout.String(),
		"AMPSTREAM_KAFKA_REBALANCE_TIMEOUT=" + c.Kafka.RebalanceTimeout.String(),
		"AMPSTREAM_KAFKA_COMMIT_INTERVAL=" + c.Kafka.CommitInterval.String(),
		"AMPSTREAM_AMPLITUDE_API_KEY=" + c.Amplitude.APIKey.Reveal(),
		"AMPSTREAM_AMPLITUDE_URL=" + h.emuURL,
		"AMPSTREAM_AMPLITUDE_TIMEOUT=" + c.Amplitude.Timeout.String(),
		"AMPSTREAM_AMPLITUDE_THROTTLE_PAUSE=" + c.Amplitude.ThrottlePause.String(),
		"AMPSTREAM_AMPLITUDE_RETRY_MAX_BACKOFF=" + c.Amplitude.RetryMaxBackoff.String(),
		"AMPSTREAM_DLQ_TOPIC=" + h.dlq,
		"AMPSTREAM_ADMIN_ADDR=" + admin,
		"AMPSTREAM_SHUTDOWN_DRAIN_TIMEOUT=" + c.Shutdown.DrainTimeout.String(),
		// info: the admin server's address is read from its "listening" line.
		"AMPSTREAM_LOG_LEVEL=info",
	}
	return append(env, extra...)
}

// startChild runs `bin run` with the harness configuration and returns once
// its admin server listens. The child dies with the test binary (Pdeathsig)
// and is killed by t.Cleanup if still running, so no test leaves one behind.
//
// The admin server binds port 0 and the child logs the address it got: a
// port picked by the test and closed before the child binds it can be taken
// meanwhile by any outgoing connection on the host.
func (h *harness) startChild(bin string, extra ...string) *child {
	t := h.t
	t.Helper()
	logf, err := os.CreateTemp(t.TempDir(), "ampstream-*.log")
	if err != nil {
		t.Fatal(err)
	}
	// CHAOS_CHILD_ENV="AMPSTREAM_X=1 AMPSTREAM_Y=2" adds settings to every
	// child, for experiments (CHAOS.md).
	extra = append(extra, strings.Fields(os.Getenv("CHAOS_CHILD_ENV"))...)
	cmd := exec.Command(bin, "run")
	cmd.Env = h.childEnv("127.0.0.1:0", extra...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		t.Fatalf("start %s run: %v", bin, err)
	}
	c := &child{t: t, cmd: cmd, logPath: logf.Name(), done: make(chan struct{})}
	go func() { c.err = cmd.Wait(); _ = logf.Close(); close(c.done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			c.dumpLog()
		}
	})
	c.admin = c.adminAddr(30 * time.Second)
	return c
}

// adminAddr waits for the child's "admin server listening" log line and
// returns the address in it.
func (c *child) adminAddr(within time.Duration) string {
	c.t.Helper()
	var addr string
	eventually(c.t, within, "the admin server's address in the log", func() bool {
		b, _ := os.ReadFile(c.logPath)
		for _, line := range bytes.Split(b, []byte("\n")) {
			var l struct{ Message, Addr string }
			if json.Unmarshal(line, &l) == nil && strings.HasPrefix(l.Message, "admin server listening") && l.Addr != "" {
				addr = l.Addr
				return true
			}
		}
		if !c.alive() {
			c.t.Fatalf("ampstream (pid %d) exited before its admin server listened: %v", c.cmd.Process.Pid, c.err)
		}
		return false
	})
	return addr
}

// kill9 SIGKILLs the child and waits for it: no drain, no commit, no
// LeaveGroup.
func (c *child) kill9() {
	c.t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		c.t.Fatalf("kill -9: %v", err)
	}
	<-c.done
}

// term sends SIGTERM and waits for a clean exit.
func (c *child) term() {
	c.t.Helper()
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		if c.err != nil {
			c.t.Errorf("ampstream exited with %v after SIGTERM, want 0", c.err)
		}
	case <-time.After(30 * time.Second):
		c.t.Errorf("ampstream did not exit within 30s of SIGTERM")
	}
}

// alive reports whether the process is still running.
func (c *child) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// rssKB reads VmRSS from /proc (0 when unavailable).
func (c *child) rssKB() int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}

// logCount counts the child's log lines containing s and logs the first.
func (c *child) logCount(s string) int {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return 0
	}
	n := 0
	for _, line := range bytes.Split(b, []byte("\n")) {
		if bytes.Contains(line, []byte(s)) {
			if n++; n == 1 {
				c.t.Logf("ampstream pid %d, first of the log lines with %q: %s", c.cmd.Process.Pid, s, line)
			}
		}
	}
	return n
}

func (c *child) dumpLog() {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return
	}
	// One warning per dead-lettered event would fill the tail: keep the rest.
	var kept [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(line, []byte(`"message":"dead-lettering event"`)) {
			kept = append(kept, line)
		}
	}
	b = bytes.Join(kept, []byte("\n"))
	if len(b) > 8000 {
		b = b[len(b)-8000:]
	}
	c.t.Logf("ampstream (pid %d) log tail:\n%s", c.cmd.Process.Pid, b)
}

// cfgWith returns the harness config changed by fn.
func (h *harness) cfgWith(fn func(*config.Config)) config.Config {
	c := h.config()
	if fn != nil {
		fn(&c)
	}
	return c
}
