package emulator

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// shutdownGrace bounds how long Close waits for answers in progress. Slow
// faults end at once because their request contexts are cancelled first.
const shutdownGrace = 5 * time.Second

// Server serves an Emulator on a TCP address until its context is cancelled
// or Close is called.
type Server struct {
	srv    *http.Server
	addr   string
	cancel context.CancelFunc
	wg     sync.WaitGroup
	err    error // from Serve; read after wg.Wait
}

// Start listens on addr ("127.0.0.1:0" picks a free port) and serves e in
// the background. The listen error is returned here rather than from the
// serving goroutine, so a busy port fails Start.
func Start(ctx context.Context, addr string, e *Emulator) (*Server, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	// Request contexts derive from base, so cancelling it ends slow faults
	// before Shutdown waits for them.
	base, cancel := context.WithCancel(ctx)
	s := &Server{
		srv: &http.Server{
			Handler:           e,
			ReadHeaderTimeout: 10 * time.Second,
			BaseContext:       func(net.Listener) context.Context { return base },
		},
		addr:   ln.Addr().String(),
		cancel: cancel,
	}
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		if err := s.srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			s.err = fmt.Errorf("serve emulator: %w", err)
		}
		cancel() // Serve failed on its own: let the other goroutine finish
	}()
	go func() {
		defer s.wg.Done()
		<-base.Done()
		sctx, stop := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
		defer stop()
		if err := s.srv.Shutdown(sctx); err != nil {
			_ = s.srv.Close() // grace ran out: cut the remaining connections
		}
	}()
	return s, nil
}

// Addr is the address the server listens on, with the chosen port.
func (s *Server) Addr() string { return s.addr }

// URL is the base URL, e.g. "http://127.0.0.1:41234".
func (s *Server) URL() string { return "http://" + s.addr }

// Close stops the server and blocks until its goroutines have returned.
func (s *Server) Close() error {
	s.cancel()
	return s.Wait()
}

// Wait blocks until the server has stopped, after its context is cancelled
// or Close is called, and returns the serving error, if any.
func (s *Server) Wait() error {
	s.wg.Wait()
	return s.err
}
