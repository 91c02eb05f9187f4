package fetch

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
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
// readBufferSize buffer; dialRaw hands back the one a dial made: the
// Fetcher writes its fetches and metadata requests to it and reads their
// responses itself (wire.go, leader.go), under kafka-go's Conn, which does
// the rest (offsets, API versions, SASL). It dials as d would: through d.DialFunc when set, or with d's
// LocalAddr, DualStack, FallbackDelay and KeepAlive (which kafka-go ignores
// once DialFunc is set). TLS is done here, as kafka-go's Dialer would (the
// server name defaults to the host dialled), so the buffer and the
// Fetcher's reads sit above it; SASL, which wraps nothing, is left to
// kafka-go.
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
	tlsConfig := d.TLS
	b.TLS = nil
	b.DialFunc = func(ctx context.Context, network, address string) (net.Conn, error) {
		c, err := dial(ctx, network, address)
		if err != nil {
			return nil, err
		}
		if tlsConfig != nil {
			cfg := tlsConfig
			if cfg.ServerName == "" {
				cfg = cfg.Clone()
				host, _, err := net.SplitHostPort(address)
				if err != nil {
					host = address
				}
				cfg.ServerName = host
			}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				_ = c.Close()
				return nil, err
			}
			c = tc
		}
		bc := &bufConn{Conn: c, r: bufio.NewReaderSize(c, readBufferSize)}
		if slot, ok := ctx.Value(rawSlot{}).(**bufConn); ok {
			*slot = bc
		}
		return bc, nil
	}
	return &b
}

// rawSlot is the context key under which dialRaw asks bufferedDialer's
// DialFunc for the connection it makes: each dial has a slot of its own,
// so dials may run concurrently.
type rawSlot struct{}

// dialRaw runs dial (a dial through a bufferedDialer) and returns kafka-go's
// Conn with the socket under it.
func dialRaw(ctx context.Context, dial func(context.Context) (*kafka.Conn, error)) (*kafka.Conn, *bufConn, error) {
	var raw *bufConn
	conn, err := dial(context.WithValue(ctx, rawSlot{}, &raw))
	if err != nil {
		return nil, nil, err
	}
	if raw == nil {
		_ = conn.Close()
		return nil, nil, errors.New("fetch: the connection was not dialled through the Fetcher's Dialer")
	}
	return conn, raw, nil
}

// bufConn is a net.Conn whose reads go through a buffer; deadlines and
// writes go to the connection itself.
type bufConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }
