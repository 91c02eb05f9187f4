package fetch

import (
	"bufio"
	"context"
	"crypto/tls"
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
// readBufferSize buffer, and hands each one to dialed: the Fetcher writes
// its fetches to the leader's connection and reads their responses itself
// (wire.go), under kafka-go's Conn, which does the rest (metadata, offsets,
// SASL). It dials as d would: through d.DialFunc when set, or with d's
// LocalAddr, DualStack, FallbackDelay and KeepAlive (which kafka-go ignores
// once DialFunc is set). TLS is done here, as kafka-go's Dialer would (the
// server name defaults to the host dialled), so the buffer and the
// Fetcher's reads sit above it; SASL, which wraps nothing, is left to
// kafka-go.
func bufferedDialer(d *kafka.Dialer, dialed func(*bufConn)) *kafka.Dialer {
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
		if dialed != nil {
			dialed(bc)
		}
		return bc, nil
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
