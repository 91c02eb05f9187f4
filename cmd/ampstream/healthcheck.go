package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ampstream/ampstream/internal/config"
)

const healthcheckSynopsis = `Probes a running ampstream's admin endpoint and exits 0 when it answers 200, 1 otherwise,
printing the answer. Meant for Docker's HEALTHCHECK and compose healthchecks: the image is
distroless, without a shell or curl. The address defaults to admin.addr of the configuration
(--config, AMPSTREAM_ADMIN_ADDR), on 127.0.0.1 when it names no host. --path /healthz asks
liveness, /readyz readiness (the default), /startupz whether the group was joined once.`

// runHealthcheck GETs the admin endpoint of a local ampstream.
func runHealthcheck(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) error {
	fs := newFlagSet("ampstream healthcheck")
	url := fs.String("url", "", "full URL to GET, e.g. http://127.0.0.1:9090/readyz (default: from admin.addr and --path)")
	path := fs.String("path", "/readyz", "endpoint when --url is not given: /readyz, /healthz or /startupz")
	cfgPath := fs.String("config", "", "ampstream YAML config file, for admin.addr")
	timeout := fs.Duration("timeout", 3*time.Second, "how long to wait for the answer")
	if err := parseFlags(fs, healthcheckSynopsis, args, stdout); err != nil {
		return err
	}
	target := *url
	if target == "" {
		var cargs []string
		if *cfgPath != "" {
			cargs = []string{"--config", *cfgPath}
		}
		cfg, err := config.Parse(cargs, getenv)
		if err != nil {
			return usageErr(fs.Name(), err)
		}
		if target, err = adminURL(cfg.Admin.Addr, *path); err != nil {
			return usageErr(fs.Name(), err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return usageErr(fs.Name(), fmt.Errorf("--url: %w", err))
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck %s: %w", target, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	answer := strings.TrimSpace(string(body))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck %s: %s: %s", target, resp.Status, strings.ReplaceAll(answer, "\n", "; "))
	}
	fmt.Fprintf(stdout, "%s: %s\n", target, answer)
	return nil
}

// adminURL turns admin.addr into a URL on this host: an empty or unspecified
// host (":9090", "0.0.0.0:9090", "[::]:9090") is reached on loopback.
func adminURL(addr, path string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("admin.addr %q: %w", addr, err)
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	if port == "0" {
		return "", errors.New("admin.addr has port 0 (picked at start); give --url")
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	return "http://" + net.JoinHostPort(host, port) + path, nil
}
