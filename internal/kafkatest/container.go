package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"
)

// defaultImage matches the Apache Kafka release testintegration/kafka-broker.sh runs in CI.
const defaultImage = "apache/kafka:4.4.0"

// errNoDocker marks "no container engine here": Start falls through to kfake only on this error.
var errNoDocker = errors.New("no Docker engine")

func containerImage() string {
	if img := os.Getenv("KAFKATEST_IMAGE"); img != "" {
		return img
	}
	return defaultImage
}

// startContainer runs a single-node KRaft broker in a container. The advertised address must be
// the host's mapped port, which is only known after the container has started, so the entrypoint
// waits for a start script that a post-start hook copies in (the same trick the testcontainers
// Kafka module uses). Clients reach it on PLAINTEXT; the broker talks to itself on BROKER.
func startContainer(t testing.TB) (*Cluster, error) {
	t.Helper()
	if err := dockerHealthy(t); err != nil {
		return nil, fmt.Errorf("%w: %w", errNoDocker, err)
	}
	const (
		clientPort = "9092/tcp"
		starter    = "/tmp/kafkatest_start.sh"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req := testcontainers.ContainerRequest{
		Image:        containerImage(),
		ExposedPorts: []string{clientPort},
		Env: map[string]string{
			// Any 16 bytes in URL-safe base64; this one is the testcontainers Kafka module's.
			"CLUSTER_ID":                                             "4L6g3nShT-eMCtK--X86sw",
			"KAFKA_NODE_ID":                                          "1",
			"KAFKA_PROCESS_ROLES":                                    "broker,controller",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                         "1@localhost:9094",
			"KAFKA_LISTENERS":                                        "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":                   "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
			"KAFKA_INTER_BROKER_LISTENER_NAME":                       "BROKER",
			"KAFKA_CONTROLLER_LISTENER_NAMES":                        "CONTROLLER",
			"KAFKA_AUTO_CREATE_TOPICS_ENABLE":                        "true",
			"KAFKA_NUM_PARTITIONS":                                   "1",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                 "1",
			"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":                     "4",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                    "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":                 "0",
			"KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS":                     "1000",
			"KAFKA_HEAP_OPTS":                                        "-Xms256m -Xmx512m",
		},
		Entrypoint: []string{"sh", "-c", "while [ ! -f " + starter + " ]; do sleep 0.1; done; exec sh " + starter},
		LifecycleHooks: []testcontainers.ContainerLifecycleHooks{{
			PostStarts: []testcontainers.ContainerHook{func(ctx context.Context, c testcontainers.Container) error {
				host, err := c.Host(ctx)
				if err != nil {
					return fmt.Errorf("container host: %w", err)
				}
				port, err := c.MappedPort(ctx, clientPort)
				if err != nil {
					return fmt.Errorf("mapped port: %w", err)
				}
				script := fmt.Sprintf("export KAFKA_ADVERTISED_LISTENERS=PLAINTEXT://%s:%s,BROKER://localhost:9093\nexec /etc/kafka/docker/run\n", host, port.Port())
				if err := c.CopyToContainer(ctx, []byte(script), starter, 0o755); err != nil {
					return fmt.Errorf("copy start script: %w", err)
				}
				return nil
			}},
		}},
		WaitingFor: wait.ForLog("Kafka Server started").WithStartupTimeout(2 * time.Minute),
	}
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: req,
		Started:          true,
		Logger:           tclog.TestLogger(t),
	})
	// CleanupContainer also removes a container that was created but failed to start.
	testcontainers.CleanupContainer(t, ctr)
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", containerImage(), err)
	}
	host, err := ctr.Host(ctx)
	if err != nil {
		return nil, fmt.Errorf("container host: %w", err)
	}
	port, err := ctr.MappedPort(ctx, clientPort)
	if err != nil {
		return nil, fmt.Errorf("mapped port: %w", err)
	}
	return &Cluster{Brokers: []string{host + ":" + port.Port()}, Provider: ProviderTestcontainers}, nil
}

// dockerHealthy answers within a few seconds whether a container engine is reachable. Without
// one, testcontainers fails at once with "rootless Docker not found" (or panics in some
// versions, hence the recover).
func dockerHealthy(t testing.TB) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("testcontainers panicked: %v", r)
		}
	}()
	p, err := testcontainers.ProviderDefault.GetProvider(testcontainers.WithLogger(tclog.TestLogger(t)))
	if err != nil {
		return fmt.Errorf("get provider: %w", err)
	}
	defer p.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Health(ctx); err != nil {
		return fmt.Errorf("health: %s", strings.TrimSpace(err.Error()))
	}
	return nil
}
