package group

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	"github.com/segmentio/kafka-go/protocol/heartbeat"
	"github.com/stretchr/testify/require"
)

// The bytes of a Heartbeat v4 response as a broker sends them (Kafka's
// HeartbeatResponse.json: ThrottleTimeMs, then ErrorCode), decoded by
// kafka-go's protocol package: responseError finds the error code wherever
// kafka-go v0.4.51 puts it. If kafka-go fixes its field order, this fails
// and responseError must follow.
func TestResponseErrorDecodesKafkaGoHeartbeat(t *testing.T) {
	for _, c := range []struct {
		throttle int32
		code     int16
	}{{0, 0}, {0, int16(kafka.RebalanceInProgress)}, {5, int16(kafka.UnknownMemberId)}, {70_000, 0}, {70_000, int16(kafka.IllegalGeneration)}} {
		var body bytes.Buffer
		_ = binary.Write(&body, binary.BigEndian, int32(7)) // correlation id
		body.WriteByte(0)                                   // header tags
		_ = binary.Write(&body, binary.BigEndian, c.throttle)
		_ = binary.Write(&body, binary.BigEndian, c.code)
		body.WriteByte(0) // body tags
		var msg bytes.Buffer
		_ = binary.Write(&msg, binary.BigEndian, int32(body.Len()))
		msg.Write(body.Bytes())
		_, r, err := protocol.ReadResponse(&msg, protocol.Heartbeat, 4)
		require.NoError(t, err)
		resp := r.(*heartbeat.Response)
		err = responseError(resp.ErrorCode, resp.ThrottleTimeMs)
		if c.code == 0 {
			if c.throttle < 1<<16 {
				require.NoError(t, err, "%+v", c)
			}
			continue
		}
		require.ErrorIs(t, err, kafka.Error(c.code), "%+v", c)
	}
}
