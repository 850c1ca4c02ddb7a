package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// adminHTTPClient talks to the apiserver as the admin user, trusting only
// the control plane's own CA.
func adminHTTPClient(p pki) (*http.Client, error) {
	caPEM, err := os.ReadFile(p.caCert)
	if err != nil {
		return nil, fmt.Errorf("read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("no certificate in %s", p.caCert)
	}
	cert, err := tls.LoadX509KeyPair(p.adminCert, p.adminKey)
	if err != nil {
		return nil, fmt.Errorf("load admin client certificate: %w", err)
	}
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		},
	}, nil
}

// waitReady polls until the apiserver is usable by a client that arrives
// right after: /readyz passes (etcd reachable, informers synced, RBAC
// bootstrap policy written, CRD handlers ready) and the "default" namespace,
// which a bootstrap controller creates asynchronously, exists.
func waitReady(ctx context.Context, client *http.Client, server string) error {
	checks := []string{"/readyz", "/api/v1/namespaces/default"}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	last := ""
	for _, path := range checks {
		for {
			status, body, err := get(ctx, client, server+path)
			if err == nil && status == http.StatusOK {
				break
			}
			if err != nil {
				last = err.Error()
			} else {
				last = fmt.Sprintf("%s: HTTP %d: %s", path, status, body)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("apiserver not ready (last answer: %s): %w", last, ctx.Err())
			case <-tick.C:
			}
		}
	}
	return nil
}

func get(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
	return resp.StatusCode, string(body), nil
}

// writeKubeconfig embeds the CA and the admin bearer token (see
// ensureAdminToken for why not the client certificate) so the file is
// self-contained (usable after the data dir moves, and by clients that
// resolve relative paths differently).
func writeKubeconfig(path, server string, p pki, token string) error {
	ca, err := os.ReadFile(p.caCert)
	if err != nil {
		return err
	}
	const name = "orrery-local"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name, Namespace: "default"}
	cfg.CurrentContext = name
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return fmt.Errorf("serialize kubeconfig: %w", err)
	}
	return writeFileAtomic(path, data, 0o600)
}
