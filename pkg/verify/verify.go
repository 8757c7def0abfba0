// Package verify proves a namespace (or the mesh) at once: the inventory
// from the API (mesh mode, sidecar versions against the control plane,
// effective PeerAuthentication), every meshed workload's identity from its
// certificates, and every edge between workloads from the wire. Each part
// that cannot run says what is missing; the others still run. An edge with
// no packets is unproven, never encrypted.
package verify

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	istioclient "istio.io/client-go/pkg/clientset/versioned"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/sniff"
)

// Exit codes of `kubectl mesh verify`.
const (
	ExitProven   = 0
	ExitError    = 1
	ExitFailed   = 2
	ExitUnproven = 3
)

// Verdicts of a run.
const (
	VerdictProven   = "PROVEN"
	VerdictFailed   = "FAILED"
	VerdictUnproven = "UNPROVEN"
)

// Scope is what to verify.
type Scope struct {
	AllNamespaces bool
	Namespaces    []string
	// Selector narrows the workloads to those whose pods match it.
	Selector labels.Selector
}

// Clients are what Verify talks to. Istio may be nil: mTLS modes are then
// unknown.
type Clients struct {
	Kube  kubernetes.Interface
	Istio istioclient.Interface
	// Certs reads workload certificates (port-forward to the proxy's admin
	// port, or exec); nil skips the identity part with CertsSkipped.
	Certs *certs.Clients
	// Capture runs one capture per node; nil skips the wire part with
	// WireSkipped.
	Capture CaptureFunc
}

// Config is one run.
type Config struct {
	Scope Scope
	// RootNamespace is Istio's root namespace (mesh-wide policies).
	RootNamespace string
	// Concurrency bounds certificate reads in flight.
	Concurrency int
	// AdminPort is the proxy's admin port.
	AdminPort int
	Now       time.Time
	// CertsSkipped and WireSkipped say why a part does not run.
	CertsSkipped string
	WireSkipped  string
	// Notes receives progress lines (stderr). The identities and the wire
	// write to it at once: give the capture the same SyncWriter.
	Notes io.Writer
}

// SyncWriter serialises writes to w, for progress written by the parts
// that run at once.
func SyncWriter(w io.Writer) io.Writer {
	if s, ok := w.(*syncWriter); ok {
		return s
	}
	return &syncWriter{w: w}
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// Result is everything verify found.
type Result struct {
	Verdict  string `json:"verdict"`
	ExitCode int    `json:"exitCode"`
	// Scope names what was verified, e.g. "namespace default".
	Scope        string           `json:"scope"`
	ControlPlane string           `json:"controlPlane"`
	Workloads    []WorkloadRow    `json:"workloads"`
	Identities   IdentitySection  `json:"identities"`
	Wire         WireSection      `json:"wire"`
	Strict       []StrictWorkload `json:"strictReadiness"`
	// Failures are the proofs that failed (exit 2).
	Failures []string `json:"failures,omitempty"`
	// Unproven are what could not be proven (exit 3).
	Unproven []string `json:"unproven,omitempty"`
	Notes    []string `json:"notes,omitempty"`

	inv *inventory
}

// Verify runs the inventory, then identities and the wire at once, then
// judges the edges and STRICT readiness. An error means the inventory
// itself could not be read.
func Verify(ctx context.Context, c Clients, cfg Config) (*Result, error) {
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 4
	}
	if cfg.RootNamespace == "" {
		cfg.RootNamespace = certs.DefaultRootNamespace
	}
	if cfg.Notes == nil {
		cfg.Notes = io.Discard
	}
	cfg.Notes = SyncWriter(cfg.Notes)
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	inv, err := collect(ctx, c, cfg)
	if err != nil {
		return nil, err
	}
	res := &Result{Scope: scopeName(cfg.Scope), ControlPlane: inv.controlPlane, inv: inv}
	res.Workloads = inv.rows()

	idDone := make(chan IdentitySection, 1)
	go func() { idDone <- identities(ctx, c, cfg, inv) }()
	res.Wire = wire(ctx, c, cfg, inv)
	res.Identities = <-idDone
	res.Strict = strictReadiness(inv, res.Wire.Skipped, res.Wire.Edges)
	res.Notes = append(res.Notes, inv.notes...)
	res.judge()
	return res, nil
}

func scopeName(s Scope) string {
	what := "all namespaces"
	if !s.AllNamespaces {
		what = "namespace"
		if len(s.Namespaces) > 1 {
			what = "namespaces"
		}
		for i, n := range s.Namespaces {
			if i > 0 {
				what += ","
			}
			what += " " + n
		}
	}
	if s.Selector != nil && !s.Selector.Empty() {
		what += fmt.Sprintf(", pods matching %s", s.Selector)
	}
	return what
}

// judge sets the failures, the unproven parts, the verdict and the exit
// code: any failed proof is 2, else anything unproven is 3, else 0.
func (r *Result) judge() {
	for _, w := range r.Workloads {
		switch {
		case w.Mesh == MeshNone && !w.System:
			r.Failures = append(r.Failures, fmt.Sprintf("%s is not in the mesh (no sidecar, not ambient)", w.Name()))
		case w.Mesh == MeshPartial:
			r.Failures = append(r.Failures, fmt.Sprintf("%s: only %d of %d pods have a sidecar", w.Name(), w.WithSidecar, w.Pods))
		}
		if w.Skew {
			r.Failures = append(r.Failures, fmt.Sprintf("%s runs sidecar %v, the control plane is %s: restart it (kubectl mesh restart %s)", w.Name(), w.Versions, w.WantVersion, w.Namespace))
		}
	}
	for _, id := range r.Identities.Rows {
		switch {
		case id.Problem != "" && !id.Read:
			r.Unproven = append(r.Unproven, fmt.Sprintf("identity of %s not read: %s", id.Workload, id.Problem))
		case id.Problem != "":
			r.Failures = append(r.Failures, fmt.Sprintf("identity of %s: %s", id.Workload, id.Problem))
		}
	}
	if r.Identities.Skipped != "" {
		r.Unproven = append(r.Unproven, "identities not checked: "+r.Identities.Skipped)
	}
	if r.Wire.Skipped != "" {
		r.Unproven = append(r.Unproven, "wire not captured: "+r.Wire.Skipped)
	}
	for _, n := range r.Wire.Nodes {
		if n.Error != "" {
			r.Unproven = append(r.Unproven, fmt.Sprintf("node %s not captured: %s", n.Node, n.Error))
		}
	}
	for _, e := range r.Wire.Edges {
		switch {
		case e.Verdict == EdgeUnproven:
			r.Unproven = append(r.Unproven, fmt.Sprintf("no traffic to %s during the capture: make a client call it, or widen --duration", e.DstName()))
		case e.plaintext() && e.SrcMeshed && e.DstMeshed:
			r.Failures = append(r.Failures, fmt.Sprintf("%s → %s is %s between meshed workloads", e.Src, e.DstName(), e.Verdict))
		case e.SrcMeshed && e.DstMeshed && e.Verdict != string(sniff.VerdictEncryptedIstio):
			// Traffic between meshed workloads is proven only as Istio's
			// mTLS; anything else the wire could not tell (a flow caught
			// mid-record, TLS that is not Istio's) leaves it unproven.
			r.Unproven = append(r.Unproven, fmt.Sprintf("%s → %s is %s, not proven to be Istio mTLS (%s): capture again, or longer (--duration)", e.Src, e.DstName(), e.Verdict, e.Evidence))
		}
	}
	switch {
	case len(r.Failures) > 0:
		r.Verdict, r.ExitCode = VerdictFailed, ExitFailed
	case len(r.Unproven) > 0:
		r.Verdict, r.ExitCode = VerdictUnproven, ExitUnproven
	default:
		r.Verdict, r.ExitCode = VerdictProven, ExitProven
	}
}
