package dlq

import (
	"runtime"
	"sync"
	"testing"
	"time"
	"weak"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/kafkatest"
	"github.com/ampstream/ampstream/internal/metrics"
)

// Once its records are written and done, the writer keeps no reference to
// their keys and values: those are views of the consumer's fetched memory
// (a record batch of a megabyte), which its budget stops counting then.
func TestWrittenRecordsAreNotKeptAlive(t *testing.T) {
	c := kafkatest.Start(t)
	topic := c.CreateTopic(t, "dlq", 1)
	d := New(&kafka.Writer{Addr: kafka.TCP(c.Brokers...), Topic: topic, BatchTimeout: time.Millisecond, RequiredAcks: kafka.RequireAll},
		metrics.New(prometheus.NewRegistry()), zerolog.Nop())
	d.Start()
	defer d.Stop()

	var values []weak.Pointer[byte]
	var wg sync.WaitGroup
	for round := range 3 {
		// A smaller round after a bigger one: the writer's batch memory
		// keeps its capacity.
		for range 40 - 15*round {
			v := append(make([]byte, 0, 4096), `{"event_type":"x"}`...)
			values = append(values, weak.Make(&v[:1][0]))
			wg.Add(1)
			d.Write(Record{Msg: kafka.Message{Topic: "source", Value: v}, Reason: "malformed_json", Detail: "test", Done: wg.Done})
		}
		wg.Wait()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		alive := 0
		for _, w := range values {
			if w.Value() != nil {
				alive++
			}
		}
		if alive == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d written values are still reachable", alive, len(values))
		}
		time.Sleep(10 * time.Millisecond) // polled: the collector has no completion signal to wait on
	}
}
