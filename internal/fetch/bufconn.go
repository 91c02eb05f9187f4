package fetch

import (
	"bufio"
	"context"
	"net"

	"github.com/segmentio/kafka-go"
)

// readBufferSize is the read buffer between a fetch connection's socket
// and kafka-go's Conn. kafka-go reads through a 4 KiB bufio.Reader of its
// own, one read syscall per 4 KiB of a fetch response (about ten events);
// with this buffer below it one syscall takes up to 256 KiB and kafka-go's
// refills become copies. 256 KiB per partition connection.
const readBufferSize = 256 << 10

// bufferedDialer returns a copy of d whose connections read through a
// readBufferSize buffer. It dials as d would: through d.DialFunc when set,
// or with d's LocalAddr, DualStack, FallbackDelay and KeepAlive (which
// kafka-go ignores once DialFunc is set). TLS and SASL still apply: kafka-go
// layers them over the connection DialFunc returns.
func bufferedDialer(d *kafka.Dialer) *kafka.Dialer {
	b := *d
	dial := d.DialFunc
	if dial == nil {
		dial = (&net.Dialer{
			LocalAddr:     d.LocalAddr,
			DualStack:     d.DualStack,
			FallbackDelay: d.FallbackDelay,
			KeepAlive:     d.KeepAlive,
		}).DialContext
	}
	b.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		return &bufConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}, nil
	}
	return &b
}

// bufConn is a net.Conn whose reads go through a buffer; deadlines and
// writes go to the connection itself.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
