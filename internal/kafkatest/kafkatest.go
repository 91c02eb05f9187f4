// Package kafkatest gives every Kafka test in the repository a broker, chosen in this order:
//
//  1. external: the brokers in KAFKA_BROKERS (comma-separated), e.g. the Apache Kafka that
//     testintegration/kafka-broker.sh starts for CI;
//  2. testcontainers: an apache/kafka container (KRaft, single node) when a Docker engine answers;
//  3. kfake: an in-process franz-go kfake cluster, one per test.
//
// KAFKATEST_PROVIDER=kfake|testcontainers|external forces one of them; KAFKATEST_IMAGE overrides
// the container image (apache/kafka:4.4.0). The test log says which provider ran. With Docker,
// every Start runs its own container (seconds each); the CI broker and kfake are cheap. Tests share an external broker, so every topic a test uses comes from
// CreateTopic, which makes the name unique; consumer group IDs must be unique per test too.
//
// The helpers are synchronous and own no goroutines after they return: each call builds its own
// kafka-go transport or reader and closes it, so tests that check for goroutine leaks see only
// the broker itself, which t.Cleanup stops.
package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Providers, as reported in Cluster.Provider.
const (
	ProviderExternal       = "external"
	ProviderTestcontainers = "testcontainers"
	ProviderKfake          = "kfake"
)

// Cluster is a broker for one test.
type Cluster struct {
	Brokers  []string
	Provider string // "external", "testcontainers", "kfake"
}

// Start returns a broker: KAFKA_BROKERS env (comma list) if set; else testcontainers-go with an
// Apache Kafka image when a Docker engine answers; else an in-process kfake cluster. It logs
// which provider ran. The broker, if Start started one, is stopped by t.Cleanup.
func Start(t testing.TB) *Cluster {
	t.Helper()
	forced := os.Getenv("KAFKATEST_PROVIDER")
	switch forced {
	case "", ProviderExternal, ProviderTestcontainers, ProviderKfake:
	default:
		t.Fatalf("kafkatest: KAFKATEST_PROVIDER=%q: want %s, %s or %s", forced, ProviderExternal, ProviderTestcontainers, ProviderKfake)
	}

	if brokers := splitBrokers(os.Getenv("KAFKA_BROKERS")); len(brokers) > 0 && (forced == "" || forced == ProviderExternal) {
		if err := probe(brokers); err != nil {
			t.Fatalf("kafkatest: KAFKA_BROKERS=%s is set but no broker answers: %v", strings.Join(brokers, ","), err)
		}
		c := &Cluster{Brokers: brokers, Provider: ProviderExternal}
		if err := c.waitForGroupCoordinator(); err != nil {
			t.Fatalf("kafkatest: %v", err)
		}
		t.Logf("kafkatest: provider external, brokers %s", strings.Join(brokers, ","))
		return c
	} else if forced == ProviderExternal {
		t.Fatalf("kafkatest: KAFKATEST_PROVIDER=external needs KAFKA_BROKERS")
	}

	if forced == "" || forced == ProviderTestcontainers {
		c, err := startContainer(t)
		if err == nil {
			err = c.waitForGroupCoordinator()
		}
		if err == nil {
			t.Logf("kafkatest: provider testcontainers (%s), brokers %s", containerImage(), strings.Join(c.Brokers, ","))
			return c
		}
		if forced == ProviderTestcontainers || !errors.Is(err, errNoDocker) {
			// Docker is there but the container failed: falling through would hide a real problem.
			t.Fatalf("kafkatest: testcontainers: %v", err)
		}
		t.Logf("kafkatest: no Docker engine (%v); falling through to kfake", err)
	}

	c, err := startKfake()
	if err != nil {
		t.Fatalf("kafkatest: %v", err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	t.Logf("kafkatest: provider kfake (in-process), brokers %s", strings.Join(brokers, ","))
	return &Cluster{Brokers: brokers, Provider: ProviderKfake}
}

// StartKfake starts an in-process kfake cluster of its own, one broker plus
// opts, whatever KAFKA_BROKERS says: for tests that inject broker answers
// with ControlKey. t.Cleanup closes it.
func StartKfake(t testing.TB, opts ...kfake.Opt) (*Cluster, *kfake.Cluster) {
	t.Helper()
	kc, err := kfake.NewCluster(append([]kfake.Opt{kfake.NumBrokers(1)}, opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: start kfake cluster: %v", err)
	}
	t.Cleanup(kc.Close)
	return &Cluster{Brokers: kc.ListenAddrs(), Provider: ProviderKfake}, kc
}

// startKfake starts a single-broker in-process cluster configured like testintegration's
// broker: auto topic creation on with one partition (the DLQ producer may rely on it), and a
// 1 s minimum session timeout so a test can make a crashed member expire quickly.
func startKfake() (*kfake.Cluster, error) {
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.AllowAutoTopicCreation(),
		kfake.DefaultNumPartitions(1),
		kfake.GroupMinSessionTimeout(time.Second),
	)
	if err != nil {
		return nil, fmt.Errorf("start kfake cluster: %w", err)
	}
	return c, nil
}

func splitBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// probe fails fast when KAFKA_BROKERS points at nothing, instead of every test timing out.
func probe(brokers []string) error {
	var errs []error
	for _, b := range brokers {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", b)
		cancel()
		if err == nil {
			return conn.Close()
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// waitForGroupCoordinator returns once the broker has a group coordinator. A freshly started
// Apache Kafka creates __consumer_offsets on the first FindCoordinator and answers
// GROUP_COORDINATOR_NOT_AVAILABLE until it is loaded; a kafka-go ConsumerGroup then hands that
// error to Next and retries only after JoinGroupBackoff (5 s). Warming up here keeps the first
// group test of a CI run from paying (or, if it treats the error as fatal, failing on) that.
func (c *Cluster) waitForGroupCoordinator() error {
	ctx, cancel := context.WithTimeout(context.Background(), opTimeout)
	defer cancel()
	cl, closeFn := c.client()
	defer closeFn()
	return retryTemporary(ctx, func() error {
		resp, err := cl.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: "kafkatest-warmup", KeyType: kafka.CoordinatorKeyTypeConsumer})
		if err != nil {
			return fmt.Errorf("find group coordinator: %w", err)
		}
		if resp.Error != nil {
			return fmt.Errorf("find group coordinator: %w", resp.Error)
		}
		return nil
	})
}
