package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// decision is what one of trigger, approve, reject and override asks for.
type decision struct {
	verb     string
	decision conveyorv1.ApprovalDecision
	override bool
	// waiting is the stage phase and kind the verb acts on when no stage is named.
	phase conveyorv1.StagePhase
	kind  string
	// needsComment: the API server refuses it without one, or a person
	// reading the record would want one.
	needsComment bool
}

var decisions = map[string]decision{
	"trigger":  {verb: "trigger", decision: conveyorv1.DecisionApprove, phase: conveyorv1.StageWaiting, kind: "manual"},
	"approve":  {verb: "approve", decision: conveyorv1.DecisionApprove, phase: conveyorv1.StageWaiting, kind: "approval"},
	"reject":   {verb: "reject", decision: conveyorv1.DecisionReject, phase: conveyorv1.StageWaiting, kind: "approval", needsComment: true},
	"override": {verb: "override", decision: conveyorv1.DecisionApprove, override: true, phase: conveyorv1.StageFrozen, needsComment: true},
}

var decisionHelp = map[string][2]string{
	"trigger": {"Start a manual stage of a run (a deploy to staging or pre-production)",
		`  kubectl conveyor trigger shop-tag-v1-4-0-x7k2p pre-production`},
	"approve": {"Approve an approval stage of a run (the stage waiting for approval when none is named)",
		`  kubectl conveyor approve shop-tag-v1-4-0-x7k2p -m "release notes checked"
  kubectl conveyor approve shop-tag-v1-4-0-x7k2p approve`},
	"reject": {"Refuse an approval stage of a run: nothing after it runs, and the release stays refused",
		`  kubectl conveyor reject shop-tag-v1-4-0-x7k2p -m "checkout is broken on pre-production"`},
	"override": {"Deploy a frozen stage during its Environment's freeze window (overrideGroups only; say why)",
		`  kubectl conveyor override shop-tag-v1-4-0-x7k2p -m "hotfix for the checkout outage"`},
}

func newDecideCommand(o *Options, verb string) *cobra.Command {
	d := decisions[verb]
	var comment string
	use := verb + " RUN [STAGE]"
	if verb == "trigger" {
		use = verb + " RUN STAGE"
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: decisionHelp[verb][0],
		Long: decisionHelp[verb][0] + `.

It creates an Approval as you. The API server decides whether you may: your
groups against the stage's and its Environment's, not the run's requester
unless the stage allows it, and only while the stage waits. A refusal is
printed as the API server gave it and the command exits with status 1.`,
		Example: decisionHelp[verb][1],
		Args:    cobra.RangeArgs(1, 2),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 {
				return o.completeRuns(cmd, args, s)
			}
			return o.completeStages(cmd, args[0], d)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			stage := ""
			if len(args) == 2 {
				stage = args[1]
			} else if verb == "trigger" {
				return fmt.Errorf("name the stage to trigger: kubectl conveyor trigger %s STAGE", args[0])
			}
			if d.needsComment && strings.TrimSpace(comment) == "" {
				return fmt.Errorf("say why with -m: the comment goes on the record")
			}
			a, err := o.decide(cmd.Context(), "", args[0], stage, d, comment)
			if err != nil {
				return err
			}
			who := "you"
			if a.Spec.Approver != nil && a.Spec.Approver.Username != "" {
				who = a.Spec.Approver.Username
			}
			fmt.Fprintf(o.Streams.Out, "approval/%s created: %s %s stage %s of %s\n", a.Name, who, pastTense(verb), a.Spec.Stage, args[0])
			if a.Spec.Run != nil && a.Spec.Run.ValuesDigest != "" {
				fmt.Fprintf(o.Streams.Out, "  for the run's values (%s):\n", a.Spec.Run.ValuesDigest)
				for _, v := range a.Spec.Run.Values {
					fmt.Fprintf(o.Streams.Out, "    %s = %s\n", v.Ref, v.Value)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&comment, "message", "m", "", "Why: recorded on the Approval and in the run's status.")
	return cmd
}

func pastTense(verb string) string {
	if verb == "override" {
		return "overrode"
	}
	if strings.HasSuffix(verb, "e") {
		return verb + "d"
	}
	return verb + "ed"
}

// decide creates the Approval for the decision, finding the stage when none is named.
func (o *Options) decide(ctx context.Context, ns, runName, stage string, d decision, comment string) (*conveyorv1.Approval, error) {
	_, c, err := o.setup()
	if err != nil {
		return nil, err
	}
	run, err := o.getRun(ctx, ns, runName)
	if err != nil {
		return nil, err
	}
	if stage == "" {
		if stage, err = stageFor(run, d); err != nil {
			return nil, err
		}
	}
	a := &conveyorv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Namespace: run.Namespace, GenerateName: run.Name + "-" + stage + "-"},
		Spec: conveyorv1.ApprovalSpec{PipelineRunRef: conveyorv1.PipelineRunReference{Name: run.Name}, Stage: stage,
			Decision: d.decision, Comment: comment, OverrideFreeze: d.override},
	}
	return a, c.Create(ctx, a)
}

// stageFor is the one stage of the run the decision can be about.
func stageFor(run *conveyorv1.PipelineRun, d decision) (string, error) {
	v := View(run, nil)
	for _, s := range v.Stages {
		if s.Phase == string(d.phase) && (d.kind == "" || s.Kind == d.kind) {
			return s.Name, nil
		}
	}
	where := v.Phase
	if v.CurrentStage != "" {
		where += " at " + v.CurrentStage
	}
	what := "waiting for approval"
	if d.override {
		what = "frozen"
	}
	return "", fmt.Errorf("pipelinerun %s has no stage %s (it is %s): name the stage", run.Name, what, where)
}

func (o *Options) completeStages(cmd *cobra.Command, runName string, d decision) ([]string, cobra.ShellCompDirective) {
	run, err := o.getRun(cmd.Context(), "", runName)
	if err != nil {
		return nil, cobra.ShellCompDirectiveError
	}
	var names []string
	for _, s := range View(run, nil).Stages {
		if s.Phase == string(d.phase) && (d.kind == "" || s.Kind == d.kind) {
			names = append(names, s.Name)
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
