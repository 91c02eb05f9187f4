package app_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/kafkatest"
)

// The app runs the group-lag exporter: once it has consumed everything, every partition
// reports lag 0 and an owner, it reports when it last owned a partition and the generation
// it is a member of, and Run stops the exporter on shutdown.
func TestAppExportsGroupLag(t *testing.T) {
	k := kafkatest.Start(t)
	const parts = 2
	topic := k.CreateTopic(t, "events", parts)
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	srv := httptest.NewServer(emulator.New(emulator.DefaultConfig(), log))
	t.Cleanup(srv.Close)

	for i := range 20 {
		k.Produce(t, topic, kafka.Message{
			Key:   []byte(fmt.Sprintf("device-%05d", i)),
			Value: []byte(fmt.Sprintf(`{"event_type":"e","device_id":"device-%05d","insert_id":"id-%05d"}`, i, i)),
		})
	}

	cfg := config.Default()
	cfg.Kafka.Brokers = k.Brokers
	cfg.Kafka.Topics = []string{topic}
	cfg.Kafka.Group = kafkatest.UniqueName("group")
	cfg.Kafka.HeartbeatInterval = 500 * time.Millisecond
	cfg.Kafka.SessionTimeout = 6 * time.Second
	cfg.Kafka.RebalanceTimeout = 10 * time.Second
	cfg.Kafka.CommitInterval = 200 * time.Millisecond
	cfg.Kafka.LagRefreshInterval = 200 * time.Millisecond
	cfg.Amplitude.APIKey = "test-api-key-0123456789abcdef"
	cfg.Amplitude.URL = srv.URL
	cfg.Admin.Addr = "127.0.0.1:0"
	cfg.DLQ.Topic = k.CreateTopic(t, "dlq", 1)
	cfg.Shutdown.DrainTimeout = 5 * time.Second
	require.NoError(t, cfg.Validate())

	reg := prometheus.NewRegistry()
	a, err := app.New(cfg, log, reg, app.Build{Version: "test"})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var runErr error
	go func() { runErr = a.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})

	caughtUp := func() bool {
		s := a.GroupLag()
		if s.State != "Stable" || s.Unowned != 0 || len(s.Partitions) != parts {
			return false
		}
		for _, p := range s.Partitions {
			if p.Lag != 0 || !p.Owned || p.Committed < 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for !caughtUp() {
		require.Truef(t, time.Now().Before(deadline), "group lag never read caught up: %+v", a.GroupLag())
		time.Sleep(50 * time.Millisecond)
	}
	var sum int64
	for _, p := range a.GroupLag().Partitions {
		sum += p.Committed
	}
	assert.EqualValues(t, 20, sum, "committed offsets cover every produced event")
	assert.Equal(t, 0.0, testutil.ToFloat64(a.Metrics.Group.Unowned.WithLabelValues(topic)))
	assert.Equal(t, 1.0, testutil.ToFloat64(a.Metrics.Group.State.WithLabelValues("Stable")))
	// While it owns partitions, last owned is the time of each refresh
	// (group.State.LastOwned is now while it owns some).
	owned := testutil.ToFloat64(a.Metrics.Group.LastOwnedTS)
	assert.InDelta(t, float64(time.Now().UnixNano())/1e9, owned, 5, "last owned is the last refresh")
	// The generation gauge is the member's generation (a joined member's is
	// at least 1), set at every refresh.
	st := a.Consumer.GroupState()
	require.True(t, st.Member, "%+v", st)
	require.GreaterOrEqual(t, st.Generation, 1)
	deadline = time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(a.Metrics.Group.Generation.WithLabelValues()) != float64(a.Consumer.GroupState().Generation) {
		require.Truef(t, time.Now().Before(deadline), "generation gauge %v, member in %d",
			testutil.ToFloat64(a.Metrics.Group.Generation.WithLabelValues()), a.Consumer.GroupState().Generation)
		time.Sleep(50 * time.Millisecond)
	}

	// The status page shows the membership and the group's lag per partition.
	addr, err := a.AdminAddr(ctx)
	require.NoError(t, err)
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + addr + "/")
	require.NoError(t, err)
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Contains(t, string(page), `<span class="ok">member</span> since`)
	assert.Contains(t, string(page), fmt.Sprintf(`<td class="l">partitions owned</td><td class="l">%d of %d</td>`, parts, parts))
	assert.Contains(t, string(page), `group state <b class="group-state">Stable</b>`)
	for p := range parts {
		assert.Regexp(t, fmt.Sprintf(`<td class="l">%s</td><td>%d</td><td>\d+</td><td>\d+</td><td>0</td><td>0.0</td><td class="l">a member</td>`, topic, p), string(page))
	}

	cancel()
	select {
	case <-done:
		require.NoError(t, runErr)
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return within 30 s of shutdown")
	}
}
