package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

func TestAdminAddrFromTheConfigIsDialable(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CORRAL_ADMIN", "")
	for _, tc := range []struct{ listen, want string }{
		{"127.0.0.1:9555", "127.0.0.1:9555"},
		{"0.0.0.0:9555", "127.0.0.1:9555"}, // a container's admin listener
		{"[::]:9555", "[::1]:9555"},
		{":9555", "127.0.0.1:9555"},
	} {
		path := filepath.Join(dir, "config.hcl")
		src := "admin {\n  listen = \"" + tc.listen + "\"\n}\napp \"web\" {\n  command = [\"true\"]\n}\n"
		if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Setenv("CORRAL_CONFIG", path)
		if got := adminAddr(""); got != tc.want {
			t.Errorf("admin.listen %q: corral health dials %q, want %q", tc.listen, got, tc.want)
		}
	}
}

func TestHealthCommandFindsTheAdminAddressThroughCORRAL_CONFIG(t *testing.T) {
	c := startWeb(t, 1)
	cmd := exec.Command(corralBin, "health")
	cmd.Dir = t.TempDir() // no ./config.hcl there
	cmd.Env = append(os.Environ(), "CORRAL_CONFIG="+c.config, "CORRAL_ADMIN=")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() {
		defer close(done)
		out, err = cmd.CombinedOutput()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("corral health did not return")
	}
	if err != nil {
		t.Fatalf("corral health with CORRAL_CONFIG=%s: %v\n%s", c.config, err, out)
	}
}
