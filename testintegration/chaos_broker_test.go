package testintegration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ampstream/ampstream/internal/kafkatest"
	"github.com/ampstream/ampstream/internal/traffic"
)

// brokerOutage is how long the broker stays down.
const brokerOutage = 5 * time.Second

// TestChaosBrokerRestart stops the only broker while traffic flows and
// starts it again on the same address with the same data: every fetch,
// heartbeat, commit, DLQ write and produce fails meanwhile. ampstream must
// reconnect on its own and finish with nothing lost.
//
// The test must control the broker. Without KAFKA_BROKERS it runs its own
// kfake cluster on a fixed port with a data directory (kfake.Ports,
// kfake.DataDir), which keeps topics, records and committed offsets across
// the restart. With KAFKA_BROKERS it runs only when KAFKA_BROKER_CTL names
// a control script taking `stop` and `start` (testintegration/kafka-broker.sh)
// that keeps the broker's data across them; it calls `stop`, waits, then
// `start` with KAFKA_KEEP_DATA=1 in the environment.
func TestChaosBrokerRestart(t *testing.T) {
	t.Parallel()
	var (
		k       *kafkatest.Cluster
		stop    func()
		restart func()
	)
	if os.Getenv("KAFKA_BROKERS") != "" && os.Getenv("KAFKATEST_PROVIDER") != kafkatest.ProviderKfake {
		ctl := os.Getenv("KAFKA_BROKER_CTL")
		if ctl == "" {
			t.Skip("KAFKA_BROKERS is set but KAFKA_BROKER_CTL is not: this test restarts the broker and needs to control it")
		}
		k = kafkatest.Start(t)
		stop = func() { brokerCtl(t, ctl, "stop") }
		restart = func() { brokerCtl(t, ctl, "start") }
	} else {
		k, stop, restart = restartableKfake(t)
	}

	h := newHarnessOn(t, k, 6, nil)
	// Every event carries an insert_id: a produce retried across the
	// restart may land twice in Kafka, and Amplitude's dedup must absorb it.
	g := traffic.New(41, 300, 0, nil)
	p := startProducer(h, g, 500)
	r := h.start(h.config())
	eventually(t, 60*time.Second, "delivery before the restart", func() bool { return h.emu.Stats().Ingested >= 1500 })

	atStop := h.emu.Stats()
	stop()
	down := time.Now()
	// A fixed outage, not a condition: the broker is simply gone this long.
	outage := time.NewTimer(brokerOutage)
	<-outage.C
	restart()
	up := time.Now()
	t.Logf("broker down for %s", secs(up.Sub(down)))
	// Taken after the restart: commits made just before the stop must not
	// count as recovery.
	before := h.committedSnapshot()

	eventually(t, 90*time.Second, "every partition's commit to advance after the restart", func() bool {
		return allAdvanced(before, h.committedSnapshot())
	})
	recovered := time.Since(up)
	v0, _, _ := p.counts()
	eventually(t, 30*time.Second, "1000 more events produced after recovery", func() bool {
		v, _, _ := p.counts()
		return v >= v0+1000
	})
	valid, invalid := p.stop()
	_, _, retries := p.counts()
	rep := h.chaosFinish(g.Expected(), valid, 90*time.Second)
	select {
	case <-r.Done():
		t.Fatalf("app.Run returned %v during the broker restart", r.Err())
	default:
	}
	r.Stop(t)
	t.Logf("accepted %d events before the broker stopped", atStop.Accepted)
	h.chaosLine("broker_restart", rep, invalid, "outage_s="+secs(up.Sub(down)), "recover_s="+secs(recovered),
		fmt.Sprintf("producer_retries=%d", retries))
}

// restartableKfake starts a kfake cluster that can be stopped and started
// again on the same port with the same data directory.
func restartableKfake(t *testing.T) (k *kafkatest.Cluster, stop, restart func()) {
	t.Helper()
	port := reusablePort(t)
	opts := []kfake.Opt{
		kfake.NumBrokers(1),
		kfake.Ports(port),
		kfake.DataDir(t.TempDir()),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(1),
		kfake.GroupMinSessionTimeout(time.Second),
	}
	var cur *kfake.Cluster
	start := func() {
		t.Helper()
		// The old listener's port may take a moment to be free again.
		var err error
		for attempt := 0; attempt < 50; attempt++ {
			if cur, err = kfake.NewCluster(opts...); err == nil {
				return
			}
			tm := time.NewTimer(100 * time.Millisecond)
			<-tm.C
		}
		t.Fatalf("start kfake on port %d: %v", port, err)
	}
	start()
	t.Cleanup(func() {
		if cur != nil {
			cur.Close()
		}
	})
	addrs := cur.ListenAddrs()
	t.Logf("chaos: own kfake cluster (restartable), brokers %s", strings.Join(addrs, ","))
	k = &kafkatest.Cluster{Brokers: addrs, Provider: kafkatest.ProviderKfake}
	stop = func() { cur.Close(); cur = nil }
	return k, stop, start
}

// reusablePort returns a 127.0.0.1 port that is free now and below Linux's
// ephemeral range (32768-60999 by default), so that no outgoing connection
// on the host takes it while the broker is down between a stop and a restart.
func reusablePort(t *testing.T) int {
	t.Helper()
	for attempt := 0; attempt < 100; attempt++ {
		port := 20000 + rand.IntN(12000)
		if l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			_ = l.Close()
			return port
		}
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}

// brokerCtl runs the broker control script (bounded to 3 minutes: a JVM
// start on a loaded 2-core machine takes tens of seconds).
func brokerCtl(t *testing.T, ctl, verb string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ctl, verb)
	cmd.Env = append(os.Environ(), "KAFKA_KEEP_DATA=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", ctl, verb, err, out)
	}
	t.Logf("%s %s: %s", ctl, verb, strconv.Quote(strings.TrimSpace(string(out))))
}
