package testintegration

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/dlq"
	"github.com/ampstream/ampstream/internal/traffic"
)

// poison is one message that must end in the DLQ with reason.
type poison struct {
	name   string
	value  []byte // nil: a Kafka null value (tombstone)
	reason string
}

// poisonKinds returns the hostile inputs of round r (values differ per
// round so each DLQ record can be traced to its source).
func poisonKinds(r int) []poison {
	dev := fmt.Sprintf("poison-device-%03d", r)
	prefix := `{"event_type":"click","device_id":"` + dev + `"`
	nested := func(depth int) string {
		return strings.Repeat(`{"a":`, depth) + "1" + strings.Repeat("}", depth)
	}
	return []poison{
		{"truncated", []byte(prefix + `,"r":` + strconv.Itoa(r)), "malformed_json"},
		{"invalid_utf8", []byte(prefix + `,"p":"\xff\xfe` + strconv.Itoa(r) + `"}`), "malformed_json"},
		{"utf8_surrogate", []byte(prefix + `,"p":"\xed\xa0\x80` + strconv.Itoa(r) + `"}`), "malformed_json"},
		{"raw_nul_in_string", []byte(prefix + `,"p":"a` + "\x00" + strconv.Itoa(r) + `"}`), "malformed_json"},
		{"empty_value", []byte{}, "malformed_json"},
		{"null_value", nil, "malformed_json"},
		{"whitespace", []byte(" \n\t "), "malformed_json"},
		{"nul_bytes", append([]byte("\x00\x00\x00\x00"), byte('0'+r)), "malformed_json"},
		{"nesting_65", []byte(prefix + `,"p":` + nested(65) + `,"r":` + strconv.Itoa(r) + `}`), "malformed_json"},
		// 200k levels: a recursive parser would blow its stack.
		{"nesting_200k", []byte(prefix + `,"r":` + strconv.Itoa(r) + `,"p":` + strings.Repeat("[", 200_000) + strings.Repeat("]", 200_000) + `}`), "malformed_json"},
		{"json_null", []byte(`null` + strings.Repeat(" ", r)), "not_object"},
		{"json_string", []byte(`"event ` + strconv.Itoa(r) + `"`), "not_object"},
		{"no_event_type", []byte(`{"device_id":"` + dev + `","r":` + strconv.Itoa(r) + `}`), "missing_event_type"},
		{"time_as_string", []byte(prefix + `,"time":"yesterday ` + strconv.Itoa(r) + `"}`), "invalid_field"},
		// Over batch.max_bytes (256 KiB in this test): no request may carry it.
		{"huge_300k", []byte(prefix + `,"r":` + strconv.Itoa(r) + `,"blob":"` + strings.Repeat("x", 300_000) + `"}`), "too_large"},
	}
}

// TestChaosPoisonMessages salts a stream with hostile input. Nothing may
// crash, each poison message lands in the DLQ exactly once with its reason
// (no poison-pill loop: the partition keeps advancing past it), and every
// valid event around it — including ones over realtime.max_bytes, deeply
// (but legally) nested ones and ones with escaped NULs — is delivered.
func TestChaosPoisonMessages(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 2, nil)
	g := traffic.New(31, 50, 0.3, nil)

	// Valid but unusual events of one device, numbered like the generator's.
	const odd = "odd-valid-device-01"
	oddN := 0
	oddEvent := func(extra string) []byte {
		oddN++
		return []byte(fmt.Sprintf(`{"event_type":"odd","device_id":%q,"event_id":%d,"insert_id":"odd-%d"%s}`, odd, oddN, oddN, extra))
	}

	// Partition 0 interleaves poison, odd valid events and generator
	// events; partition 1 gets user-only generator events, whose keys never
	// appear on partition 0 (one key, one partition: per-device order is
	// only defined within a partition).
	var p0 []kafka.Message
	var poisons []poison
	for r := range 3 {
		for _, pm := range poisonKinds(r) {
			for range 5 {
				m := g.Normal()
				p0 = append(p0, kafka.Message{Key: m.Key, Value: m.Value})
			}
			p0 = append(p0, kafka.Message{Key: []byte("poison"), Value: pm.value})
			poisons = append(poisons, pm)
		}
		p0 = append(p0,
			// Over realtime.max_bytes (64 KiB): must move to the Batch lane.
			kafka.Message{Key: []byte(odd), Value: oddEvent(`,"blob":"` + strings.Repeat("y", 100_000) + `"`)},
			kafka.Message{Key: []byte(odd), Value: oddEvent(`,"p":` + strings.Repeat(`{"a":`, 40) + "1" + strings.Repeat("}", 40))},
			kafka.Message{Key: []byte(odd), Value: oddEvent(`,"note":"a\u0000b \u00e9\u4e2d\ud83d\ude00"`)},
			kafka.Message{Key: []byte{0x00, 0xff, 0xfe}, Value: oddEvent(`,"k":"binary kafka key"`)},
		)
	}
	produceChunked(t, h, 0, p0)
	var p1 []traffic.Msg
	for range 300 {
		p1 = append(p1, g.UserOnly())
	}
	km := make([]kafka.Message, len(p1))
	for i, m := range p1 {
		km[i] = kafka.Message{Key: m.Key, Value: m.Value}
	}
	h.kafka.ProduceToPartition(t, h.topic, 1, km...)

	want := g.Expected()
	want[odd] = oddN
	valid := 0
	for _, n := range want {
		valid += n
	}
	r := h.start(h.cfgWith(func(c *config.Config) {
		c.Realtime.MaxBytes = 64 << 10
		c.Batch.MaxBytes = 256 << 10
	}))
	rep := h.chaosFinish(want, valid, 60*time.Second)
	select {
	case <-r.Done():
		t.Fatalf("app.Run returned %v before shutdown", r.Err())
	default:
	}
	r.Stop(t)

	// Each poison message is in the DLQ exactly once, with its reason and
	// its original bytes.
	src := map[int64][]byte{}
	for _, m := range h.kafka.ReadAll(t, h.topic) {
		if m.Partition == 0 {
			src[m.Offset] = m.Value
		}
	}
	wantReason := map[string]string{}
	for _, pm := range poisons {
		wantReason[string(pm.value)] = pm.reason
	}
	dead := h.kafka.ReadAll(t, h.dlq)
	seen := map[int64]int{}
	byReason := map[string]int{}
	for _, m := range dead {
		hd := map[string]string{}
		for _, x := range m.Headers {
			hd[x.Key] = string(x.Value)
		}
		off, _ := strconv.ParseInt(hd[dlq.HeaderOffset], 10, 64)
		if hd[dlq.HeaderPartition] != "0" {
			t.Errorf("DLQ record from partition %s offset %d: partition 1 has no poison (reason %s: %s)", hd[dlq.HeaderPartition], off, hd[dlq.HeaderReason], hd[dlq.HeaderDetail])
			continue
		}
		seen[off]++
		byReason[hd[dlq.HeaderReason]]++
		v := src[off]
		exp, ok := wantReason[string(v)]
		switch {
		case !ok:
			t.Errorf("DLQ record for offset %d, which is not poison (%.80q): reason %s: %s", off, v, hd[dlq.HeaderReason], hd[dlq.HeaderDetail])
		case hd[dlq.HeaderReason] != exp:
			t.Errorf("offset %d (%.60q): DLQ reason %q, want %q (detail %s)", off, v, hd[dlq.HeaderReason], exp, hd[dlq.HeaderDetail])
		case string(m.Value) != string(v):
			t.Errorf("offset %d: DLQ value differs from the source message", off)
		}
		if hd[dlq.HeaderDetail] == "" {
			t.Errorf("offset %d: DLQ record without a detail header", off)
		}
	}
	for off, n := range seen {
		if n > 1 {
			t.Errorf("offset %d dead-lettered %d times (a poison-pill loop?)", off, n)
		}
	}
	if len(dead) != len(poisons) {
		t.Errorf("DLQ holds %d records, want %d (one per poison message)", len(dead), len(poisons))
	}
	h.chaosLine("poison", rep, len(dead), fmt.Sprintf("poison=%d kinds=%d dlq_by_reason=%v", len(poisons), len(poisonKinds(0)), byReason),
		fmt.Sprintf("batch_lane=%d", rep.ByRoute["batch"]))
}

// produceChunked writes msgs to one partition in order, in requests under
// 512 KiB (a broker refuses record batches over message.max.bytes, ~1 MB
// by default).
func produceChunked(t *testing.T, h *harness, partition int, msgs []kafka.Message) {
	t.Helper()
	var chunk []kafka.Message
	size := 0
	flush := func() {
		if len(chunk) > 0 {
			h.kafka.ProduceToPartition(t, h.topic, partition, chunk...)
		}
		chunk, size = nil, 0
	}
	for _, m := range msgs {
		if size+len(m.Value) > 512<<10 {
			flush()
		}
		chunk = append(chunk, m)
		size += len(m.Value) + len(m.Key)
	}
	flush()
}
