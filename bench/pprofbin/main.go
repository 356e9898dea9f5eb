// Command pprofbin is the content-cache binary with net/http/pprof served by
// its debug server (http.debug.addr, which the benchmark harness always
// configures on loopback), for profiling the processes the harness runs:
//
//	go build -o bin/content-cache-pprof ./bench/pprofbin
//	go run ./bench -bin bin/content-cache-pprof -only profile -cpuprofile prof/
//
// It is not the shipped binary: the release build (make build) has no
// pprof handlers.
package main

import (
	_ "net/http/pprof" // registers /debug/pprof/ on the default mux the debug server serves
	"os"

	"github.com/content-cache/content-cache/registry"
)

func main() {
	os.Exit(registry.Main(os.Args[1:], os.Stdout, os.Stderr))
}
