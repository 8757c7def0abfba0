package istioca

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// ConfigDump is the body Envoy's admin API returns for
// /config_dump?mask=dynamic_active_secrets,dynamic_warming_secrets in an
// Istio sidecar: SDS secret "default" (the chain, private key redacted) and
// "ROOTCA" (the trust root).
func ConfigDump(chainPEM, rootPEM []byte) ([]byte, error) {
	def := &tlsv3.Secret{Name: "default", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
		CertificateChain: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: chainPEM}},
		PrivateKey:       &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "[redacted]"}},
	}}}
	root := &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: rootPEM}},
	}}}
	dump := &adminv3.SecretsConfigDump{}
	for _, s := range []*tlsv3.Secret{def, root} {
		a, err := anypb.New(s)
		if err != nil {
			return nil, err
		}
		dump.DynamicActiveSecrets = append(dump.DynamicActiveSecrets, &adminv3.SecretsConfigDump_DynamicSecret{
			Name: s.Name, VersionInfo: time.Now().UTC().Format(time.RFC3339Nano), LastUpdated: timestamppb.Now(), Secret: a,
		})
	}
	a, err := anypb.New(dump)
	if err != nil {
		return nil, err
	}
	return protojson.MarshalOptions{UseProtoNames: true, Indent: " "}.Marshal(&adminv3.ConfigDump{Configs: []*anypb.Any{a}})
}

// AdminServer is a stand-in for an Envoy admin endpoint on 127.0.0.1.
type AdminServer struct {
	// Addr is host:port; Port is the port alone.
	Addr string
	Port int

	mu   sync.Mutex
	body []byte
	srv  *http.Server
	ln   net.Listener
}

// ServeAdmin answers GET /config_dump with body (change it with SetBody) on
// a free port of 127.0.0.1. Close it when done.
func ServeAdmin(body []byte) (*AdminServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &AdminServer{Addr: ln.Addr().String(), Port: ln.Addr().(*net.TCPAddr).Port, body: body, ln: ln}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		b := s.body
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(b)
	})
	s.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			fmt.Println("istioca: admin server:", err)
		}
	}()
	return s, nil
}

// SetBody changes what /config_dump returns.
func (s *AdminServer) SetBody(b []byte) {
	s.mu.Lock()
	s.body = b
	s.mu.Unlock()
}

// Close stops the server.
func (s *AdminServer) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.srv.Shutdown(ctx)
}
