package testintegration

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Modes of a faultProxy.
const (
	proxyPass      = iota // forward both ways
	proxyDelay            // forward each chunk after the delay: a slow broker
	proxyBlackhole        // accept and read, forward nothing: a partitioned broker
)

// faultProxy is a TCP proxy on 127.0.0.1 in front of one broker's client
// listener, which can slow the traffic down or drop it. Its owner is the
// test: t.Cleanup closes the listener and every connection and waits for
// every goroutine.
type faultProxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	delay  time.Duration
	mode   atomic.Int32

	mu     sync.Mutex
	conns  map[net.Conn]struct{} // client and upstream sides
	closed bool
	wg     sync.WaitGroup
}

func startFaultProxy(t *testing.T, target string, delay time.Duration) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &faultProxy{t: t, ln: ln, target: target, delay: delay, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

// setMode switches the mode for every chunk read from now on.
func (p *faultProxy) setMode(m int32) { p.mode.Store(m) }

// cut closes every open connection (clients see a reset and reconnect).
func (p *faultProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
		delete(p.conns, c)
	}
}

func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}

// track registers c; false when the proxy is closed (c is closed then).
func (p *faultProxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return // listener closed
		}
		if !p.track(c) {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// serve connects c to the broker, or, in blackhole mode, swallows what c
// sends (the connection hangs, as behind a partition).
func (p *faultProxy) serve(c net.Conn) {
	defer p.wg.Done()
	if p.mode.Load() == proxyBlackhole {
		_, _ = io.Copy(io.Discard, c)
		_ = c.Close()
		return
	}
	up, err := net.DialTimeout("tcp", p.target, 2*time.Second)
	if err != nil {
		_ = c.Close()
		return
	}
	if !p.track(up) {
		_ = c.Close()
		return
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.pipe(up, c) }()
	p.pipe(c, up)
}

// pipe copies src to dst chunk by chunk, applying the mode of the moment;
// when either side ends, both are closed.
func (p *faultProxy) pipe(dst, src net.Conn) {
	defer func() { _ = dst.Close(); _ = src.Close() }()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			switch p.mode.Load() {
			case proxyBlackhole:
				continue // dropped
			case proxyDelay:
				tm := time.NewTimer(p.delay)
				<-tm.C
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF, a reset, or cut/close closed it
		}
	}
}
