package exec_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/actuate"
	"github.com/scalpel-dev/scalpel/actuate/actuatortest"
	"github.com/scalpel-dev/scalpel/actuate/exec"
	"github.com/scalpel-dev/scalpel/schemas"
)

// script writes body into an executable /bin/sh script in a fresh directory and returns its path
// and the directory.
func script(t *testing.T, body string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "rollback.sh")
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path, dir
}

func newActuator(t *testing.T, cfg exec.Config) *exec.Actuator {
	t.Helper()
	a, err := exec.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func lines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(b))
}

func TestConformance(t *testing.T) {
	actuatortest.Run(t, func(t *testing.T) actuatortest.Harness {
		path, dir := script(t, `echo "$SCALPEL_COMMAND_ID" >> "$EFFECTS"`)
		effects := filepath.Join(dir, "effects")
		a := newActuator(t, exec.Config{Argv: []string{path}, Env: []string{"EFFECTS=" + effects}})
		return actuatortest.Harness{
			Actuator: a,
			Effects:  func(context.Context) ([]string, error) { return lines(t, effects), nil },
			// A program cannot know it already ran; receivers dedupe by SCALPEL_COMMAND_ID.
			AtLeastOnce: true,
		}
	})
}

func TestEnvironmentAndStdin(t *testing.T) {
	path, dir := script(t, `env | grep '^SCALPEL_' | sort > "$OUT/env"; cat > "$OUT/stdin"; echo "argv: $*" > "$OUT/argv"`)
	a := newActuator(t, exec.Config{Argv: []string{path, "deploy/checkout", "--to", "x y"}, Env: []string{"OUT=" + dir}})
	cmd := actuatortest.Command(t, 4)
	cmd.Reason = "error rate 11%; it's `bad` $(rm -rf /)"
	if err := a.Actuate(context.Background(), cmd); err != nil {
		t.Fatal(err)
	}
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range exec.Env(&cmd) {
		if !strings.Contains(string(env), kv+"\n") {
			t.Errorf("environment lacks %q:\n%s", kv, env)
		}
	}
	for _, k := range []string{"SCALPEL_COMMAND_ID", "SCALPEL_ACTION", "SCALPEL_SERVICE", "SCALPEL_COMPONENT",
		"SCALPEL_BLOCK", "SCALPEL_FROM_VERSION", "SCALPEL_TO_VERSION", "SCALPEL_GRANULARITY", "SCALPEL_REASON",
		"SCALPEL_DECISION_ID", "SCALPEL_INCIDENT_ID"} {
		if !strings.Contains(string(env), k+"=") {
			t.Errorf("no %s", k)
		}
	}
	var got schemas.RollbackCommand
	b, _ := os.ReadFile(filepath.Join(dir, "stdin"))
	if err := json.Unmarshal(b, &got); err != nil || got.ID != cmd.ID || got.Reason != cmd.Reason {
		t.Errorf("stdin %s (err %v), want the command as JSON", b, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "argv")); string(b) != "argv: deploy/checkout --to x y\n" {
		t.Errorf("argv %q: arguments must reach the program unsplit, without a shell", b)
	}
}

func TestFailures(t *testing.T) {
	tests := []struct {
		name          string
		body          string
		cfg           func(c *exec.Config)
		wantPermanent bool
		wantIs        error
		wantStderr    string
	}{
		{"exit 2 is permanent by default", `echo "error: unknown flag" >&2; exit 2`, nil, true, exec.ErrExit, "unknown flag"},
		{"exit 1 is retryable", `echo "connection refused" >&2; exit 1`, nil, false, exec.ErrExit, "connection refused"},
		{"configured permanent code", `exit 3`, func(c *exec.Config) { c.PermanentExitCodes = []int{3, 4} }, true, exec.ErrExit, ""},
		{"2 retryable when not listed", `exit 2`, func(c *exec.Config) { c.PermanentExitCodes = []int{} }, false, exec.ErrExit, ""},
		{"timeout is retryable", `sleep 5 & sleep 5; wait`, func(c *exec.Config) { c.Timeout = schemas.Duration(100 * time.Millisecond) }, false, context.DeadlineExceeded, ""},
		{"stderr is bounded", `printf 'x%.0s' $(seq 1 5000) >&2; echo " the end" >&2; exit 1`, func(c *exec.Config) { c.MaxStderr = 64 }, false, exec.ErrExit, "the end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, _ := script(t, tt.body)
			cfg := exec.Config{Argv: []string{path}}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			start := time.Now()
			err := newActuator(t, cfg).Actuate(context.Background(), actuatortest.Command(t, 1))
			if err == nil {
				t.Fatal("no error")
			}
			if actuate.IsPermanent(err) != tt.wantPermanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", err, !tt.wantPermanent, tt.wantPermanent)
			}
			if !errors.Is(err, tt.wantIs) {
				t.Errorf("err %v does not match %v", err, tt.wantIs)
			}
			if !strings.Contains(err.Error(), tt.wantStderr) {
				t.Errorf("err %v does not quote stderr %q", err, tt.wantStderr)
			}
			if len(err.Error()) > 1024 {
				t.Errorf("error of %d bytes; stderr must be bounded", len(err.Error()))
			}
			if took := time.Since(start); took > 3*time.Second {
				t.Errorf("took %s: the timeout must kill the process group", took)
			}
		})
	}
}

func TestMissingProgramIsPermanent(t *testing.T) {
	a := newActuator(t, exec.Config{Argv: []string{filepath.Join(t.TempDir(), "nope")}})
	err := a.Actuate(context.Background(), actuatortest.Command(t, 1))
	if err == nil || !actuate.IsPermanent(err) {
		t.Fatalf("err = %v, want permanent", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     exec.Config
		wantErr bool
	}{
		{"good", exec.Config{Argv: []string{"kubectl", "rollout", "undo"}}.Inherit(exec.DefaultConfig()), false},
		{"no argv", exec.DefaultConfig(), true},
		{"empty program", exec.Config{Argv: []string{""}}.Inherit(exec.DefaultConfig()), true},
		{"zero exit code", exec.Config{Argv: []string{"x"}, PermanentExitCodes: []int{0}}.Inherit(exec.DefaultConfig()), true},
		{"bad env", exec.Config{Argv: []string{"x"}, Env: []string{"NOEQUALS"}}.Inherit(exec.DefaultConfig()), true},
		{"negative timeout", exec.Config{Argv: []string{"x"}, Timeout: -1}.Inherit(exec.DefaultConfig()), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err != nil) != tt.wantErr {
				t.Fatalf("Validate() = %v, want error %v", err, tt.wantErr)
			}
		})
	}
}
