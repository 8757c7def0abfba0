// Package version holds the plugin's build information, set with -ldflags -X.
package version

// Set at build time by the Makefile and goreleaser.
var (
	Version = "dev"
	Commit  = "none"
	Date    = "unknown"
)
