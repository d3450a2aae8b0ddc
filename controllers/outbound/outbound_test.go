package outbound

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCheckURL(t *testing.T) {
	open, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	listed, err := Parse([]string{"hooks.slack.com", "*.example.com", "10.0.0.0/8", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		guard *Guard
		url   string
		want  string // "" allowed, else part of the error
	}{
		{open, "https://hooks.slack.com/services/T/B/x", ""},
		{open, "http://events.ci.svc.cluster.local/x", ""},
		{open, "http://10.1.2.3/x", ""},
		{open, "http://169.254.169.254/latest/meta-data/", "link-local"},
		{open, "http://[fe80::1]/x", "link-local"},
		{open, "http://127.0.0.1:8443/x", "loopback"},
		{open, "http://[::ffff:127.0.0.1]/x", "loopback"},
		{open, "http://[::1]/x", "loopback"},
		{open, "http://0.0.0.0/x", "unspecified"},
		{open, "http://localhost:8080/x", "loopback"},
		{open, "http://a-name-that-does-not-resolve.invalid/x", ""},
		{open, "ftp://example.com/x", "http or https"},
		{open, "https://user:pw@example.com/x?token=s3cret", "user info"},
		{listed, "https://hooks.slack.com/services/T/B/x", ""},
		{listed, "https://HOOKS.slack.com/x", ""},
		{listed, "https://ci.example.com/x", ""},
		{listed, "https://example.com/x", "not in the cluster's outbound allowlist"},
		{listed, "https://evil.com/x?h=hooks.slack.com", "not in the cluster's outbound allowlist"},
		{listed, "https://hooks.slack.com.evil.com/x", "not in the cluster's outbound allowlist"},
		{listed, "http://10.9.9.9/x", ""},
		{listed, "http://127.0.0.1:9/x", ""},
		{listed, "http://192.168.1.1/x", "not in the cluster's outbound allowlist"},
		{listed, "http://169.254.169.254/x", "link-local"},
		{listed, "http://nowhere.invalid/x", "and does not resolve into its networks"},
		{listed, "http://nowhere.example.com/x", ""},
	}
	for _, c := range cases {
		err := c.guard.CheckURL(c.url)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.url, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want an error with %q", c.url, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%s: the error shows the query: %v", c.url, err)
		}
	}
	for _, bad := range []string{"*", "10.0.0.0/99", "a b", "http://x"} {
		if _, err := Parse([]string{bad}); err == nil {
			t.Errorf("allowlist entry %q was accepted", bad)
		}
	}
}

// TestClientDials: the connection check holds after DNS resolution (a name
// that resolves to loopback is refused at connect), and redirects are not
// followed.
func TestClientDials(t *testing.T) {
	hits := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	port := srv.URL[strings.LastIndex(srv.URL, ":"):]

	open, _ := Parse(nil)
	// A name resolving to loopback: the connection check, made after DNS
	// resolution, refuses it (the client makes no URL check of its own).
	if _, err := open.Client(5 * time.Second).Get("http://localhost" + port + "/"); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("connection to localhost%s through the open guard: %v, want refused as loopback", port, err)
	}
	if _, err := open.Client(5 * time.Second).Get(srv.URL + "/"); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("connection to %s through the open guard: %v, want refused as loopback", srv.URL, err)
	}
	if hits != 0 {
		t.Fatalf("the server was reached %d times through a guard that refuses it", hits)
	}

	local, _ := Parse([]string{"127.0.0.0/8"})
	res, err := local.Client(5 * time.Second).Get(srv.URL + "/redirect")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusFound || hits != 1 {
		t.Errorf("redirect: status %d after %d requests; want the 302 itself, not followed", res.StatusCode, hits)
	}
}
