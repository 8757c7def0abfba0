// Test infrastructure: the local lab, its test harness and the e2e suite.
// A module of its own so the product's go.mod stays lean.
module github.com/kubectl-mesh/kubectl-mesh/test

go 1.25.0

require github.com/kubectl-mesh/kubectl-mesh v0.0.0

replace github.com/kubectl-mesh/kubectl-mesh => ../
