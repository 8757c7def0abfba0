package certs

import (
	"fmt"
)

// Comparison says whether two workloads trust each other's certificates.
type Comparison struct {
	A          string `json:"a"`
	B          string `json:"b"`
	RootA      string `json:"rootA"`
	RootB      string `json:"rootB"`
	SharedRoot bool   `json:"sharedRoot"`
	// AToB: A's chain verifies to B's roots (B accepts A as a client).
	AToB    bool   `json:"aVerifiesWithB"`
	BToA    bool   `json:"bVerifiesWithA"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// Compare checks a and b against each other's roots. Sharing a root is what
// cross-namespace and cross-cluster mTLS needs.
func Compare(a, b *Report) Comparison {
	ba, bb := a.Bundle(), b.Bundle()
	c := Comparison{
		A:     a.Name(),
		B:     b.Name(),
		RootA: Fingerprint(ba.Roots[0]),
		RootB: Fingerprint(bb.Roots[0]),
	}
	for _, ra := range ba.Roots {
		if containsCert(bb.Roots, ra) {
			c.SharedRoot = true
		}
	}
	_, errAB := verifyChain(&Bundle{Chain: ba.Chain, Roots: bb.Roots})
	c.AToB = errAB == nil
	_, errBA := verifyChain(&Bundle{Chain: bb.Chain, Roots: ba.Roots})
	c.BToA = errBA == nil
	c.OK = c.AToB && c.BToA
	switch {
	case c.SharedRoot && c.OK:
		c.Message = fmt.Sprintf("%s and %s share the root %q (SHA-256 %s): mTLS between them can succeed", c.A, c.B, ba.Roots[0].Subject.String(), short(c.RootA))
	case c.OK:
		c.Message = fmt.Sprintf("%s and %s have different root certificates that verify each other's chains (same CA key): mTLS between them can succeed", c.A, c.B)
	default:
		c.Message = fmt.Sprintf("%s and %s do not share a root (%s vs %s): %s; mTLS between them will fail — give both meshes the same root (plug-in CA certificates in istio-system/cacerts)",
			c.A, c.B, short(c.RootA), short(c.RootB), direction(c))
	}
	return c
}

func direction(c Comparison) string {
	switch {
	case !c.AToB && !c.BToA:
		return "neither verifies the other's chain"
	case !c.AToB:
		return fmt.Sprintf("%s's chain does not verify to %s's root", c.A, c.B)
	}
	return fmt.Sprintf("%s's chain does not verify to %s's root", c.B, c.A)
}
