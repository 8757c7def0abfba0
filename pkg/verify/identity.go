package verify

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/kubectl-mesh/kubectl-mesh/pkg/certs"
	"github.com/kubectl-mesh/kubectl-mesh/pkg/mesh"
)

// IdentitySection is the identities part: one row per meshed workload
// (one pod each).
type IdentitySection struct {
	// Root is the trust root most workloads verify to (SHA-256, short).
	Root string `json:"root,omitempty"`
	// RootSubject is its subject.
	RootSubject string        `json:"rootSubject,omitempty"`
	Rows        []IdentityRow `json:"rows"`
	// Skipped says why the part did not run.
	Skipped string `json:"skipped,omitempty"`
}

// IdentityRow is one workload's certificate, read from one of its pods.
type IdentityRow struct {
	Workload string    `json:"workload"`
	Pod      string    `json:"pod"`
	SPIFFEID string    `json:"spiffeID,omitempty"`
	Root     string    `json:"root,omitempty"`
	NotAfter time.Time `json:"notAfter,omitempty"`
	// Read says the certificates were read; Problem is then a failed
	// check, else why they could not be read.
	Read    bool   `json:"read"`
	OK      bool   `json:"ok"`
	Problem string `json:"problem,omitempty"`
}

// identities reads one ready pod of each sidecar workload with at most
// cfg.Concurrency reads at once, checks chain, validity and SPIFFE ID with
// the certs engine, and names the workloads whose root is not the one the
// others share. An ambient workload's certificate is read from the ztunnel
// on its pod's node, as `kubectl mesh certs` does.
func identities(ctx context.Context, c Clients, cfg Config, inv *inventory) IdentitySection {
	var sec IdentitySection
	var todo []*workload
	for _, w := range inv.workloads {
		if w.row.Mesh == MeshSidecar || w.row.Mesh == MeshPartial || w.row.Mesh == MeshGateway || w.row.Mesh == MeshAmbient {
			todo = append(todo, w)
		}
	}
	if len(todo) == 0 {
		return sec
	}
	if c.Certs == nil {
		sec.Skipped = cfg.CertsSkipped
		if sec.Skipped == "" {
			sec.Skipped = "no way to reach the proxies' admin port"
		}
		return sec
	}
	fmt.Fprintf(cfg.Notes, "reading the certificates of %d workloads (%d at a time)\n", len(todo), cfg.Concurrency)
	rows := make([]IdentityRow, len(todo))
	roots := make([]*certs.Certificate, len(todo))
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	for i, w := range todo {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rows[i], roots[i] = readIdentity(ctx, *c.Certs, cfg, w)
		}()
	}
	wg.Wait()
	sec.Rows = rows
	sec.Root, sec.RootSubject = commonRoot(roots)
	forbidden := 0
	for i := range sec.Rows {
		r := &sec.Rows[i]
		if strings.Contains(r.Problem, "not allowed to") {
			forbidden++
		}
		if r.Read && r.Root != "" && sec.Root != "" && r.Root != sec.Root {
			r.OK = false
			r.Problem = joinProblem(r.Problem, fmt.Sprintf("its root %s is not the root %s the other workloads share", r.Root, sec.Root))
		}
	}
	if forbidden == len(sec.Rows) {
		// One message instead of one per workload.
		sec.Skipped = sec.Rows[0].Problem
		sec.Rows = nil
	}
	return sec
}

func readIdentity(ctx context.Context, c certs.Clients, cfg Config, w *workload) (IdentityRow, *certs.Certificate) {
	row := IdentityRow{Workload: w.row.Name()}
	ambient := w.row.Mesh == MeshAmbient
	pod := pickPod(w.pods, ambient)
	if pod == nil {
		row.Problem = "no running pod with a sidecar"
		if ambient {
			row.Problem = "no running pod"
		}
		return row, nil
	}
	row.Pod = pod.Name
	c.Istio = nil // the mTLS mode comes from the inventory's one LIST
	// The inventory already knows an ambient workload: ask its ztunnel
	// without the namespace read certs' auto source would make per pod.
	source := certs.SourceAuto
	if ambient {
		source = certs.SourceZtunnel
	}
	reps, err := certs.Inspect(ctx, c, certs.Config{Source: source, AdminPort: cfg.AdminPort, RootNamespace: cfg.RootNamespace, Now: cfg.Now}, pod)
	if err != nil {
		var fe *certs.ForbiddenError
		if errors.As(err, &fe) {
			row.Problem = fmt.Sprintf("not allowed to port-forward to or exec into pods in namespace %s; ask for create on pods/portforward (kubectl auth can-i create pods/portforward -n %s)", pod.Namespace, pod.Namespace)
		} else {
			row.Problem = oneLine(err.Error())
		}
		return row, nil
	}
	rep := reps[0]
	row.Read = true
	row.OK = rep.Verdict.OK
	if rep.Verdict.Pending {
		row.Problem = "no certificate yet (" + rep.State + ")"
	} else if f := rep.Verdict.Failures(); len(f) > 0 {
		row.Problem = strings.Join(f, "; ")
	}
	var root *certs.Certificate
	for i := range rep.Certificates {
		cert := &rep.Certificates[i]
		switch cert.Role {
		case certs.RoleLeaf:
			row.SPIFFEID, row.NotAfter = cert.SPIFFEID, cert.NotAfter
		case certs.RoleRoot:
			if root == nil {
				root = cert
				row.Root = shortFP(cert.SHA256)
			}
		}
	}
	return row, root
}

// pickPod is the first ready pod with a sidecar, else the first with one;
// for an ambient workload, whose pods have none, any running pod.
func pickPod(pods []*corev1.Pod, ambient bool) *corev1.Pod {
	var first *corev1.Pod
	for _, p := range pods {
		if (!ambient && !mesh.HasSidecar(p)) || p.Status.Phase != corev1.PodRunning {
			continue
		}
		if mesh.PodReady(p) {
			return p
		}
		if first == nil {
			first = p
		}
	}
	return first
}

// commonRoot is the root most workloads share (ties: the smallest
// fingerprint, so the output is stable).
func commonRoot(roots []*certs.Certificate) (fp, subject string) {
	count := map[string]int{}
	subjects := map[string]string{}
	for _, r := range roots {
		if r != nil {
			count[shortFP(r.SHA256)]++
			subjects[shortFP(r.SHA256)] = r.Subject
		}
	}
	keys := make([]string, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if count[keys[i]] != count[keys[j]] {
			return count[keys[i]] > count[keys[j]]
		}
		return keys[i] < keys[j]
	})
	if len(keys) == 0 {
		return "", ""
	}
	return keys[0], subjects[keys[0]]
}

// shortFP is the first four bytes of a fingerprint, as certs prints them.
func shortFP(fp string) string {
	if len(fp) > 11 {
		return fp[:11]
	}
	return fp
}

func joinProblem(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// oneLine joins a multi-line message for a table cell.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}
