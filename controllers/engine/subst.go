package engine

import (
	"fmt"
	"regexp"
	"strings"
)

// A reference is $(params.NAME) or $(stages.STAGE.jobs.JOB.results.NAME) in
// a job's image, command, args or env values: the syntax Tekton users know.
// Only these two shapes are references; any other $(...) (a shell's command
// substitution, a Kubernetes $(VAR) reference) is left as written.
var reference = regexp.MustCompile(`(\$?)\$\((params\.[A-Za-z_][A-Za-z0-9_-]*|stages\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.jobs\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\.results\.[A-Za-z_][A-Za-z0-9_-]*)\)`)

// ParamRef is the reference to the parameter name, without $( ).
func ParamRef(name string) string { return "params." + name }

// ResultRef is the reference to a job's result, without $( ).
func ResultRef(stage, job, name string) string {
	return "stages." + stage + ".jobs." + job + ".results." + name
}

// References lists the references in s, in order, without $( ); an escaped
// $$(...) is not one.
func References(s string) []string {
	var refs []string
	for _, m := range reference.FindAllStringSubmatch(s, -1) {
		if m[1] == "" {
			refs = append(refs, m[2])
		}
	}
	return refs
}

// Expand replaces each reference in s by its value in vars, in one pass:
// a value is never scanned again, so a parameter whose value contains
// $(params.x) stays literal. $$(params.x) is the escape: it becomes the text
// $(params.x). quote is applied to each value as it is put in (the kubelet
// expands $(VAR) in command, args and env, so values put there are quoted
// with KubeletLiteral). A reference vars lacks is an error naming it.
func Expand(s string, vars map[string]string, quote func(string) string) (string, error) {
	var missing string
	out := reference.ReplaceAllStringFunc(s, func(m string) string {
		if strings.HasPrefix(m, "$$") {
			return m[1:]
		}
		ref := m[2 : len(m)-1]
		v, ok := vars[ref]
		if !ok {
			if missing == "" {
				missing = ref
			}
			return m
		}
		if quote != nil {
			v = quote(v)
		}
		return v
	})
	if missing != "" {
		return s, fmt.Errorf("$(%s) refers to nothing the run has", missing)
	}
	return out, nil
}

// KubeletLiteral quotes v so that the kubelet's own $(VAR) expansion of a
// container's command, args and env values leaves it as it is: every $
// doubled ($$ is the kubelet's escape for $).
func KubeletLiteral(v string) string { return strings.ReplaceAll(v, "$", "$$") }
