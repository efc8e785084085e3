package main

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckFlags(t *testing.T) {
	good := config{groups: 1, values: 10, size: 1, keys: 1, clients: 1, catchup: -1, target: "1",
		timeout: time.Second, catchupTimeout: time.Second, readMode: "auto"}
	if msg := good.check(); msg != "" {
		t.Fatalf("check(good) = %q", msg)
	}
	for _, c := range []struct {
		change func(*config)
		want   string
	}{
		{func(c *config) { c.readRatio = 1 }, "--read-ratio"},
		{func(c *config) { c.readRatio = -0.1 }, "--read-ratio"},
		{func(c *config) { c.readMode = "fast" }, "--read-mode"},
		{func(c *config) { c.target = "2" }, "--target"},
		{func(c *config) { c.catchup = -2 }, "--catchup"},
	} {
		bad := good
		c.change(&bad)
		if msg := bad.check(); !strings.Contains(msg, c.want) {
			t.Errorf("check(%+v) = %q, want a message naming %s", bad, msg, c.want)
		}
	}
	for _, mode := range []string{"auto", "lease", "index", "propose", "stale"} {
		ok := good
		ok.readMode, ok.readRatio, ok.target = mode, 0.5, "master"
		if msg := ok.check(); msg != "" {
			t.Errorf("check(--read-mode %s) = %q", mode, msg)
		}
	}
}

func TestOutcomeAndFirstOK(t *testing.T) {
	for err, want := range map[error]string{
		nil: "ok",
		&statusError{"PUT", "k", 503, "no quorum"}: "503",
		&statusError{"GET", "k", 504, "timeout"}:   "504",
		errors.New("connection refused"):           "no answer",
	} {
		if got := outcome(err); got != want {
			t.Errorf("outcome(%v) = %q, want %q", err, got, want)
		}
	}
	t0 := time.Unix(100, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	ops := []opTrace{
		{get: false, start: at(-10), end: at(5), outcome: "ok"}, // sent before t0
		{get: false, start: at(1), end: at(50), outcome: "503"}, // failed
		{get: false, start: at(20), end: at(90), outcome: "ok"}, // a later success ending first
		{get: false, start: at(10), end: at(120), outcome: "ok"},
		{get: true, start: at(30), end: at(40), outcome: "ok"}, // a GET
	}
	if got, ok := firstOK(ops, false, t0); !ok || !got.Equal(at(90)) {
		t.Fatalf("firstOK(PUT) = %v, %v; want %v", got, ok, at(90))
	}
	if got, ok := firstOK(ops, true, t0); !ok || !got.Equal(at(40)) {
		t.Fatalf("firstOK(GET) = %v, %v; want %v", got, ok, at(40))
	}
	if _, ok := firstOK(ops, true, at(31)); ok {
		t.Fatalf("firstOK(GET after the last GET) found one")
	}
}
