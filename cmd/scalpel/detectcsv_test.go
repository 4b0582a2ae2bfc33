package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scalpel-dev/scalpel/detect/single"
)

func TestLoadSingleConfig(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, body string
		want       func(single.Config) bool
		wantErr    string
	}{
		{name: "none", want: func(c single.Config) bool { return c == single.DefaultConfig() }},
		{name: "yaml", body: "season_hours: 0\nrest: 200\n", want: func(c single.Config) bool {
			return c.SeasonHours == 0 && c.Rest == 200 && c.Bins == single.DefaultConfig().Bins
		}},
		{name: "json", body: `{"alarm_threshold": 0.9}`, want: func(c single.Config) bool { return c.AlarmThreshold == 0.9 }},
		{name: "empty", body: "", want: func(c single.Config) bool { return c == single.DefaultConfig() }},
		{name: "typo", body: "sesaon_hours: 0\n", wantErr: "field sesaon_hours not found"},
		{name: "invalid", body: "rest: -1\n", wantErr: "rest -1 must be ≥ 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.name != "none" {
				path = writeFile(t, dir, tt.name+".yaml", tt.body)
			}
			cfg, err := loadSingleConfig(path)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.want(cfg) {
				t.Fatalf("config %+v", cfg)
			}
		})
	}
	if _, err := loadSingleConfig(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Fatal("a missing file loaded")
	}
}

// TestDetectCSVUsesConfig checks that the config reaches the detector: a threshold above every
// possible score gives no alarm where the default alarms.
func TestDetectCSVUsesConfig(t *testing.T) {
	var in bytes.Buffer
	in.WriteString("timestamp,value\n")
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1500 {
		v := 10 + float64(i%7)
		if i == 1200 {
			v = 1000
		}
		fmt.Fprintf(&in, "%s,%g\n", t0.Add(time.Duration(i)*5*time.Minute).Format("2006-01-02 15:04:05"), v)
	}
	alarms := func(cfg single.Config) int {
		var out bytes.Buffer
		if err := detectCSV(bytes.NewReader(in.Bytes()), &out, cfg); err != nil {
			t.Fatal(err)
		}
		return strings.Count(out.String(), ",true\n")
	}
	if n := alarms(single.DefaultConfig()); n == 0 {
		t.Fatal("the default config raised no alarm on a spike of 100x")
	}
	high := single.DefaultConfig()
	high.AlarmThreshold = 1
	high.SeenCap = 0.5
	if n := alarms(high); n != 0 {
		t.Fatalf("%d alarms with a threshold of 1", n)
	}
}

// writeFile writes body to dir/name and returns its path.
func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
