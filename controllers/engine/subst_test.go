package engine

import (
	"slices"
	"strings"
	"testing"
)

func TestExpand(t *testing.T) {
	vars := map[string]string{
		"params.region":                          "eu-west-1",
		"params.note":                            "ships $(params.region) and $(HOME)",
		"stages.build.jobs.image.results.digest": "sha256:0123",
	}
	cases := []struct {
		name, in, want string
		quote          func(string) string
		wantErr        string
	}{
		{name: "a parameter", in: "deploy --region=$(params.region)", want: "deploy --region=eu-west-1"},
		{name: "a result", in: "registry/shop@$(stages.build.jobs.image.results.digest)", want: "registry/shop@sha256:0123"},
		{name: "two in one", in: "$(params.region)/$(params.region)", want: "eu-west-1/eu-west-1"},
		{name: "a value is not scanned again", in: "$(params.note)", want: "ships $(params.region) and $(HOME)"},
		{name: "a value quoted for the kubelet", in: "echo $(params.note)", quote: KubeletLiteral,
			want: "echo ships $$(params.region) and $$(HOME)"},
		{name: "escaped", in: "literal $$(params.region)", want: "literal $(params.region)"},
		{name: "shell command substitution stays", in: "echo $(date) $(params.region)", want: "echo $(date) eu-west-1"},
		{name: "a kubelet variable stays", in: "$(CONVEYOR_RUN)", want: "$(CONVEYOR_RUN)"},
		{name: "unterminated stays", in: "$(params.region", want: "$(params.region"},
		{name: "unknown parameter", in: "x $(params.zone)", wantErr: "$(params.zone) refers to nothing"},
		{name: "unknown result", in: "$(stages.build.jobs.image.results.sbom)", wantErr: "$(stages.build.jobs.image.results.sbom)"},
		{name: "no references", in: "plain", want: "plain"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Expand(c.in, vars, c.quote)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Expand(%q) = %q, %v; want an error with %q", c.in, got, err, c.wantErr)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("Expand(%q) = %q, %v; want %q", c.in, got, err, c.want)
			}
		})
	}
}

func TestReferences(t *testing.T) {
	got := References("$(params.a) $$(params.b) $(date) $(stages.build.jobs.image.results.digest) $(params.a)")
	want := []string{"params.a", "stages.build.jobs.image.results.digest", "params.a"}
	if !slices.Equal(got, want) {
		t.Fatalf("References = %q, want %q", got, want)
	}
	if r := References("no refs, $(HOME), $(params.)"); len(r) != 0 {
		t.Fatalf("References found %q in text without references", r)
	}
}
