package kafkatest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// Environment of the crash helper process (this test binary, re-executed).
const (
	crashEnvBrokers = "KAFKATEST_CRASH_BROKERS"
	crashEnvGroup   = "KAFKATEST_CRASH_GROUP"
	crashEnvTopic   = "KAFKATEST_CRASH_TOPIC"
)

// crashSessionTimeout is short so the test is quick; production uses kafka-go's 30 s default,
// and the expiry scales with it.
const crashSessionTimeout = 6 * time.Second

// TestCrashMemberHelper is not a test: re-executed by TestGroupCrashedMemberExpires, it joins
// the group, reports its assignment and then hangs until it is SIGKILLed.
func TestCrashMemberHelper(t *testing.T) {
	brokers := os.Getenv(crashEnvBrokers)
	if brokers == "" {
		t.Skip("helper process for TestGroupCrashedMemberExpires")
	}
	cfg := kafka.ConsumerGroupConfig{
		ID:             os.Getenv(crashEnvGroup),
		Brokers:        strings.Split(brokers, ","),
		Topics:         []string{os.Getenv(crashEnvTopic)},
		SessionTimeout: crashSessionTimeout,
	}
	cg, err := kafka.NewConsumerGroup(cfg)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
	for {
		gen, err := cg.Next(context.Background())
		if err != nil {
			continue // temporary join errors; the parent times out if this never succeeds
		}
		fmt.Printf("joined %d\n", len(gen.Assignments[cfg.Topics[0]]))
		select {} // hang holding the membership until the parent kills this process
	}
}

// TestGroupCrashedMemberExpires: a member that dies without leaving holds its partitions until
// its session times out; only then does the rebalance a new member started complete.
func TestGroupCrashedMemberExpires(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for a consumer group session timeout")
	}
	c := Start(t)
	topic := c.CreateTopic(t, t.Name(), 2)
	group := UniqueName("crash")

	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashMemberHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(),
		crashEnvBrokers+"="+strings.Join(c.Brokers, ","), crashEnvGroup+"="+group, crashEnvTopic+"="+topic)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper process: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	joined := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "joined ") || strings.HasPrefix(sc.Text(), "error ") {
				joined <- sc.Text()
				return
			}
		}
		joined <- "helper exited: " + fmt.Sprint(sc.Err())
	}()
	select {
	case line := <-joined:
		if line != "joined 2" {
			t.Fatalf("helper process: %q, want %q", line, "joined 2")
		}
	case <-time.After(time.Minute):
		t.Fatal("helper process did not join within a minute")
	}

	if err := cmd.Process.Kill(); err != nil { // SIGKILL: no LeaveGroup
		t.Fatalf("kill helper: %v", err)
	}
	_ = cmd.Wait()
	killed := time.Now()

	cfg := groupConfig(c, group, topic)
	cfg.SessionTimeout = crashSessionTimeout
	cg := newGroup(t, cfg)
	defer cg.Close()
	gen := nextGen(t, cg)
	waited := time.Since(killed)
	t.Logf("new member got a generation %v after the old member was killed (session timeout %v)", waited.Round(time.Millisecond), crashSessionTimeout)
	if got := assigned(gen, topic); len(got) != 2 {
		t.Fatalf("new member got %v, want both partitions", got)
	}
	// The broker cannot tell a dead member from a slow one before the session timeout, so the
	// hand-over cannot be faster; a generous upper bound catches a member that never expires.
	if waited < crashSessionTimeout/2 || waited > 4*crashSessionTimeout {
		t.Fatalf("hand-over took %v, want about the session timeout %v", waited, crashSessionTimeout)
	}
}
