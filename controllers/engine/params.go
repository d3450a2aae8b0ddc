package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// ResultsFile is where a job writes its results: the container's
// termination message, which the kubelet keeps in the pod's status when the
// container ends (4096 bytes at most).
const ResultsFile = "/dev/termination-log"

// ResolveParams is the run's parameter values in the Pipeline's order: those
// given, and the defaults of the others. It refuses a parameter the Pipeline
// does not declare, a missing one without a default and a value outside the
// declared enum, each as an error on spec.params.
func ResolveParams(spec *conveyorv1.PipelineSpec, given []conveyorv1.Param) ([]conveyorv1.Param, field.ErrorList) {
	var errs field.ErrorList
	path := field.NewPath("spec", "params")
	declared := make([]string, 0, len(spec.Params))
	for _, p := range spec.Params {
		declared = append(declared, p.Name)
	}
	values := map[string]string{}
	for i, g := range given {
		if !slices.Contains(declared, g.Name) {
			errs = append(errs, field.NotSupported(path.Index(i).Child("name"), g.Name, declared))
			continue
		}
		values[g.Name] = g.Value
	}
	var out []conveyorv1.Param
	for _, p := range spec.Params {
		v, ok := values[p.Name]
		switch {
		case !ok && p.Default == nil:
			errs = append(errs, field.Required(path, fmt.Sprintf("parameter %s has no default: give it a value (%s)", p.Name, p.Description)))
			continue
		case !ok:
			v = *p.Default
		case len(p.Enum) > 0 && !slices.Contains(p.Enum, v):
			errs = append(errs, field.NotSupported(path.Key(p.Name).Child("value"), v, p.Enum))
			continue
		}
		out = append(out, conveyorv1.Param{Name: p.Name, Value: v})
	}
	return out, errs
}

// envPart is a name as part of an environment variable's name.
func envPart(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

// ParamEnv is the environment variable a job reads the parameter name from.
func ParamEnv(name string) string { return "CONVEYOR_PARAM_" + envPart(name) }

// ResultEnv is the environment variable a later job reads a job's result from.
func ResultEnv(stage, job, name string) string {
	return "CONVEYOR_RESULT_" + envPart(stage) + "_" + envPart(job) + "_" + envPart(name)
}

// Vars are the values references in a run's jobs resolve to: its
// parameters and the results its finished jobs wrote.
func Vars(params []conveyorv1.Param, stages []conveyorv1.StageStatus) map[string]string {
	vars := map[string]string{}
	for _, p := range params {
		vars[ParamRef(p.Name)] = p.Value
	}
	for _, s := range stages {
		for _, j := range s.Jobs {
			for _, r := range j.Results {
				vars[ResultRef(s.Name, j.Name, r.Name)] = r.Value
			}
		}
	}
	return vars
}

// ValuesDigest is "sha256:<hex>" over the values (references and values,
// in order of reference), "" when there are none: what an Approval approves.
func ValuesDigest(vars map[string]string) string {
	if len(vars) == 0 {
		return ""
	}
	h := sha256.New()
	for _, ref := range slices.Sorted(maps.Keys(vars)) {
		h.Write([]byte(ref))
		h.Write([]byte{0})
		h.Write([]byte(vars[ref]))
		h.Write([]byte{0})
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// ApprovedValues are the values as an Approval shows them: sorted by
// reference, each cut at 256 characters.
func ApprovedValues(vars map[string]string) []conveyorv1.ApprovedValue {
	var out []conveyorv1.ApprovedValue
	for _, ref := range slices.Sorted(maps.Keys(vars)) {
		v := []rune(vars[ref])
		if len(v) > 256 {
			v = append(v[:256], []rune("...")...)
		}
		out = append(out, conveyorv1.ApprovedValue{Ref: ref, Value: string(v)})
	}
	return out
}

// ValueEnv are the environment variables a job receives for the run's
// values (CONVEYOR_PARAM_*, CONVEYOR_RESULT_*, sorted), and CONVEYOR_RESULTS
// when it declares results. Values are quoted for the kubelet's expansion.
func ValueEnv(vars map[string]string, job *conveyorv1.JobSpec) []corev1.EnvVar {
	var env []corev1.EnvVar
	for _, ref := range slices.Sorted(maps.Keys(vars)) {
		parts := strings.Split(ref, ".")
		name := ParamEnv(parts[len(parts)-1])
		if parts[0] == "stages" {
			name = ResultEnv(parts[1], parts[3], parts[5])
		}
		env = append(env, corev1.EnvVar{Name: name, Value: KubeletLiteral(vars[ref])})
	}
	if len(job.Results) > 0 {
		env = append(env, corev1.EnvVar{Name: "CONVEYOR_RESULTS", Value: ResultsFile})
	}
	return env
}

// checkReferences refuses a job whose image, command, args or env values
// refer to a parameter the Pipeline does not declare, or to a result that no
// job of an earlier stage declares (in every run the stage belongs to), and
// parameter or result names that would share an environment variable.
func checkReferences(spec *conveyorv1.PipelineSpec) field.ErrorList {
	var errs field.ErrorList
	known := map[string][]conveyorv1.StageRefs{} // reference -> the refs of the stage that declares it
	envs := map[string]string{}
	claim := func(path *field.Path, env, what string) {
		if other, ok := envs[env]; ok {
			errs = append(errs, field.Invalid(path, what, fmt.Sprintf("its environment variable %s is also %s's: rename one", env, other)))
		}
		envs[env] = what
	}
	for i, p := range spec.Params {
		known[ParamRef(p.Name)] = nil
		claim(field.NewPath("spec", "params").Index(i).Child("name"), ParamEnv(p.Name), "parameter "+p.Name)
	}
	for i := range spec.Stages {
		st := &spec.Stages[i]
		for j := range st.Jobs {
			job := &st.Jobs[j]
			path := field.NewPath("spec", "stages").Index(i).Child("jobs").Index(j)
			for _, text := range jobTexts(job) {
				for _, ref := range References(text) {
					errs = append(errs, checkReference(path, st, ref, known)...)
				}
			}
		}
		for j, job := range st.Jobs {
			for k, r := range job.Results {
				known[ResultRef(st.Name, job.Name, r.Name)] = []conveyorv1.StageRefs{st.Refs}
				claim(field.NewPath("spec", "stages").Index(i).Child("jobs").Index(j).Child("results").Index(k).Child("name"),
					ResultEnv(st.Name, job.Name, r.Name), "result "+ResultRef(st.Name, job.Name, r.Name))
			}
		}
	}
	return errs
}

func checkReference(path *field.Path, st *conveyorv1.Stage, ref string, known map[string][]conveyorv1.StageRefs) field.ErrorList {
	refs, ok := known[ref]
	if !ok {
		what := "no parameter of the Pipeline has that name"
		if strings.HasPrefix(ref, "stages.") {
			what = "no job of an earlier stage declares that result"
		}
		return field.ErrorList{field.Invalid(path, "$("+ref+")", what)}
	}
	// A result of a stage that runs only for branches (or tags) is missing
	// in the other runs: the stage that reads it must run in no others.
	if len(refs) == 1 && refs[0] != conveyorv1.RefsAll && refs[0] != "" && st.Refs != refs[0] {
		return field.ErrorList{field.Invalid(path, "$("+ref+")",
			fmt.Sprintf("the stage that writes it runs only for %s, and stage %s runs for %s", refs[0], st.Name, orAll(st.Refs)))}
	}
	return nil
}

func orAll(r conveyorv1.StageRefs) conveyorv1.StageRefs {
	if r == "" {
		return conveyorv1.RefsAll
	}
	return r
}

// jobTexts are the fields of a job references are substituted in.
func jobTexts(job *conveyorv1.JobSpec) []string {
	texts := append([]string{job.Image}, job.Command...)
	texts = append(texts, job.Args...)
	for _, e := range job.Env {
		texts = append(texts, e.Value)
	}
	return texts
}

// ExpandJob returns the job with its references replaced by the run's
// values. Values put in command, args and env are quoted so the kubelet's
// own $(VAR) expansion leaves them as they are.
func ExpandJob(job conveyorv1.JobSpec, vars map[string]string) (conveyorv1.JobSpec, error) {
	var err error
	if job.Image, err = Expand(job.Image, vars, nil); err != nil {
		return job, err
	}
	expandAll := func(in []string) ([]string, error) {
		if in == nil {
			return nil, nil
		}
		out := make([]string, len(in))
		for i, s := range in {
			if out[i], err = Expand(s, vars, KubeletLiteral); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	if job.Command, err = expandAll(job.Command); err != nil {
		return job, err
	}
	if job.Args, err = expandAll(job.Args); err != nil {
		return job, err
	}
	env := slices.Clone(job.Env)
	for i := range env {
		if env[i].Value, err = Expand(env[i].Value, vars, KubeletLiteral); err != nil {
			return job, err
		}
	}
	job.Env = env
	return job, nil
}

// ParseResults reads a job's results from its container's termination
// message: lines NAME=VALUE; blank lines and lines starting with # are
// skipped. Only the declared results are kept, in declared order; a declared
// result the message lacks is an error naming it.
func ParseResults(declared []conveyorv1.ResultSpec, message string) ([]conveyorv1.Result, error) {
	written := map[string]string{}
	for _, line := range strings.Split(message, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		written[strings.TrimSpace(name)] = value
	}
	var out []conveyorv1.Result
	var missing []string
	for _, d := range declared {
		v, ok := written[d.Name]
		if !ok {
			missing = append(missing, d.Name)
			continue
		}
		out = append(out, conveyorv1.Result{Name: d.Name, Value: v})
	}
	if len(missing) > 0 {
		return out, fmt.Errorf("the job wrote no result %s to $CONVEYOR_RESULTS (%s): lines NAME=VALUE", strings.Join(missing, ", "), ResultsFile)
	}
	return out, nil
}
