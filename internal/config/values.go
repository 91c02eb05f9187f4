package config

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts every environment variable name.
const EnvPrefix = "AMPSTREAM_"

// envName maps "kafka.sasl.mechanism" to "AMPSTREAM_KAFKA_SASL_MECHANISM".
func envName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// env returns the setting's environment variable name.
func (s setting) env() string { return envName(s.key) }

// set parses raw and stores it in s's field of c. The error does not wrap a
// sentinel; callers add the setting name and where the value came from.
func (s setting) set(c *Config, raw string) error {
	switch p := s.field(c).(type) {
	case *string:
		v := strings.TrimSpace(raw)
		if s.enum != nil && !slices.Contains(s.enum, v) {
			return fmt.Errorf("want one of %s", strings.Join(s.enum, ", "))
		}
		*p = v
	case *Secret:
		// Secrets are taken verbatim: no trimming, nothing to echo back.
		*p = Secret(raw)
	case *[]string:
		*p = splitList(raw)
	case *int:
		var n int64
		var err error
		if s.bytes {
			n, err = parseBytes(raw)
		} else {
			n, err = strconv.ParseInt(strings.TrimSpace(raw), 10, 0)
			if err != nil {
				err = errors.New("want an integer")
			}
		}
		if err != nil {
			return err
		}
		*p = int(n)
	case *float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return errors.New("want a finite number")
		}
		*p = f
	case *bool:
		b, err := strconv.ParseBool(strings.TrimSpace(raw))
		if err != nil {
			return errors.New("want true or false")
		}
		*p = b
	case *time.Duration:
		d, err := time.ParseDuration(strings.TrimSpace(raw))
		if err != nil {
			return errors.New("want a duration such as 250ms, 30s or 1h")
		}
		*p = d
	default:
		return fmt.Errorf("setting %s has unsupported field type %T", s.key, p)
	}
	return nil
}

// format renders s's value in c the way set parses it back.
func (s setting) format(c *Config) string {
	switch p := s.field(c).(type) {
	case *string:
		return *p
	case *Secret:
		return p.String()
	case *[]string:
		return strings.Join(*p, ",")
	case *int:
		return strconv.Itoa(*p)
	case *float64:
		return strconv.FormatFloat(*p, 'g', -1, 64)
	case *bool:
		return strconv.FormatBool(*p)
	case *time.Duration:
		return formatDuration(*p)
	default:
		return fmt.Sprintf("%v", p)
	}
}

// typeName names s's type for help and the reference.
func (s setting) typeName() string {
	switch s.field(&Config{}).(type) {
	case *string:
		if s.enum != nil {
			return strings.Join(s.enum, "|")
		}
		return "string"
	case *Secret:
		return "secret"
	case *[]string:
		return "list"
	case *int:
		if s.bytes {
			return "bytes"
		}
		return "int"
	case *float64:
		return "float"
	case *bool:
		return "bool"
	case *time.Duration:
		return "duration"
	default:
		return "?"
	}
}

// isBool reports whether the flag may be given without a value.
func (s setting) isBool() bool {
	_, ok := s.field(&Config{}).(*bool)
	return ok
}

// isSecret reports whether the value must never appear in output.
func (s setting) isSecret() bool {
	_, ok := s.field(&Config{}).(*Secret)
	return ok
}

// splitList splits a comma-separated list, trimming blanks around items and
// dropping empty items, so "a, b," is [a b] and "" is empty.
func splitList(raw string) []string {
	out := []string{}
	for item := range strings.SplitSeq(raw, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// byteUnit returns the multiplier of a size suffix, matched
// case-insensitively. KB/MB/GB are decimal (SI), KiB/MiB/GiB binary.
func byteUnit(suffix string) (int64, bool) {
	switch strings.ToLower(suffix) {
	case "", "b":
		return 1, true
	case "kb":
		return 1000, true
	case "mb":
		return 1000 * 1000, true
	case "gb":
		return 1000 * 1000 * 1000, true
	case "kib":
		return 1 << 10, true
	case "mib":
		return 1 << 20, true
	case "gib":
		return 1 << 30, true
	}
	return 0, false
}

// parseBytes parses a byte count: a plain non-negative integer, optionally
// followed by a unit B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers
// of 1024), case-insensitive, with or without a space: "10485760", "10MiB",
// "500 KB". Fractions ("1.5MB") are not accepted.
func parseBytes(raw string) (int64, error) {
	const want = "want a byte count such as 1048576, 500KB or 10MiB"
	s := strings.TrimSpace(raw)
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i == 0 {
		return 0, errors.New(want)
	}
	n, err := strconv.ParseInt(s[:i], 10, 64)
	if err != nil {
		return 0, errors.New(want)
	}
	unit, ok := byteUnit(strings.TrimSpace(s[i:]))
	if !ok {
		return 0, errors.New(want)
	}
	if n > math.MaxInt64/unit {
		return 0, errors.New("byte count overflows")
	}
	return n * unit, nil
}

// formatDuration is time.Duration.String without the zero tails: 1h, not
// 1h0m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
