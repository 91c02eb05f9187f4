package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// selfSigned writes a self-signed certificate and its key as PEM files.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ampstream-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)

	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return certFile, keyFile
}

func TestTLSClientConfig(t *testing.T) {
	t.Parallel()
	cert, key := selfSigned(t)

	t.Run("disabled TLS gives no config", func(t *testing.T) {
		t.Parallel()
		cfg, err := TLS{CAFile: cert}.ClientConfig()
		require.NoError(t, err)
		assert.Nil(t, cfg)
	})
	t.Run("a CA file and a client pair load", func(t *testing.T) {
		t.Parallel()
		cfg, err := TLS{Enabled: true, CAFile: cert, CertFile: cert, KeyFile: key}.ClientConfig()
		require.NoError(t, err)
		require.NotNil(t, cfg.RootCAs)
		assert.Len(t, cfg.Certificates, 1)
		assert.False(t, cfg.InsecureSkipVerify)
	})
	t.Run("no files means system roots", func(t *testing.T) {
		t.Parallel()
		cfg, err := TLS{Enabled: true, InsecureSkipVerify: true}.ClientConfig()
		require.NoError(t, err)
		assert.Nil(t, cfg.RootCAs)
		assert.True(t, cfg.InsecureSkipVerify)
	})
	t.Run("a missing CA file names the setting", func(t *testing.T) {
		t.Parallel()
		_, err := TLS{Enabled: true, CAFile: "/nonexistent/ca.pem"}.ClientConfig()
		require.ErrorIs(t, err, ErrInvalid)
		require.ErrorIs(t, err, os.ErrNotExist)
		assert.Contains(t, err.Error(), "kafka.tls.ca_file")
	})
	t.Run("a CA file without certificates is rejected", func(t *testing.T) {
		t.Parallel()
		_, err := TLS{Enabled: true, CAFile: key}.ClientConfig()
		require.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), "no PEM certificate")
	})
	t.Run("a key that does not match is rejected", func(t *testing.T) {
		t.Parallel()
		_, otherKey := selfSigned(t)
		_, err := TLS{Enabled: true, CertFile: cert, KeyFile: otherKey}.ClientConfig()
		require.ErrorIs(t, err, ErrInvalid)
		assert.Contains(t, err.Error(), "kafka.tls.cert_file")
	})
}

func TestSASLKafkaMechanism(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mechanism string
		wantName  string
	}{
		{SASLNone, ""},
		{SASLPlain, "PLAIN"},
		{SASLScramSHA256, "SCRAM-SHA-256"},
		{SASLScramSHA512, "SCRAM-SHA-512"},
	}
	for _, tt := range tests {
		t.Run(tt.mechanism, func(t *testing.T) {
			t.Parallel()
			m, err := SASL{Mechanism: tt.mechanism, Username: "u", Password: "p"}.KafkaMechanism()
			require.NoError(t, err)
			if tt.wantName == "" {
				assert.Nil(t, m)
				return
			}
			require.NotNil(t, m)
			assert.Equal(t, tt.wantName, m.Name())
		})
	}

	t.Run("an unknown mechanism is rejected", func(t *testing.T) {
		t.Parallel()
		_, err := SASL{Mechanism: "gssapi"}.KafkaMechanism()
		require.ErrorIs(t, err, ErrInvalid)
	})
	t.Run("a SCRAM error does not echo the password", func(t *testing.T) {
		t.Parallel()
		// U+0007 is prohibited by SASLprep.
		_, err := SASL{Mechanism: SASLScramSHA512, Username: "u", Password: "bad\u0007secret"}.KafkaMechanism()
		require.ErrorIs(t, err, ErrInvalid)
		assert.NotContains(t, err.Error(), "secret")
	})
}
