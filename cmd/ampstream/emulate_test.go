package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func TestRunEmulate(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())

	t.Run("serves the API on the printed URL until the context ends", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		out, stdout := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- runEmulate(ctx, []string{"--listen", "127.0.0.1:0", "--api-keys", "key-1, key-2", "--log-level", "warn"}, stdout, io.Discard)
			_ = stdout.Close()
		}()
		line, err := bufio.NewReader(out).ReadString('\n')
		require.NoError(t, err)
		url, ok := strings.CutPrefix(strings.TrimSpace(line), "listening on ")
		require.True(t, ok, line)

		client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
		postJSON := func(path, body string) (int, map[string]any) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+path, strings.NewReader(body))
			require.NoError(t, err)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			var got map[string]any
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&got))
			return resp.StatusCode, got
		}
		status, got := postJSON("/2/httpapi", `{"api_key":"key-2","events":[{"event_type":"play","device_id":"device-1","insert_id":"a1"}]}`)
		assert.Equal(t, 200, status)
		assert.InDelta(t, 1, got["events_ingested"], 0)
		status, got = postJSON("/batch", `{"api_key":"key-3","events":[]}`)
		assert.Equal(t, 400, status)
		assert.Equal(t, "Invalid API key: key-3", got["error"])

		resp, err := client.Get(url + "/debug/events?device_id=device-1")
		require.NoError(t, err)
		var evs struct {
			Events []struct {
				InsertID string `json:"insert_id"`
			} `json:"events"`
		}
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&evs))
		require.NoError(t, resp.Body.Close())
		require.Len(t, evs.Events, 1)
		assert.Equal(t, "a1", evs.Events[0].InsertID)

		cancel()
		require.NoError(t, <-done)
		client.CloseIdleConnections()
	})

	t.Run("rejects a bad flag value", func(t *testing.T) {
		var stderr bytes.Buffer
		err := runEmulate(context.Background(), []string{"--listen", "127.0.0.1:0", "--fault-rate", "2"}, io.Discard, &stderr)
		assert.EqualError(t, err, "emulate: fault rate must be in [0, 1], is 2")
	})

	t.Run("--help is flag.ErrHelp with the flags listed on stdout", func(t *testing.T) {
		var stdout bytes.Buffer
		err := runEmulate(context.Background(), []string{"--help"}, &stdout, io.Discard)
		assert.ErrorIs(t, err, flag.ErrHelp)
		assert.Contains(t, stdout.String(), "  --httpapi-eps int\n")
	})
}
