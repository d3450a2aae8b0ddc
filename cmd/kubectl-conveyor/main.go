// Command kubectl-conveyor is Conveyor's kubectl plugin: `kubectl conveyor
// start|list|get|trigger|approve|reject|override|cancel|rerun|logs|history|dashboard`.
// Install it with `make plugin` (into bin/) or
// `go install github.com/conveyor-dev/conveyor/cmd/kubectl-conveyor@latest`
// and put it on PATH.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/conveyor-dev/conveyor/cmd/kubectl-conveyor/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.MainContext(ctx, os.Args[1:], genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr})
	stop()
	os.Exit(code)
}
