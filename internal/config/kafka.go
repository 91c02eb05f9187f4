package config

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// ClientConfig builds the TLS configuration for broker connections from the
// PEM files, or returns nil when TLS is disabled. It reads the files, so call
// it once at startup; errors wrap ErrInvalid and name the setting and path.
func (t TLS) ClientConfig() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Testing only; Validate does not forbid it, the help text warns.
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // opt-in setting
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("%w: kafka.tls.ca_file = %q: %w", ErrInvalid, t.CAFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%w: kafka.tls.ca_file = %q: no PEM certificate in it", ErrInvalid, t.CAFile)
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" || t.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: kafka.tls.cert_file = %q, kafka.tls.key_file = %q: %w", ErrInvalid, t.CertFile, t.KeyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// KafkaMechanism builds the kafka-go SASL mechanism, or returns nil for
// mechanism none. Errors wrap ErrInvalid and never contain the password.
func (s SASL) KafkaMechanism() (sasl.Mechanism, error) {
	var algo scram.Algorithm
	switch s.Mechanism {
	case SASLNone, "":
		return nil, nil
	case SASLPlain:
		return plain.Mechanism{Username: s.Username, Password: s.Password.Reveal()}, nil
	case SASLScramSHA256:
		algo = scram.SHA256
	case SASLScramSHA512:
		algo = scram.SHA512
	default:
		return nil, fmt.Errorf("%w: kafka.sasl.mechanism = %q: want one of none, plain, scram-sha-256, scram-sha-512", ErrInvalid, s.Mechanism)
	}
	m, err := scram.Mechanism(algo, s.Username, s.Password.Reveal())
	if err != nil {
		// xdg-go/scram fails only on SASLprep of the user name or password;
		// its message does not quote them, but do not risk echoing a secret.
		return nil, fmt.Errorf("%w: kafka.sasl.username or kafka.sasl.password: not valid for SCRAM (SASLprep)", ErrInvalid)
	}
	return m, nil
}
