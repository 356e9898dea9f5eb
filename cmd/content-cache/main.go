// Command content-cache is a registry cache for container images: `content-cache serve CONFIG`.
package main

import (
	"os"

	"github.com/content-cache/content-cache/registry"
)

func main() {
	os.Exit(registry.Main(os.Args[1:], os.Stdout, os.Stderr))
}
