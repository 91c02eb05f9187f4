package consume

import (
	"testing"
	"unsafe"

	"github.com/segmentio/kafka-go"
	"github.com/stretchr/testify/require"

	"github.com/ampstream/ampstream/internal/event"
)

// TestMessageFitsItsSizeClass: every event has a message, in an array per
// chunk of fetchChunk (64) events, and 16 KiB is a size class of the
// allocator; a field added to message or deliver.Item makes every chunk's
// array 18 KiB, in the 18,432-byte class.
func TestMessageFitsItsSizeClass(t *testing.T) {
	require.LessOrEqual(t, unsafe.Sizeof(message{}), uintptr(256))
	require.Equal(t, 64, fetchChunk)
}

// An event without an insert_id is sent with its stable one first, byte for
// byte as (*event.Fields).WithStableInsertID writes it, whether the request
// adds it (NoInsertID: deliver writes {"insert_id":"<id>", then the event
// after its brace) or the item carries a copy: a redelivered event must
// carry the same id, and Amplitude deduplicate it.
func TestAnEventWithoutInsertIDIsSentWithItsStableOne(t *testing.T) {
	p := &partition{topic: "events", id: 3, idPrefix: event.AppendStableInsertIDPrefix(nil, "events", 3)}
	for _, c := range []struct {
		raw    string
		inSend bool // the request adds it, no copy
	}{
		{`{"event_type":"a","device_id":"d1"}`, true},
		{`{ "event_type":"a"}`, true},
		{` {"event_type":"a"}`, false},
		{`{}`, false},
		{`{"insert_id":null,"event_type":"a"}`, false},
		{`{"event_type":"a","insert_id":"given"}`, false},
	} {
		f, err := event.Parse([]byte(c.raw))
		require.NoError(t, err, c.raw)
		m := &message{offset: 1 << 40}
		m.item.Ref = m
		msg := &kafka.Message{Value: []byte(c.raw), Offset: m.offset}
		it := &m.item
		p.setRaw(it, &f, msg)
		require.Equal(t, c.inSend, it.NoInsertID, c.raw)
		sent := string(it.Raw)
		if it.NoInsertID {
			require.Equal(t, c.raw, sent, "%s: not copied", c.raw)
			sent = string(p.AppendInsertIDHead(nil, it)) + c.raw[1:]
		}
		want := c.raw
		if len(f.InsertID) == 0 {
			want = string(f.WithStableInsertID([]byte(c.raw), "events", 3, 1<<40))
		}
		require.Equal(t, want, sent, c.raw)
	}
}
