package replay

import (
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/event"
)

func dead(value, reason, failedAt string) kafka.Message {
	return kafka.Message{Topic: "dlq", Partition: 0, Offset: 5, Key: []byte("k"), Value: []byte(value), Headers: []kafka.Header{
		{Key: "trace", Value: []byte("t1")},
		{Key: dlq.HeaderReason, Value: []byte(reason)},
		{Key: dlq.HeaderDetail, Value: []byte("why")},
		{Key: dlq.HeaderTopic, Value: []byte("events")},
		{Key: dlq.HeaderPartition, Value: []byte("3")},
		{Key: dlq.HeaderOffset, Value: []byte("42")},
		{Key: dlq.HeaderFailedAt, Value: []byte(failedAt)},
	}}
}

func TestSelectRecord(t *testing.T) {
	t.Parallel()
	at := "2026-11-27T10:00:00Z"
	noID := `{"event_type":"login","user_id":"u01"}`
	t.Run("an event without insert_id gets the id of its original offset", func(t *testing.T) {
		m, target, reason, ok := selectRecord(dead(noID, "invalid_id_length", at), Options{}, nil)
		if !ok || target != "events" || reason != "invalid_id_length" {
			t.Fatalf("got %v %q %q", ok, target, reason)
		}
		f, err := event.Parse(m.Value)
		if err != nil {
			t.Fatal(err)
		}
		if want := event.StableInsertID("events", 3, 42); string(f.InsertID) != want {
			t.Fatalf("insert_id %q, want %q (the original offset's)", f.InsertID, want)
		}
		for _, h := range m.Headers {
			if h.Key == dlq.HeaderReason {
				t.Fatal("dead-letter headers were not stripped")
			}
		}
		if m.Headers[0].Key != "trace" || string(m.Key) != "k" {
			t.Fatal("the original key and headers must be kept")
		}
	})
	t.Run("an event with insert_id keeps its bytes", func(t *testing.T) {
		v := `{"event_type":"x","device_id":"device-1","insert_id":"abc"}`
		m, _, _, ok := selectRecord(dead(v, "rejected", at), Options{}, nil)
		if !ok || string(m.Value) != v {
			t.Fatalf("value %q", m.Value)
		}
	})
	t.Run("malformed JSON is replayed as it was", func(t *testing.T) {
		m, _, _, ok := selectRecord(dead(`{"x":`, "malformed_json", at), Options{}, nil)
		if !ok || string(m.Value) != `{"x":` {
			t.Fatalf("value %q", m.Value)
		}
	})
	t.Run("the reason filter excludes other reasons", func(t *testing.T) {
		if _, _, _, ok := selectRecord(dead(noID, "daily_quota", at), Options{}, map[string]bool{"invalid_id_length": true}); ok {
			t.Fatal("selected a record of another reason")
		}
	})
	t.Run("the time window filters on the failure time", func(t *testing.T) {
		o := Options{Since: time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)}
		if _, _, _, ok := selectRecord(dead(noID, "x", at), o, nil); ok {
			t.Fatal("selected a record older than --since")
		}
		o = Options{Until: time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)}
		if _, _, _, ok := selectRecord(dead(noID, "x", at), o, nil); !ok {
			t.Fatal("did not select a record before --until")
		}
	})
	t.Run("--to overrides the source topic", func(t *testing.T) {
		_, target, _, _ := selectRecord(dead(noID, "x", at), Options{To: "retry"}, nil)
		if target != "retry" {
			t.Fatalf("target %q", target)
		}
	})
}

func FuzzSelectRecord(f *testing.F) {
	f.Add(`{"event_type":"a","user_id":"u1"}`, "r", "events", "1", "2", "2026-11-27T10:00:00Z")
	f.Add(`[1,2]`, "", "", "x", "-1", "")
	f.Fuzz(func(t *testing.T, value, reason, topic, part, off, at string) {
		m := kafka.Message{Value: []byte(value), Headers: []kafka.Header{
			{Key: dlq.HeaderReason, Value: []byte(reason)},
			{Key: dlq.HeaderTopic, Value: []byte(topic)},
			{Key: dlq.HeaderPartition, Value: []byte(part)},
			{Key: dlq.HeaderOffset, Value: []byte(off)},
			{Key: dlq.HeaderFailedAt, Value: []byte(at)},
		}}
		out, target, _, ok := selectRecord(m, Options{Since: time.Unix(1, 0)}, nil)
		if !ok {
			return
		}
		if target == "" {
			t.Fatal("selected a record with no target")
		}
		if f, err := event.Parse(m.Value); err == nil && len(f.InsertID) > 0 && string(out.Value) != value {
			t.Fatal("an event with an insert_id was changed")
		}
	})
}
