// Package admin serves the operator endpoints on the admin address:
// /metrics (Prometheus), /healthz (liveness: the consume loop is making
// progress; it never depends on Amplitude), /readyz (joined the group and
// able to deliver and dead-letter), /startupz (joined the group at least once
// since the start: what a startup probe waits for) and / (a small
// server-rendered status page).
//
// Concurrency: the handlers are safe for concurrent use; Server owns its
// listener and goroutine and Shutdown waits for them.
package admin

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
)

// Probes answer the health questions.
type Probes struct {
	// Live returns nil while the process should keep running.
	Live func() error
	// Ready returns nil while the process should receive traffic (is serving).
	Ready func() error
	// Started returns nil once the process has finished starting; it stays
	// nil from then on.
	Started func() error
}

// Server is the admin HTTP server.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// Handler returns the admin mux.
func Handler(g prometheus.Gatherer, p Probes, status http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", probe(p.Live))
	mux.HandleFunc("GET /readyz", probe(p.Ready))
	mux.HandleFunc("GET /startupz", probe(p.Started))
	if status != nil {
		mux.Handle("GET /{$}", status)
	}
	return mux
}

func probe(f func() error) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if f != nil {
			if err := f(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintln(w, err.Error())
				return
			}
		}
		fmt.Fprintln(w, "ok")
	}
}

// Start listens on addr (":0" picks a port) and serves h in a goroutine.
func Start(addr string, h http.Handler, log zerolog.Logger) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on admin address %s: %w", addr, err)
	}
	s := &Server{
		srv:  &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second},
		ln:   ln,
		done: make(chan struct{}),
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error().Err(err).Msg("admin server stopped")
		}
	}()
	return s, nil
}

// Addr is the listening address.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Shutdown stops the server, waiting up to ctx for open requests.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	<-s.done
	return err
}
