// Package cli is kubectl-conveyor: the command line and the dashboard of
// Conveyor. Every call goes to the API server with the user's own kubeconfig
// credentials (the standard kubectl flags: --kubeconfig, --context, -n, --as),
// so RBAC and Conveyor's admission webhooks decide what the user may do.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Options are what every command shares: the kubeconfig flags and the streams.
type Options struct {
	Flags   *genericclioptions.ConfigFlags
	Streams genericiooptions.IOStreams
	// Colour is auto (colours on a terminal), always or never.
	Colour string

	restConfig *rest.Config
	client     client.WithWatch
	namespace  string
}

func scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(s)
	_ = conveyorv1.AddToScheme(s)
	return s
}

// Client is a client acting as the kubeconfig's user.
func (o *Options) Client() (client.WithWatch, error) {
	if o.client != nil {
		return o.client, nil
	}
	cfg, err := o.RESTConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme()})
	if err != nil {
		return nil, err
	}
	o.client = c
	return c, nil
}

// RESTConfig is the kubeconfig's configuration, with the flags applied.
func (o *Options) RESTConfig() (*rest.Config, error) {
	if o.restConfig == nil {
		cfg, err := o.Flags.ToRESTConfig()
		if err != nil {
			return nil, err
		}
		cfg.UserAgent = "kubectl-conveyor"
		o.restConfig = cfg
	}
	return o.restConfig, nil
}

// Clientset is a client-go clientset for what controller-runtime's client
// does not do (pod logs).
func (o *Options) Clientset() (kubernetes.Interface, error) {
	cfg, err := o.RESTConfig()
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// Namespace is -n, else the kubeconfig context's namespace, else default.
func (o *Options) Namespace() (string, error) {
	if o.namespace == "" {
		ns, _, err := o.Flags.ToRawKubeConfigLoader().Namespace()
		if err != nil {
			return "", err
		}
		o.namespace = ns
	}
	return o.namespace, nil
}

func (o *Options) colour() bool {
	switch o.Colour {
	case "always":
		return true
	case "never":
		return false
	}
	if os.Getenv("NO_COLOR") != "" {
		return false
	}
	f, ok := o.Streams.Out.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// OptionsFor are the options of a command run with --kubeconfig kubeconfig
// and -n namespace (for callers that are not the command line: tests).
func OptionsFor(kubeconfig, namespace string, streams genericiooptions.IOStreams) *Options {
	o := &Options{Flags: genericclioptions.NewConfigFlags(true), Streams: streams, Colour: "never"}
	o.Flags.KubeConfig = &kubeconfig
	o.Flags.Namespace = &namespace
	return o
}

// NewCommand is the kubectl-conveyor command with every subcommand.
func NewCommand(streams genericiooptions.IOStreams) *cobra.Command {
	o := &Options{Flags: genericclioptions.NewConfigFlags(true), Streams: streams}
	root := &cobra.Command{
		Use:   "kubectl-conveyor",
		Short: "Start, follow and decide Conveyor pipeline runs",
		Long: `kubectl conveyor starts Conveyor pipeline runs, draws where they stand,
triggers and decides their manual and approval stages, reads their logs and
serves a dashboard, all as the user of the kubeconfig: the API server's RBAC
and Conveyor's admission webhooks decide what that user may do.`,
		Example: `  # Start a release and follow it
  kubectl conveyor start shop --tag v1.4.0 --commit 3f2a9c1
  kubectl conveyor get shop-tag-v1-4-0-x7k2p --watch

  # Approve it for production, as a release engineer
  kubectl conveyor approve shop-tag-v1-4-0-x7k2p -m "ship it"

  # Open the dashboard
  kubectl conveyor dashboard`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	o.Flags.AddFlags(root.PersistentFlags())
	root.PersistentFlags().StringVar(&o.Colour, "color", "auto", "Colour the graph: auto (on a terminal), always or never.")
	root.AddCommand(
		newStartCommand(o), newListCommand(o), newGetCommand(o), newHistoryCommand(o),
		newDecideCommand(o, "trigger"), newDecideCommand(o, "approve"), newDecideCommand(o, "reject"), newDecideCommand(o, "override"),
		newCancelCommand(o), newRerunCommand(o), newLogsCommand(o), newDashboardCommand(o),
	)
	return root
}

// Main runs the command line with args and returns the process's exit code:
// 0 when it did what was asked, 1 when it did not (the API server's refusal
// is printed as it gave it).
func Main(args []string, streams genericiooptions.IOStreams) int {
	return MainContext(context.Background(), args, streams)
}

// MainContext is Main that stops watching, following and serving when ctx ends.
func MainContext(ctx context.Context, args []string, streams genericiooptions.IOStreams) int {
	cmd := NewCommand(streams)
	cmd.SetArgs(args)
	if err := cmd.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(streams.ErrOut, describeError(err))
		return 1
	}
	return 0
}

// describeError says an error as kubectl does: the API server's reason and message.
func describeError(err error) string {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		if s.Reason != "" {
			return fmt.Sprintf("Error from server (%s): %s", s.Reason, s.Message)
		}
		return "Error from server: " + s.Message
	}
	return "error: " + err.Error()
}
