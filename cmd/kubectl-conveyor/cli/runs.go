package cli

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/cli-runtime/pkg/printers"
	"sigs.k8s.io/controller-runtime/pkg/client"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

func newStartCommand(o *Options) *cobra.Command {
	var git conveyorv1.GitRef
	var name string
	var params []string
	cmd := &cobra.Command{
		Use:   "start PIPELINE (--tag TAG --commit SHA | --branch BRANCH [--commit SHA]) [-p NAME=VALUE]...",
		Short: "Start a run of a Pipeline for a tag or a branch",
		Long: `start creates a PipelineRun of the Pipeline for a tag (a release: it names its
commit) or a branch. The API server records you as the run's requester.`,
		Example: `  kubectl conveyor start shop --tag v1.4.0 --commit 3f2a9c1
  kubectl conveyor start shop --branch feature_login --commit 9b1e4d2
  kubectl conveyor start shop --tag v1.4.0 --commit 3f2a9c1 -p ticket=CHG-1042 -p region=us-east-1`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completePipelines,
		RunE: func(cmd *cobra.Command, args []string) error {
			ns, c, err := o.setup()
			if err != nil {
				return err
			}
			run := &conveyorv1.PipelineRun{
				ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
				Spec:       conveyorv1.PipelineRunSpec{PipelineRef: conveyorv1.PipelineReference{Name: args[0]}, Git: git},
			}
			for _, p := range params {
				n, v, ok := strings.Cut(p, "=")
				if !ok || n == "" {
					return fmt.Errorf("-p %q: give a parameter as NAME=VALUE", p)
				}
				run.Spec.Params = append(run.Spec.Params, conveyorv1.Param{Name: n, Value: v})
			}
			if name == "" {
				run.GenerateName = runPrefix(args[0], git)
			}
			if err := c.Create(cmd.Context(), run); err != nil {
				return err
			}
			fmt.Fprintf(o.Streams.Out, "pipelinerun/%s created (Pipeline %s, %s)\n", run.Name, args[0], refOf(git))
			return nil
		},
	}
	cmd.Flags().StringVar(&git.Tag, "tag", "", "The tag to release (needs --commit).")
	cmd.Flags().StringVar(&git.Branch, "branch", "", "The branch to build.")
	cmd.Flags().StringVar(&git.Commit, "commit", "", "The commit SHA the ref points to.")
	cmd.Flags().StringVar(&name, "name", "", "The run's name (generated from the Pipeline and ref when empty).")
	cmd.Flags().StringArrayVarP(&params, "param", "p", nil, "A parameter of the Pipeline, NAME=VALUE (repeat for more); the value is taken literally.")
	cmd.MarkFlagsMutuallyExclusive("tag", "branch")
	cmd.MarkFlagsOneRequired("tag", "branch")
	return cmd
}

var notName = regexp.MustCompile(`[^a-z0-9-]+`)

// runPrefix is a run's generateName: the Pipeline and the ref, as a name allows.
func runPrefix(pipeline string, git conveyorv1.GitRef) string {
	slug := strings.Trim(notName.ReplaceAllString(strings.ToLower(strings.ReplaceAll(refOf(git), "/", "-")), "-"), "-")
	p := pipeline + "-" + slug
	if len(p) > 50 {
		p = strings.TrimRight(p[:50], "-")
	}
	return p + "-"
}

func refOf(git conveyorv1.GitRef) string {
	if git.Tag != "" {
		return "tag/" + git.Tag
	}
	return "branch/" + git.Branch
}

// setup gives the namespace and the client every command needs.
func (o *Options) setup() (string, client.WithWatch, error) {
	ns, err := o.Namespace()
	if err != nil {
		return "", nil, err
	}
	c, err := o.Client()
	return ns, c, err
}

// getRun reads a run; an empty ns is the command's namespace.
func (o *Options) getRun(ctx context.Context, ns, name string) (*conveyorv1.PipelineRun, error) {
	def, c, err := o.setup()
	if err != nil {
		return nil, err
	}
	if ns == "" {
		ns = def
	}
	run := &conveyorv1.PipelineRun{}
	return run, c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, run)
}

type listFilter struct {
	pipeline, phase, ref string
	all                  bool
}

func (f listFilter) match(r *conveyorv1.PipelineRun) bool {
	v := View(r, nil)
	return (f.pipeline == "" || r.Spec.PipelineRef.Name == f.pipeline) &&
		(f.phase == "" || strings.EqualFold(v.Phase, f.phase)) &&
		(f.ref == "" || v.Ref == f.ref || r.Spec.Git.Tag == f.ref || r.Spec.Git.Branch == f.ref)
}

func (o *Options) listRuns(ctx context.Context, f listFilter) ([]conveyorv1.PipelineRun, error) {
	ns, c, err := o.setup()
	if err != nil {
		return nil, err
	}
	var opts []client.ListOption
	if !f.all {
		opts = append(opts, client.InNamespace(ns))
	}
	list := &conveyorv1.PipelineRunList{}
	if err := c.List(ctx, list, opts...); err != nil {
		return nil, err
	}
	var runs []conveyorv1.PipelineRun
	for i := range list.Items {
		if f.match(&list.Items[i]) {
			runs = append(runs, list.Items[i])
		}
	}
	// Newest first, as a person looks for the run they just started.
	sort.SliceStable(runs, func(i, j int) bool {
		return runs[j].CreationTimestamp.Before(&runs[i].CreationTimestamp)
	})
	return runs, nil
}

func newListCommand(o *Options) *cobra.Command {
	var f listFilter
	cmd := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls", "runs"},
		Short:   "List runs, newest first",
		Example: `  kubectl conveyor list
  kubectl conveyor list --pipeline shop --phase Waiting
  kubectl conveyor list --ref v1.4.0 -A`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			runs, err := o.listRuns(cmd.Context(), f)
			if err != nil {
				return err
			}
			return printRuns(o.Streams.Out, runs, f.all, time.Now())
		},
	}
	cmd.Flags().StringVar(&f.pipeline, "pipeline", "", "Only runs of this Pipeline.")
	cmd.Flags().StringVar(&f.phase, "phase", "", "Only runs in this phase (Running, Waiting, Succeeded, ...).")
	cmd.Flags().StringVar(&f.ref, "ref", "", "Only runs of this tag or branch (v1.4.0, branch/main).")
	cmd.Flags().BoolVarP(&f.all, "all-namespaces", "A", false, "Runs of every namespace.")
	_ = cmd.RegisterFlagCompletionFunc("pipeline", o.completePipelines)
	_ = cmd.RegisterFlagCompletionFunc("phase", cobra.FixedCompletions(
		[]string{"Pending", "Running", "Waiting", "Queued", "Succeeded", "Failed", "Rejected", "Expired", "Cancelled"}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func printRuns(out io.Writer, runs []conveyorv1.PipelineRun, namespaces bool, now time.Time) error {
	if len(runs) == 0 {
		_, err := fmt.Fprintln(out, "No runs found.")
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	if namespaces {
		fmt.Fprint(w, "NAMESPACE\t")
	}
	fmt.Fprintln(w, "NAME\tPIPELINE\tREF\tCOMMIT\tSTAGE\tPHASE\tAGE\tREQUESTER")
	for i := range runs {
		v := View(&runs[i], nil)
		if namespaces {
			fmt.Fprintf(w, "%s\t", v.Namespace)
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Pipeline, v.Ref, short(v.Commit),
			dash(v.CurrentStage), v.Symbol+" "+v.Phase, duration.HumanDuration(now.Sub(v.Created)), dash(v.Requester))
	}
	return w.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newGetCommand(o *Options) *cobra.Command {
	var watchIt bool
	var output string
	cmd := &cobra.Command{
		Use:   "get RUN",
		Short: "Draw a run's pipeline graph: stages, jobs, who decided, what waits",
		Long: `get draws the run as a pipeline graph: its stages left to right, each with its
status and its jobs beneath, who triggered or approved each manual or approval
stage, and what a waiting, queued, frozen or blocked stage waits for. Symbols:
✔ succeeded  ✘ failed/rejected/expired  ● running  ◆ waiting for a person
… queued for its environment  ❄ frozen  ⊘ blocked/cancelled  ○ pending.`,
		Example: `  kubectl conveyor get shop-tag-v1-4-0-x7k2p
  kubectl conveyor get shop-tag-v1-4-0-x7k2p --watch
  kubectl conveyor get shop-tag-v1-4-0-x7k2p -o yaml`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeRuns,
		RunE: func(cmd *cobra.Command, args []string) error {
			run, err := o.getRun(cmd.Context(), "", args[0])
			if err != nil {
				return err
			}
			if output != "" {
				return printObject(o.Streams.Out, run, output)
			}
			if !watchIt {
				return o.draw(cmd.Context(), run, false)
			}
			return o.watchRun(cmd.Context(), run)
		},
	}
	cmd.Flags().BoolVarP(&watchIt, "watch", "w", false, "Redraw the graph as the run changes, until it finishes.")
	cmd.Flags().StringVarP(&output, "output", "o", "", "Print the PipelineRun as yaml or json instead of the graph.")
	return cmd
}

func printObject(out io.Writer, run *conveyorv1.PipelineRun, format string) error {
	run.SetGroupVersionKind(conveyorv1.GroupVersion.WithKind("PipelineRun"))
	run.ManagedFields = nil
	switch format {
	case "yaml":
		return (&printers.YAMLPrinter{}).PrintObj(run, out)
	case "json":
		return (&printers.JSONPrinter{}).PrintObj(run, out)
	}
	return fmt.Errorf("unknown output format %q: yaml or json", format)
}

// draw prints the run's graph; clear first redraws it in place on a terminal.
func (o *Options) draw(ctx context.Context, run *conveyorv1.PipelineRun, clear bool) error {
	var pipeline *conveyorv1.Pipeline
	if run.Status.PipelineSpec == nil {
		// Not started: draw the Pipeline's stages, if the user may read it.
		if _, c, err := o.setup(); err == nil {
			p := &conveyorv1.Pipeline{}
			if c.Get(ctx, client.ObjectKey{Namespace: run.Namespace, Name: run.Spec.PipelineRef.Name}, p) == nil {
				pipeline = p
			}
		}
	}
	colour := o.colour()
	if clear && colour {
		fmt.Fprint(o.Streams.Out, "\x1b[H\x1b[2J")
	}
	return Graph(o.Streams.Out, View(run, pipeline), colour)
}

// watchRun redraws the run whenever it changes, until it finishes.
func (o *Options) watchRun(ctx context.Context, run *conveyorv1.PipelineRun) error {
	_, c, err := o.setup()
	if err != nil {
		return err
	}
	if err := o.draw(ctx, run, true); err != nil {
		return err
	}
	last := run.ResourceVersion
	for !run.Status.Phase.Finished() {
		w, err := c.Watch(ctx, &conveyorv1.PipelineRunList{}, client.InNamespace(run.Namespace),
			client.MatchingFields{"metadata.name": run.Name}, &client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: last}})
		if err != nil {
			return err
		}
		for ev := range w.ResultChan() {
			switch ev.Type {
			case watch.Deleted:
				w.Stop()
				return fmt.Errorf("pipelinerun %s was deleted", run.Name)
			case watch.Error:
				w.Stop()
				if s := apierrors.FromObject(ev.Object); apierrors.IsResourceExpired(s) || apierrors.IsGone(s) {
					if run, err = o.getRun(ctx, run.Namespace, run.Name); err != nil {
						return err
					}
					last = run.ResourceVersion
					continue
				}
				return apierrors.FromObject(ev.Object)
			}
			next, ok := ev.Object.(*conveyorv1.PipelineRun)
			if !ok {
				continue
			}
			run, last = next, next.ResourceVersion
			if !o.colour() {
				fmt.Fprintln(o.Streams.Out)
			}
			if err := o.draw(ctx, run, true); err != nil {
				w.Stop()
				return err
			}
			if run.Status.Phase.Finished() {
				w.Stop()
				return nil
			}
		}
		if err := ctx.Err(); err != nil {
			return nil //nolint:nilerr // Ctrl-C ends a watch, not an error
		}
	}
	return nil
}

func newHistoryCommand(o *Options) *cobra.Command {
	var limit int
	cmd := &cobra.Command{
		Use:   "history PIPELINE",
		Short: "A Pipeline's runs, newest first, and the verdicts of its releases",
		Example: `  kubectl conveyor history shop
  kubectl conveyor history shop --limit 5`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completePipelines,
		RunE: func(cmd *cobra.Command, args []string) error {
			runs, err := o.listRuns(cmd.Context(), listFilter{pipeline: args[0]})
			if err != nil {
				return err
			}
			if limit > 0 && len(runs) > limit {
				runs = runs[:limit]
			}
			out := o.Streams.Out
			w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
			fmt.Fprintln(w, "NAME\tREF\tCOMMIT\tPHASE\tENDED AT\tSTARTED\tDURATION\tREQUESTER")
			now := time.Now()
			for i := range runs {
				r := &runs[i]
				v := View(r, nil)
				started, took := "-", "-"
				if r.Status.StartTime != nil {
					started = duration.HumanDuration(now.Sub(r.Status.StartTime.Time)) + " ago"
					end := now
					if r.Status.CompletionTime != nil {
						end = r.Status.CompletionTime.Time
					}
					took = duration.HumanDuration(end.Sub(r.Status.StartTime.Time))
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", v.Name, v.Ref, short(v.Commit), v.Symbol+" "+v.Phase,
					dash(v.CurrentStage), started, took, dash(v.Requester))
			}
			if len(runs) == 0 {
				fmt.Fprintf(w, "(no runs of Pipeline %s)\n", args[0])
			}
			if err := w.Flush(); err != nil {
				return err
			}
			return o.printReleases(cmd.Context(), out, args[0])
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 20, "Show at most this many runs (0: all).")
	return cmd
}

// printReleases prints the Pipeline's release ledger: each tag's verdict and
// how far it got. A user who may not read Releases sees the runs only.
func (o *Options) printReleases(ctx context.Context, out io.Writer, pipeline string) error {
	ns, c, err := o.setup()
	if err != nil {
		return err
	}
	list := &conveyorv1.ReleaseList{}
	if err := c.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{conveyorv1.LabelPipeline: pipeline}); err != nil {
		if apierrors.IsForbidden(err) {
			return nil
		}
		return err
	}
	if len(list.Items) == 0 {
		return nil
	}
	sort.SliceStable(list.Items, func(i, j int) bool {
		return list.Items[j].CreationTimestamp.Before(&list.Items[i].CreationTimestamp)
	})
	fmt.Fprintln(out, "\nReleases:")
	w := tabwriter.NewWriter(out, 0, 4, 3, ' ', 0)
	fmt.Fprintln(w, "TAG\tCOMMIT\tVERDICT\tDECIDED BY\tREACHED")
	for _, r := range list.Items {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Spec.Tag, short(r.Spec.Commit), dash(string(r.Status.Verdict)),
			dash(r.Status.DecidedBy), dash(r.Status.LastEnvironment))
	}
	return w.Flush()
}

func newCancelCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:               "cancel RUN",
		Short:             "Cancel a run: its running Jobs stop and nothing after them starts",
		Example:           `  kubectl conveyor cancel shop-branch-feature-login-8c2fq`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeRuns,
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.cancel(cmd.Context(), "", args[0]); err != nil {
				return err
			}
			fmt.Fprintf(o.Streams.Out, "pipelinerun/%s cancelled\n", args[0])
			return nil
		},
	}
}

func newRerunCommand(o *Options) *cobra.Command {
	return &cobra.Command{
		Use:   "rerun RUN",
		Short: "Run again the part of a failed, expired or cancelled run that did not succeed",
		Long: `rerun creates a new run of the same Pipeline, ref and commit with rerunOf set:
it reuses the stages that succeeded and starts at the first that did not.`,
		Example:           `  kubectl conveyor rerun shop-tag-v1-4-0-x7k2p`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeRuns,
		RunE: func(cmd *cobra.Command, args []string) error {
			run, err := o.rerun(cmd.Context(), "", args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(o.Streams.Out, "pipelinerun/%s created (rerun of %s)\n", run.Name, args[0])
			return nil
		},
	}
}

func (o *Options) completeRuns(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	runs, err := o.listRuns(cmd.Context(), listFilter{})
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, r := range runs {
		names = append(names, r.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (o *Options) completePipelines(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ns, c, err := o.setup()
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	list := &conveyorv1.PipelineList{}
	if err := c.List(cmd.Context(), list, client.InNamespace(ns)); err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, p := range list.Items {
		names = append(names, p.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// cancel sets the run's spec.cancelled.
func (o *Options) cancel(ctx context.Context, ns, name string) error {
	def, c, err := o.setup()
	if err != nil {
		return err
	}
	if ns == "" {
		ns = def
	}
	run := &conveyorv1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	return c.Patch(ctx, run, client.RawPatch("application/merge-patch+json", []byte(`{"spec":{"cancelled":true}}`)))
}

// rerun creates a run of the same Pipeline, ref and commit with rerunOf set.
func (o *Options) rerun(ctx context.Context, ns, name string) (*conveyorv1.PipelineRun, error) {
	old, err := o.getRun(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	_, c, err := o.setup()
	if err != nil {
		return nil, err
	}
	run := &conveyorv1.PipelineRun{
		ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, GenerateName: runPrefix(old.Spec.PipelineRef.Name, old.Spec.Git)},
		Spec:       conveyorv1.PipelineRunSpec{PipelineRef: old.Spec.PipelineRef, Git: old.Spec.Git, Params: old.Spec.Params, RerunOf: old.Name},
	}
	return run, c.Create(ctx, run)
}
