package testintegration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ampstream/ampstream/internal/app"
	"github.com/ampstream/ampstream/internal/config"
	"github.com/ampstream/ampstream/internal/emulator"
	"github.com/ampstream/ampstream/internal/traffic"
)

// selfSigned writes a CA-less self-signed certificate for 127.0.0.1 and
// returns the server TLS config and the PEM path a client trusts.
func selfSigned(t *testing.T) (*tls.Config, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "kfake"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:                  true,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(path, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}, path
}

// Managed Kafka needs TLS and SASL: the whole path (group, fetch, commit,
// DLQ writes) runs over each mechanism, on an in-process broker that
// refuses unauthenticated clients.
func TestSASLAndTLSBrokers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, mech, kfakeMech string
		tls                   bool
	}{
		{"SASL PLAIN", config.SASLPlain, "PLAIN", false},
		{"SASL SCRAM-SHA-256", config.SASLScramSHA256, "SCRAM-SHA-256", false},
		{"SASL SCRAM-SHA-512 over TLS", config.SASLScramSHA512, "SCRAM-SHA-512", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := []kfake.Opt{
				kfake.NumBrokers(1), kfake.EnableSASL(), kfake.Superuser(tc.kfakeMech, "ampstream", "s3cret-pass"),
				kfake.SeedTopics(2, "events"), kfake.SeedTopics(1, "events-dlq"),
			}
			cfg := config.Default()
			if tc.tls {
				srvTLS, caPath := selfSigned(t)
				opts = append(opts, kfake.TLS(srvTLS))
				cfg.Kafka.TLS = config.TLS{Enabled: true, CAFile: caPath}
			}
			cluster, err := kfake.NewCluster(opts...)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(cluster.Close)

			emu := emulator.New(emulator.DefaultConfig(), zerolog.Nop())
			ectx, cancel := context.WithCancel(context.Background())
			t.Cleanup(cancel)
			srv, err := emulator.Start(ectx, "127.0.0.1:0", emu)
			if err != nil {
				t.Fatal(err)
			}

			cfg.Kafka.Brokers = cluster.ListenAddrs()
			cfg.Kafka.Topics = []string{"events"}
			cfg.Kafka.Group = "secure-group"
			cfg.Kafka.HeartbeatInterval = 500 * time.Millisecond
			cfg.Kafka.CommitInterval = 200 * time.Millisecond
			cfg.Kafka.SASL = config.SASL{Mechanism: tc.mech, Username: "ampstream", Password: "s3cret-pass"}
			cfg.Amplitude.APIKey = "secure-key"
			cfg.Amplitude.URL = srv.URL()
			cfg.DLQ.Topic = "events-dlq"
			cfg.Admin.Addr = "127.0.0.1:0"
			if err := cfg.Validate(); err != nil {
				t.Fatal(err)
			}
			_, transport, err := app.KafkaClients(cfg.Kafka)
			if err != nil {
				t.Fatal(err)
			}
			g := traffic.New(41, 20, 0, nil)
			var msgs []kafka.Message
			for i := 0; i < 100; i++ {
				var m traffic.Msg
				if i%10 == 0 {
					m = g.Invalid()
				} else {
					m = g.Normal()
				}
				msgs = append(msgs, kafka.Message{Key: m.Key, Value: m.Value})
			}
			w := &kafka.Writer{Addr: kafka.TCP(cfg.Kafka.Brokers...), Topic: "events", Transport: transport, Balancer: &kafka.Murmur2Balancer{Consistent: true}}
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				t.Fatalf("produce over %s: %v", tc.name, err)
			}
			_ = w.Close()

			a, err := app.New(cfg, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel), prometheus.NewRegistry(), app.Build{})
			if err != nil {
				t.Fatal(err)
			}
			actx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			var runErr error
			go func() { runErr = a.Run(actx); close(done) }()
			client := &kafka.Client{Addr: kafka.TCP(cfg.Kafka.Brokers...), Transport: transport}
			committed := func() int64 {
				resp, err := client.OffsetFetch(context.Background(), &kafka.OffsetFetchRequest{GroupID: "secure-group", Topics: map[string][]int{"events": {0, 1}}})
				if err != nil {
					return -1
				}
				var n int64
				for _, p := range resp.Topics["events"] {
					n += max(p.CommittedOffset, 0)
				}
				return n
			}
			t.Cleanup(func() { stop(); <-done })
			deadline := time.Now().Add(30 * time.Second)
			for !(traffic.Check(emu, g.Expected()).OK() && committed() == int64(len(msgs))) {
				if time.Now().After(deadline) {
					t.Fatalf("no delivery over %s: %s; committed %d of %d; emulator %+v", tc.name,
						traffic.Check(emu, g.Expected()), committed(), len(msgs), emu.Stats())
				}
				<-time.After(50 * time.Millisecond) // polling interval
			}
			stop()
			<-done
			if runErr != nil {
				t.Fatalf("Run: %v", runErr)
			}
		})
	}
}
