package config_test

import (
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/ampstream/ampstream/internal/config"
)

// How cmd wires the package: Load, print Usage on --help, fail on anything
// else.
func Example() {
	getenv := func(k string) string {
		return map[string]string{"AMPSTREAM_AMPLITUDE_API_KEY": "k", "AMPSTREAM_KAFKA_TOPICS": "a,b"}[k]
	}
	cfg, err := config.Load([]string{"--kafka.group=g1", "--realtime.max_bytes=256KiB"}, getenv)
	if errors.Is(err, flag.ErrHelp) {
		_ = config.Usage(os.Stdout, "ampstream")
		return
	}
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(cfg.Kafka.Group, cfg.Kafka.Topics, cfg.Realtime.MaxBytes, cfg.Amplitude.BaseURL(), cfg.Amplitude.APIKey)
	// Output: g1 [a b] 262144 https://api2.amplitude.com [redacted]
}
