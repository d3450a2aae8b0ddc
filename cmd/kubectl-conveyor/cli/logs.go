package cli

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

func newLogsCommand(o *Options) *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs RUN [STAGE[/JOB]]",
		Short: "Print the logs of a run's jobs, across the namespaces its stages ran in",
		Long: `logs prints the logs of the pods of a run's Jobs, wherever its stages ran (the
build in the run's namespace, deploys in staging, pre-production, production),
each line prefixed with stage/job. Only pods of the Jobs Conveyor created for
this run are read, not look-alikes. With -f it follows them, and the pods of
stages that start later, until the run finishes.`,
		Example: `  kubectl conveyor logs shop-tag-v1-4-0-x7k2p
  kubectl conveyor logs shop-tag-v1-4-0-x7k2p production
  kubectl conveyor logs shop-tag-v1-4-0-x7k2p build/compile -f`,
		Args: cobra.RangeArgs(1, 2),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return o.completeRuns(cmd, args, s)
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			stage, job := "", ""
			if len(args) == 2 {
				stage, job, _ = strings.Cut(args[1], "/")
			}
			cs, err := o.Clientset()
			if err != nil {
				return err
			}
			l := &logReader{o: o, cs: cs, run: args[0], stage: stage, job: job, follow: follow, seen: map[string]bool{}}
			return l.read(cmd.Context())
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "Follow the logs until the run finishes.")
	return cmd
}

type logReader struct {
	o               *Options
	cs              kubernetes.Interface
	run, stage, job string
	follow          bool
	seen            map[string]bool
	mu              sync.Mutex // one line at a time on the output
	wg              sync.WaitGroup
	told            bool
	// unread counts the containers whose logs the API server did not give.
	unread int
}

// source is one pod of one job of the run.
type source struct {
	prefix string
	pod    corev1.Pod
}

func (l *logReader) read(ctx context.Context) error {
	for {
		run, err := l.o.getRun(ctx, "", l.run)
		if err != nil {
			return err
		}
		if err := l.checkStage(run); err != nil {
			return err
		}
		sources, err := l.sources(ctx, run)
		if err != nil {
			return err
		}
		for _, s := range sources {
			if l.seen[string(s.pod.UID)] {
				continue
			}
			l.seen[string(s.pod.UID)] = true
			if !l.follow {
				if err := l.stream(ctx, s); err != nil {
					return err
				}
				continue
			}
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				if err := l.stream(ctx, s); err != nil {
					l.say(l.o.Streams.ErrOut, s.prefix, "error: "+err.Error())
				}
			}()
		}
		if !l.follow || run.Status.Phase.Finished() {
			break
		}
		select {
		case <-ctx.Done():
			l.wg.Wait()
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	l.wg.Wait()
	if len(l.seen) == 0 {
		fmt.Fprintf(l.o.Streams.ErrOut, "No pods of pipelinerun %s%s (its Jobs have not started, or their pods are gone).\n", l.run, l.where())
	}
	if l.unread > 0 {
		return fmt.Errorf("the logs of %d container(s) could not be read (see above)", l.unread)
	}
	return nil
}

func (l *logReader) where() string {
	switch {
	case l.job != "":
		return " in " + l.stage + "/" + l.job
	case l.stage != "":
		return " in stage " + l.stage
	}
	return ""
}

func (l *logReader) checkStage(run *conveyorv1.PipelineRun) error {
	if l.stage == "" || run.Status.PipelineSpec == nil {
		return nil
	}
	for _, s := range run.Status.PipelineSpec.Stages {
		if s.Name != l.stage {
			continue
		}
		if l.job == "" {
			return nil
		}
		for _, j := range s.Jobs {
			if j.Name == l.job {
				return nil
			}
		}
		return fmt.Errorf("stage %s of pipelinerun %s has no job %q", l.stage, run.Name, l.job)
	}
	return fmt.Errorf("pipelinerun %s has no stage %q", run.Name, l.stage)
}

// sources are the pods of the Jobs Conveyor recorded for the run, stage by
// stage: a pod counts when its controller is the recorded Job (by UID).
func (l *logReader) sources(ctx context.Context, run *conveyorv1.PipelineRun) ([]source, error) {
	var out []source
	for _, ss := range run.Status.Stages {
		if l.stage != "" && ss.Name != l.stage {
			continue
		}
		if ss.ReusedFrom != "" && !l.told {
			l.say(l.o.Streams.ErrOut, ss.Name, "reused from "+ss.ReusedFrom+": its logs are that run's")
		}
		for _, j := range ss.Jobs {
			if (l.job != "" && j.Name != l.job) || j.JobName == "" || j.Namespace == "" {
				continue
			}
			sel := labels.SelectorFromSet(labels.Set{conveyorv1.LabelRunUID: string(run.UID), conveyorv1.LabelStage: ss.Name, conveyorv1.LabelJob: j.Name})
			pods, err := l.cs.CoreV1().Pods(j.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
			if err != nil {
				return nil, fmt.Errorf("listing the pods of %s/%s in namespace %s: %w", ss.Name, j.Name, j.Namespace, err)
			}
			var mine []corev1.Pod
			for _, p := range pods.Items {
				if ref := metav1.GetControllerOf(&p); ref != nil && ref.Kind == "Job" && ref.Name == j.JobName && (j.UID == "" || string(ref.UID) == j.UID) {
					mine = append(mine, p)
				}
			}
			sort.Slice(mine, func(a, b int) bool { return mine[a].CreationTimestamp.Before(&mine[b].CreationTimestamp) })
			for i, p := range mine {
				prefix := ss.Name + "/" + j.Name
				if len(mine) > 1 {
					prefix += fmt.Sprintf("#%d", i+1)
				}
				out = append(out, source{prefix: prefix, pod: p})
			}
		}
	}
	l.told = true
	return out, nil
}

func (l *logReader) stream(ctx context.Context, s source) error {
	for _, c := range s.pod.Spec.Containers {
		prefix := s.prefix
		if len(s.pod.Spec.Containers) > 1 {
			prefix += "[" + c.Name + "]"
		}
		req := l.cs.CoreV1().Pods(s.pod.Namespace).GetLogs(s.pod.Name, &corev1.PodLogOptions{Container: c.Name, Follow: l.follow})
		rc, err := req.Stream(ctx)
		if err != nil {
			l.say(l.o.Streams.ErrOut, prefix, fmt.Sprintf("no logs (pod %s/%s): %v", s.pod.Namespace, s.pod.Name, err))
			l.mu.Lock()
			l.unread++
			l.mu.Unlock()
			continue
		}
		err = l.copyLines(rc, prefix)
		rc.Close()
		if err != nil && ctx.Err() == nil {
			return err
		}
	}
	return nil
}

func (l *logReader) copyLines(r io.Reader, prefix string) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		l.say(l.o.Streams.Out, prefix, sc.Text())
	}
	return sc.Err()
}

func (l *logReader) say(w io.Writer, prefix, line string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(w, "[%s] %s\n", prefix, line)
}
