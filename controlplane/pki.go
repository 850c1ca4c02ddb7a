package main

// Throwaway PKI for a local control plane, laid out like envtest's
// (controller-runtime pkg/internal/testing/certs): one self-signed CA that
// signs the apiserver's serving certificate and an admin client certificate
// in system:masters, plus a separate key pair that signs service-account
// tokens. Everything is kept in DIR/pki and reused on restart, so a
// kubeconfig written by an earlier run stays valid.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki names the files of the control plane's certificates and keys.
type pki struct {
	dir          string
	caCert       string
	caKey        string
	servingCert  string
	servingKey   string
	adminCert    string
	adminKey     string
	saPrivateKey string
	saPublicKey  string
	adminToken   string
	tokenFile    string
	// advertise is the --advertise-address, if any: the serving certificate covers it too.
	advertise net.IP
}

func newPKI(dir string) pki {
	p := func(name string) string { return filepath.Join(dir, name) }
	return pki{
		dir:          dir,
		caCert:       p("ca.crt"),
		caKey:        p("ca.key"),
		servingCert:  p("apiserver.crt"),
		servingKey:   p("apiserver.key"),
		adminCert:    p("admin.crt"),
		adminKey:     p("admin.key"),
		saPrivateKey: p("sa.key"),
		saPublicKey:  p("sa.pub"),
		adminToken:   p("admin.token"),
		tokenFile:    p("tokens.csv"),
	}
}

// ensureAdminToken creates the admin bearer token if it is missing (a data
// dir from before it existed gets one) and writes kube-apiserver's static
// token file from it. The kubeconfig authenticates with this token rather
// than the admin client certificate: kube-apiserver verifies a client
// certificate's chain on every request (ECDSA, about 5% of its CPU under a
// burst of writes), a static token is one map lookup. Both stay in the data
// dir, readable by the owner only, like the client key.
func (p pki) ensureAdminToken() (string, error) {
	token, err := os.ReadFile(p.adminToken)
	if errors.Is(err, os.ErrNotExist) {
		raw := make([]byte, 32)
		if _, err := rand.Read(raw); err != nil {
			return "", fmt.Errorf("generate admin token: %w", err)
		}
		token = []byte(hex.EncodeToString(raw))
		if err := writeFileAtomic(p.adminToken, token, 0o600); err != nil {
			return "", err
		}
	} else if err != nil {
		return "", fmt.Errorf("read %s: %w", p.adminToken, err)
	}
	t := strings.TrimSpace(string(token))
	if t == "" || strings.ContainsAny(t, ",\"\n") {
		return "", fmt.Errorf("%s holds no usable token: remove it to have a new one made", p.adminToken)
	}
	// token,user,uid,"group1,group2": system:masters is bound to cluster-admin.
	line := t + `,orrery-admin,orrery-admin,"system:masters"` + "\n"
	if err := writeFileAtomic(p.tokenFile, []byte(line), 0o600); err != nil {
		return "", err
	}
	return t, nil
}

// certValidity is long because a data dir may be kept for a developer's
// local cluster; the CA never leaves the machine.
const certValidity = 10 * 365 * 24 * time.Hour

// ensure creates whatever is missing. An existing, complete set is kept as
// is; a partial set (a run killed mid-way) is regenerated from scratch
// because the leaf certificates must match the CA.
func (p pki) ensure() error {
	if err := privateDir(p.dir); err != nil {
		return fmt.Errorf("pki dir: %w", err)
	}
	all := []string{p.caCert, p.caKey, p.servingCert, p.servingKey, p.adminCert, p.adminKey, p.saPrivateKey, p.saPublicKey}
	missing := 0
	for _, f := range all {
		if _, err := os.Stat(f); errors.Is(err, os.ErrNotExist) {
			missing++
		} else if err != nil {
			return fmt.Errorf("stat %s: %w", f, err)
		}
	}
	if missing == 0 {
		return p.servingCovers(p.advertise)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now().Add(-time.Hour) // tolerate small clock skew
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "orrery-controlplane-ca"},
		NotBefore:             now,
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return fmt.Errorf("parse CA certificate: %w", err)
	}

	// The serving certificate covers every name a local client or an
	// in-cluster client of the "kubernetes" Service could use; 10.0.0.1 is
	// the first address of --service-cluster-ip-range.
	servingKey, servingDER, err := leaf(caCert, caKey, &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now,
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{
			"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local",
		},
		IPAddresses: servingIPs(p.advertise),
	})
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}

	// The authenticator maps CN to the user name and O to groups;
	// system:masters is bound to cluster-admin by the RBAC bootstrap policy.
	adminKey, adminDER, err := leaf(caCert, caKey, &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "orrery-admin", Organization: []string{"system:masters"}},
		NotBefore:    now,
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return fmt.Errorf("admin client certificate: %w", err)
	}

	// RS256 is what every token consumer understands.
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate service-account key: %w", err)
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return fmt.Errorf("marshal service-account public key: %w", err)
	}

	writes := []struct {
		path  string
		block string
		der   []byte
		key   crypto.Signer
	}{
		{path: p.caCert, block: "CERTIFICATE", der: caDER},
		{path: p.caKey, key: caKey},
		{path: p.servingCert, block: "CERTIFICATE", der: servingDER},
		{path: p.servingKey, key: servingKey},
		{path: p.adminCert, block: "CERTIFICATE", der: adminDER},
		{path: p.adminKey, key: adminKey},
		{path: p.saPrivateKey, key: saKey},
		{path: p.saPublicKey, block: "PUBLIC KEY", der: saPub},
	}
	for _, w := range writes {
		block, der := w.block, w.der
		if w.key != nil {
			block = "PRIVATE KEY"
			if der, err = x509.MarshalPKCS8PrivateKey(w.key); err != nil {
				return fmt.Errorf("marshal key for %s: %w", w.path, err)
			}
		}
		if err := writeFileAtomic(w.path, pem.EncodeToMemory(&pem.Block{Type: block, Bytes: der}), 0o600); err != nil {
			return err
		}
	}
	return nil
}

func leaf(ca *x509.Certificate, caKey crypto.Signer, tmpl *x509.Certificate) (*ecdsa.PrivateKey, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign: %w", err)
	}
	return key, der, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return n
}

// writeFileAtomic writes through a temporary file and rename(2), so a reader
// (or a crash) never sees a half-written certificate or kubeconfig.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("rename into %s: %w", path, err)
	}
	return nil
}

// servingIPs: loopback, the "kubernetes" Service's 10.0.0.1 and the advertised address when there is
// one (nodes and kube-proxy's endpoint for that Service reach the apiserver there).
func servingIPs(advertise net.IP) []net.IP {
	ips := []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback, net.ParseIP("10.0.0.1")}
	if advertise != nil {
		ips = append(ips, advertise)
	}
	return ips
}

// servingCovers fails when a kept serving certificate was made without the advertised address,
// which clients connecting there would refuse.
func (p pki) servingCovers(ip net.IP) error {
	if ip == nil {
		return nil
	}
	raw, err := os.ReadFile(p.servingCert)
	if err != nil {
		return err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return fmt.Errorf("%s holds no PEM certificate", p.servingCert)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("parse %s: %w", p.servingCert, err)
	}
	if cert.VerifyHostname(ip.String()) != nil {
		return fmt.Errorf("%s was made without --advertise-address %s: use a new data dir (or remove its pki/)", p.servingCert, ip)
	}
	return nil
}
