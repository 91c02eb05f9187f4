package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// brokerChildEnv makes the test binary serve as the benchmark's broker
// child (what ampstream-bench's "broker" argument does).
const brokerChildEnv = "AMPSTREAM_BENCH_BROKER_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(brokerChildEnv) == "1" {
		if err := ServeBroker(context.Background(), os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestChildBrokerServesAndStopsWithTheBenchmark starts kfake in a child
// process, uses it, reads its counters, and checks that closing the cluster
// ends the child.
func TestChildBrokerServesAndStopsWithTheBenchmark(t *testing.T) {
	t.Setenv(brokerChildEnv, "1")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := startCluster(ctx, "", []string{os.Args[0]})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	defer func() {
		if !closed {
			c.close()
		}
	}()
	if got := c.kind(); got != "kfake (child process)" {
		t.Errorf("kind %q", got)
	}
	if c.child.cmd.Process.Pid == os.Getpid() {
		t.Fatal("the broker runs in this process")
	}
	p, err := c.produce(ctx, "child-broker-test", MixBatch, 1, 3000, 3)
	if err != nil {
		t.Fatal(err)
	}
	end, err := c.endOffsets(ctx, p.Topic, []int{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, e := range end {
		n += e
	}
	if n != 3000 {
		t.Errorf("end offsets sum to %d, want 3000", n)
	}
	// Its CPU time may still be below one clock tick; TestProcStat checks
	// that figure.
	if u := c.usage(); u.brokerMinflt <= 0 {
		t.Errorf("broker child's minor page faults: %d, want > 0", u.brokerMinflt)
	}

	c.close()
	closed = true
	if st := c.child.cmd.ProcessState; st == nil || !st.Exited() || st.ExitCode() != 0 {
		t.Errorf("broker child after close: %v, want a clean exit", st)
	}
}

// TestProcStat reads this process's counters from /proc and compares them
// with getrusage's.
func TestProcStat(t *testing.T) {
	var x uint64
	for start := time.Now(); time.Since(start) < 100*time.Millisecond; {
		x++ // CPU time to measure
	}
	cpu, minflt, ok := procStat(strconv.Itoa(os.Getpid()))
	u := takeUsage()
	if !ok {
		t.Fatal("/proc/<pid>/stat not read")
	}
	if diff := (u.cpu - cpu).Abs(); cpu <= 0 || diff > 50*time.Millisecond+u.cpu/10 {
		t.Errorf("CPU from /proc %v, from getrusage %v (spun %d times)", cpu, u.cpu, x)
	}
	if minflt <= 0 || minflt > u.minflt {
		t.Errorf("minor faults from /proc %d, from getrusage %d", minflt, u.minflt)
	}
}
