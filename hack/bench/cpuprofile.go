package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/client-go/rest"
)

// cpuProfiles takes a CPU profile of the API server and one of the manager
// while the throughput phase runs (--cpu-profile seconds, after a quarter of
// them as warm-up), kept in bin/bench/ for go tool pprof. wait returns when
// both are written.
func (b *bench) cpuProfiles(ctx context.Context) (wait func()) {
	secs := b.o.cpuProfile
	if secs <= 0 {
		return func() {}
	}
	apiClient, err := rest.HTTPClientFor(b.cfg)
	if err != nil {
		progress("cpu profile: %v", err)
		return func() {}
	}
	var wg sync.WaitGroup
	for _, p := range []struct {
		name, url string
		c         *http.Client
	}{
		{"apiserver", strings.TrimSuffix(b.cfg.Host, "/") + "/debug/pprof/profile", apiClient},
		{"manager", b.pprof + "/profile", http.DefaultClient},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Duration(secs) * time.Second / 4):
			}
			path, err := b.fetchProfile(p.c, fmt.Sprintf("%s?seconds=%d", p.url, secs), "cpu-"+p.name+".pb.gz")
			if err != nil {
				progress("cpu profile of the %s: %v", p.name, err)
				return
			}
			progress("cpu profile of the %s: %s", p.name, path)
		}()
	}
	return wg.Wait
}

// fetchProfile writes what url answers to bin/bench/name.
func (b *bench) fetchProfile(c *http.Client, url, name string) (string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	if err := os.MkdirAll(filepath.Join(b.o.root, "bin/bench"), 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(b.o.root, "bin/bench", name)
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	_, err = io.Copy(f, resp.Body)
	return path, err
}
