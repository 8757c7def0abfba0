// Package e2e drives kubectl mesh against the real local lab.
package e2e

import (
	"testing"

	"github.com/kubectl-mesh/kubectl-mesh/test/labtest"
)

func TestMain(m *testing.M) { labtest.Main(m) }
