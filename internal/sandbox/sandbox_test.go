package sandbox

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/emulator"
)

// The pieces start, ampstream joins its group and reports ready on its
// admin endpoint, and Stop takes the SIGTERM path to a clean return.
func TestAppStartsReadyAndStopsCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("joins a consumer group")
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	k, err := StartKafka(nil, kfake.SeedTopics(2, "events"), kfake.SeedTopics(1, "dlq"))
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if !k.InProcess() {
		t.Fatal("StartKafka(nil) did not start the in-process broker")
	}
	emu, err := StartEmulator(emulator.DefaultConfig(), log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = emu.Close() }()

	a, err := StartApp(Config(k.Brokers, "events", "sandbox-test", "dlq", emu.URL()), log, app.Build{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr, err := a.AdminAddr(ctx)
	if err != nil {
		t.Fatalf("admin address: %v", err)
	}
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("/readyz not 200 within 30 s (last: %v)", err)
		case <-a.Done():
			t.Fatalf("app.Run returned %v before it was stopped", a.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := a.Stop(30 * time.Second); err != nil {
		t.Fatalf("Stop: %v, want nil", err)
	}
	select {
	case <-a.Done():
	default:
		t.Fatal("Done not closed after Stop returned")
	}
}

// Brokers given to StartKafka are used as they are, and Close leaves them
// alone.
func TestStartKafkaUsesTheBrokersGiven(t *testing.T) {
	k, err := StartKafka([]string{"kafka-1:9092", "kafka-2:9092"})
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
	if k.InProcess() || len(k.Brokers) != 2 || k.Brokers[0] != "kafka-1:9092" {
		t.Fatalf("StartKafka(two brokers) = %v, in process %v", k.Brokers, k.InProcess())
	}
}
