package testintegration

// Helpers for the tests that run on a 3-node Apache Kafka cluster
// (testintegration/kafka-cluster.sh): which node leads a partition or
// coordinates a group, killing, stopping and restarting nodes, and waiting
// until the cluster takes writes again.
//
//	export KAFKA_CLUSTER_BROKERS=$(testintegration/kafka-cluster.sh start)
//	export KAFKA_CLUSTER_CTL=testintegration/kafka-cluster.sh
//
// Without both the cluster tests are skipped with the reason logged.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/kafkatest"
)

// clusterNodes is the node count of kafka-cluster.sh; node N has node id N.
const clusterNodes = 3

// kafkaCluster is the cluster kafka-cluster.sh runs, controlled through the
// script.
type kafkaCluster struct {
	t       *testing.T
	ctl     string
	brokers []string // the bootstrap list: every node's client address
	touched bool     // a node was stopped or restarted since the last restoreAll
}

// clusterFromEnv returns the cluster named by KAFKA_CLUSTER_BROKERS and
// KAFKA_CLUSTER_CTL, or skips the test. It brings back any node an earlier
// test left stopped, waits until every replica is in sync, and restores
// every node (default advertised address) when the test ends.
func clusterFromEnv(t *testing.T) *kafkaCluster {
	t.Helper()
	brokers, ctl := os.Getenv("KAFKA_CLUSTER_BROKERS"), os.Getenv("KAFKA_CLUSTER_CTL")
	if brokers == "" || ctl == "" {
		t.Skip("KAFKA_CLUSTER_BROKERS and KAFKA_CLUSTER_CTL are not both set: this test needs the 3-node cluster of testintegration/kafka-cluster.sh (CHAOS.md)")
	}
	// go test runs in the package directory: a path relative to the
	// repository root (as in CHAOS.md) is found one level up.
	if _, err := os.Stat(ctl); err != nil && !filepath.IsAbs(ctl) {
		ctl = filepath.Join("..", ctl)
	}
	if abs, err := filepath.Abs(ctl); err == nil {
		ctl = abs
	}
	c := &kafkaCluster{t: t, ctl: ctl, brokers: strings.Split(brokers, ",")}
	if len(c.brokers) != clusterNodes {
		t.Fatalf("KAFKA_CLUSTER_BROKERS=%s: want %d addresses", brokers, clusterNodes)
	}
	// A test that stopped or restarted a node restores the cluster when it
	// ends; the first cluster test of the process checks it too, since an
	// interrupted run may have left a node down.
	if !clusterKnownGood {
		c.restoreAll()
	}
	t.Cleanup(func() {
		if c.touched {
			c.restoreAll()
		}
	})
	return c
}

// clusterKnownGood is true while every node is known to run with its own
// advertised address, in sync and with preferred group coordinators: after
// a restoreAll and until a test stops or restarts a node. The cluster tests
// run one after the other (never t.Parallel), so a plain variable is enough.
var clusterKnownGood bool

// restoreAll starts every stopped node (with its own advertised address)
// and waits until every partition's replicas are in sync.
func (c *kafkaCluster) restoreAll() {
	c.t.Helper()
	for n := 1; n <= clusterNodes; n++ {
		if !c.running(n) {
			c.startNode(n)
		}
	}
	c.waitISR()
	// Restarts leave the group coordinators on fewer nodes: spread them
	// again so each scenario starts from the same kind of cluster.
	c.electLeaders("__consumer_offsets")
	c.touched, clusterKnownGood = false, true
}

// electLeaders moves every partition of topic to its preferred leader (a
// restarted broker leads nothing until then).
func (c *kafkaCluster) electLeaders(topic string) {
	c.t.Helper()
	c.mustRun(nil, "elect-leaders", topic)
}

// run runs the control script (bounded: a JVM start on a loaded 2-core
// machine takes tens of seconds) and returns its stdout.
func (c *kafkaCluster) run(env []string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.ctl, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(c.ctl), strings.Join(args, " "), err, stderr.String())
	}
	if msg := strings.TrimSpace(stderr.String()); msg != "" {
		c.t.Logf("%s %s: %s", filepath.Base(c.ctl), strings.Join(args, " "), msg)
	}
	return stdout.String(), nil
}

func (c *kafkaCluster) mustRun(env []string, args ...string) string {
	c.t.Helper()
	out, err := c.run(env, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// running reports whether node n's JVM runs (the script's status).
func (c *kafkaCluster) running(n int) bool {
	out, _ := c.run(nil, "status")
	return strings.Contains(out, fmt.Sprintf("node %d: running", n))
}

// kill SIGKILLs node n: no controlled shutdown, its leaderships move only
// once the controller fences it (broker.session.timeout.ms, 9 s).
func (c *kafkaCluster) kill(n int) { c.t.Helper(); c.touch(); c.mustRun(nil, "kill", strconv.Itoa(n)) }

// touch marks the cluster as changed by this test.
func (c *kafkaCluster) touch() { c.touched, clusterKnownGood = true, false }

// term stops node n gracefully (SIGTERM: controlled shutdown moves its
// leaderships first) and waits for the JVM to exit.
func (c *kafkaCluster) term(n int) { c.t.Helper(); c.touch(); c.mustRun(nil, "term", strconv.Itoa(n)) }

// startNode starts node n on its kept storage and waits until it is
// registered again; env may set KAFKA_ADVERTISED_ADDR.
func (c *kafkaCluster) startNode(n int, env ...string) {
	c.t.Helper()
	c.touch()
	c.mustRun(env, "start-node", strconv.Itoa(n))
}

// waitISR waits until every partition of every topic has all its replicas
// in sync (a restarted node has caught up).
func (c *kafkaCluster) waitISR() { c.t.Helper(); c.mustRun(nil, "wait-isr", "180") }

// client returns a kafka-go client on a fresh transport (fresh metadata)
// over every node; dead nodes are skipped by kafka-go's dialer.
func (c *kafkaCluster) client() (*kafka.Client, func()) {
	tr := &kafka.Transport{ClientID: "cluster-test", DialTimeout: 2 * time.Second}
	return &kafka.Client{Addr: kafka.TCP(c.brokers...), Timeout: 10 * time.Second, Transport: tr}, tr.CloseIdleConnections
}

// metadata returns fresh metadata for topic.
func (c *kafkaCluster) metadata(topic string) (*kafka.MetadataResponse, error) {
	cl, done := c.client()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	for _, tp := range md.Topics {
		if tp.Name == topic && tp.Error != nil {
			return nil, fmt.Errorf("metadata of %s: %w", topic, tp.Error)
		}
	}
	return md, nil
}

// leaders maps each partition of topic to its leader's node id.
func (c *kafkaCluster) leaders(topic string) map[int]int {
	c.t.Helper()
	md, err := c.metadata(topic)
	if err != nil {
		c.t.Fatalf("leaders of %s: %v", topic, err)
	}
	out := map[int]int{}
	for _, tp := range md.Topics {
		for _, p := range tp.Partitions {
			out[p.ID] = p.Leader.ID
		}
	}
	return out
}

// leaderOf is the node id leading topic/partition.
func (c *kafkaCluster) leaderOf(topic string, partition int) int {
	c.t.Helper()
	id, ok := c.leaders(topic)[partition]
	if !ok {
		c.t.Fatalf("%s/%d: no such partition", topic, partition)
	}
	return id
}

// coordinatorOf asks the cluster (FindCoordinator) which node coordinates
// group, retrying while the coordinator is being loaded or elected.
func (c *kafkaCluster) coordinatorOf(group string) int {
	c.t.Helper()
	cl, done := c.client()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for {
		resp, err := cl.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: group, KeyType: kafka.CoordinatorKeyTypeConsumer})
		if err == nil {
			err = resp.Error
		}
		if err == nil {
			return resp.Coordinator.NodeID
		}
		if ctx.Err() != nil {
			c.t.Fatalf("find the coordinator of group %s: %v", group, err)
		}
		pause(200 * time.Millisecond)
	}
}

// writable reports whether every partition of topic has a leader that
// answers and at least min.insync.replicas (2) replicas in sync: an
// acks=all write to any partition can succeed. Metadata alone is not
// enough: a SIGKILLed broker stays registered, leader and in the ISR until
// the controller fences it (broker.session.timeout.ms).
func (c *kafkaCluster) writable(topic string) bool {
	md, err := c.metadata(topic)
	if err != nil {
		return false
	}
	live := map[int]bool{}
	for _, b := range md.Brokers {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort(b.Host, strconv.Itoa(b.Port)), time.Second)
		if err == nil {
			_ = conn.Close()
			live[b.ID] = true
		}
	}
	for _, tp := range md.Topics {
		if tp.Name != topic || len(tp.Partitions) == 0 {
			continue
		}
		for _, p := range tp.Partitions {
			if p.Error != nil || !live[p.Leader.ID] || len(p.Isr) < 2 {
				return false
			}
		}
		return true
	}
	return false
}

// waitWritable polls until the cluster takes writes to every partition of
// topic again and returns how long that took.
func (c *kafkaCluster) waitWritable(topic string, timeout time.Duration) time.Duration {
	c.t.Helper()
	t0 := time.Now()
	eventually(c.t, timeout, "every partition of "+topic+" to be writable", func() bool { return c.writable(topic) })
	return time.Since(t0)
}

// createTopic creates a uniquely named topic with replication factor 3
// (min.insync.replicas 2 from the broker) and waits until every partition
// has a leader and three replicas in sync.
func (c *kafkaCluster) createTopic(prefix string, partitions int) string {
	c.t.Helper()
	name := kafkatest.UniqueName(prefix)
	cl, done := c.client()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: clusterNodes,
	}}})
	if err == nil {
		err = resp.Errors[name]
	}
	if err != nil {
		c.t.Fatalf("create topic %s: %v", name, err)
	}
	eventually(c.t, 60*time.Second, "topic "+name+" fully replicated", func() bool {
		md, err := c.metadata(name)
		if err != nil {
			return false
		}
		n := 0
		for _, tp := range md.Topics {
			for _, p := range tp.Partitions {
				if p.Error == nil && p.Leader.ID > 0 && len(p.Isr) == clusterNodes {
					n++
				}
			}
		}
		return n == partitions
	})
	return name
}

// kafkatest returns the cluster as a kafkatest.Cluster for the harness.
func (c *kafkaCluster) kafkatest() *kafkatest.Cluster {
	return &kafkatest.Cluster{Brokers: c.brokers, Provider: "kafka-cluster"}
}

// otherThan returns the node ids not in ids, ascending.
func otherThan(ids ...int) []int {
	var out []int
	for n := 1; n <= clusterNodes; n++ {
		if !slices.Contains(ids, n) {
			out = append(out, n)
		}
	}
	return out
}

// pause waits d; for retry loops that poll something other than a
// condition eventually can express (they need the error).
func pause(d time.Duration) {
	t := time.NewTimer(d)
	<-t.C
}
