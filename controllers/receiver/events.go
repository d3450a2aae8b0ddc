// Package receiver turns git providers' push events into PipelineRuns: GitLab
// push and tag-push hooks, and GitHub push events (branches and tags).
package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	conveyorv1 "github.com/conveyor-dev/conveyor/api/v1alpha1"
)

// Push is what Conveyor needs of a push event, whoever sent it.
type Push struct {
	Provider string
	Event    string
	Delivery string
	// Repositories are the names the event gives its repository (path, URLs).
	Repositories []string
	// Branch or Tag is set, from the pushed ref.
	Branch, Tag string
	Commit      string
	// CommitTime is the pushed commit's timestamp; zero when the event does not give it.
	CommitTime time.Time
	Pusher     string
	// CloneURL is the repository's HTTP clone URL.
	CloneURL string
	// Deleted is true when the push deleted the ref.
	Deleted bool
}

// Parameters the receiver fills in a pushed run when its Pipeline declares them.
const (
	// ParamPusher is the git user who pushed.
	ParamPusher = "pusher"
	// ParamRepository is the pushed repository's clone URL (HTTP).
	ParamRepository = "repository"
)

// PushParams are the values a pushed run gives: those of ParamPusher and
// ParamRepository, for each the Pipeline declares. A parameter without a
// default that the receiver does not know leaves the run refused at
// admission, and the push skipped with the API server's message.
func PushParams(spec *conveyorv1.PipelineSpec, push Push) []conveyorv1.Param {
	known := map[string]string{ParamPusher: push.Pusher, ParamRepository: push.CloneURL}
	var out []conveyorv1.Param
	for _, p := range spec.Params {
		if v, ok := known[p.Name]; ok && v != "" {
			out = append(out, conveyorv1.Param{Name: p.Name, Value: v})
		}
	}
	return out
}

// errUnsupported marks an event type the receiver does not handle.
var errUnsupported = errors.New("unsupported event")

const zeroSHA = "0000000000000000000000000000000000000000"

// gitlabPush is the part of GitLab's "Push Hook" and "Tag Push Hook" payloads
// the receiver reads.
type gitlabPush struct {
	ObjectKind   string   `json:"object_kind"`
	Ref          string   `json:"ref"`
	After        string   `json:"after"`
	CheckoutSHA  *string  `json:"checkout_sha"`
	UserUsername string   `json:"user_username"`
	Commits      []commit `json:"commits"`
	Project      struct {
		PathWithNamespace string `json:"path_with_namespace"`
		WebURL            string `json:"web_url"`
		GitHTTPURL        string `json:"git_http_url"`
		GitSSHURL         string `json:"git_ssh_url"`
	} `json:"project"`
}

// githubPush is the part of GitHub's "push" payload the receiver reads.
type githubPush struct {
	Ref        string `json:"ref"`
	After      string `json:"after"`
	Deleted    bool   `json:"deleted"`
	Repository struct {
		FullName string `json:"full_name"`
		HTMLURL  string `json:"html_url"`
		CloneURL string `json:"clone_url"`
		SSHURL   string `json:"ssh_url"`
	} `json:"repository"`
	Pusher struct {
		Name string `json:"name"`
	} `json:"pusher"`
	HeadCommit *commit `json:"head_commit"`
}

// commit is a commit as push events list them.
type commit struct {
	ID        string `json:"id"`
	Timestamp string `json:"timestamp"`
}

// commitTime is the timestamp of the commit sha among those given; zero when
// none is it or its time does not read.
func commitTime(sha string, commits []commit) time.Time {
	for _, c := range commits {
		if c.ID == sha && sha != "" {
			if t, err := time.Parse(time.RFC3339, c.Timestamp); err == nil {
				return t
			}
		}
	}
	return time.Time{}
}

// parse reads a push event of the provider from its headers and body.
func parse(provider string, h http.Header, body []byte) (*Push, error) {
	p := &Push{Provider: provider}
	switch provider {
	case "gitlab":
		p.Event, p.Delivery = h.Get("X-Gitlab-Event"), h.Get("X-Gitlab-Event-UUID")
		if p.Event != "Push Hook" && p.Event != "Tag Push Hook" {
			return nil, fmt.Errorf("%w: GitLab %q (only Push Hook and Tag Push Hook)", errUnsupported, p.Event)
		}
		var e gitlabPush
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("malformed GitLab payload: %w", err)
		}
		p.Repositories = []string{e.Project.PathWithNamespace, e.Project.WebURL, e.Project.GitHTTPURL, e.Project.GitSSHURL}
		p.Commit, p.Pusher, p.CloneURL = e.After, e.UserUsername, e.Project.GitHTTPURL
		p.CommitTime = commitTime(e.After, e.Commits)
		p.Deleted = e.After == zeroSHA || (e.CheckoutSHA == nil && e.After == "")
		if err := p.setRef(e.Ref); err != nil {
			return nil, err
		}
	case "github":
		p.Event, p.Delivery = h.Get("X-GitHub-Event"), h.Get("X-GitHub-Delivery")
		if p.Event != "push" {
			return nil, fmt.Errorf("%w: GitHub %q (only push)", errUnsupported, p.Event)
		}
		var e githubPush
		if err := json.Unmarshal(body, &e); err != nil {
			return nil, fmt.Errorf("malformed GitHub payload: %w", err)
		}
		p.Repositories = []string{e.Repository.FullName, e.Repository.HTMLURL, e.Repository.CloneURL, e.Repository.SSHURL}
		p.Commit, p.Pusher, p.Deleted = e.After, e.Pusher.Name, e.Deleted || e.After == zeroSHA
		p.CloneURL = e.Repository.CloneURL
		if e.HeadCommit != nil {
			p.CommitTime = commitTime(e.After, []commit{*e.HeadCommit})
		}
		if err := p.setRef(e.Ref); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("%w: provider %q", errUnsupported, provider)
	}
	return p, nil
}

func (p *Push) setRef(ref string) error {
	switch {
	case strings.HasPrefix(ref, "refs/heads/") && len(ref) > len("refs/heads/"):
		p.Branch = strings.TrimPrefix(ref, "refs/heads/")
	case strings.HasPrefix(ref, "refs/tags/") && len(ref) > len("refs/tags/"):
		p.Tag = strings.TrimPrefix(ref, "refs/tags/")
	default:
		return fmt.Errorf("malformed payload: ref %q is neither refs/heads/... nor refs/tags/...", ref)
	}
	return nil
}

// normalizeRepo makes the names of one repository compare equal.
func normalizeRepo(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimSuffix(strings.TrimSuffix(s, "/"), ".git")
	return s
}
