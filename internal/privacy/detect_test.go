package privacy_test

import (
	"strings"
	"testing"

	"github.com/runops/runops/internal/privacy"
)

// found lists what the detector finds in text as "kind:value".
func found(t *testing.T, d *privacy.Detector, text string) []string {
	t.Helper()
	var out []string
	for _, m := range d.Find(text) {
		out = append(out, string(m.Kind)+":"+text[m.Start:m.End])
	}
	return out
}

// Each kind, as it appears in a sentence of an SOP or a line of a screen.
func TestDetectorsFindEachKind(t *testing.T) {
	t.Parallel()
	d, err := privacy.NewDetector(nil)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"Sign in as jane.doe+ops@acme-corp.co.uk and open Settings.":                       "email:jane.doe+ops@acme-corp.co.uk",
		"Paste sk_live_51HxYzAbCdEfGhIjKlMn0123 into the API key field":                    "api_key:sk_live_51HxYzAbCdEfGhIjKlMn0123",
		"the test key rk_test_4eC39HqLyjWDarjtT1zdp7dc":                                    "api_key:rk_test_4eC39HqLyjWDarjtT1zdp7dc",
		"Card 4242 4242 4242 4242, exp 12/34":                                              "card_number:4242 4242 4242 4242",
		"card 4000-0566-5566-5556":                                                         "card_number:4000-0566-5566-5556",
		"Amex 3782 822463 10005 on file":                                                   "card_number:3782 822463 10005",
		"digits only 5555555555554444.":                                                    "card_number:5555555555554444",
		"IBAN DE89 3704 0044 0532 0130 00 for the refund":                                  "iban:DE89 3704 0044 0532 0130 00",
		"GB82WEST12345698765432":                                                           "iban:GB82WEST12345698765432",
		"aws AKIAIOSFODNN7EXAMPLE in the console":                                          "access_key:AKIAIOSFODNN7EXAMPLE",
		"token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 copied":                            "token:ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
		"github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz":                        "token:github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz",
		"slack xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp":                           "token:xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp",
		"key AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW":                                      "api_key:AIzaSyA1b2C3d4E5f6G7h8I9j0KlMnOpQrStUvW",
		"OPENAI sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv":                                        "api_key:sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv",
		"Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.dozjgNryP4J3jVmNHl0w5N":        "token:eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTYifQ.dozjgNryP4J3jVmNHl0w5N",
		"connect to postgres://admin:s3cr3t-Pass@db.internal:5432/app":                     "password:s3cr3t-Pass",
		"run it with password=hunter2 and retry":                                           "password:hunter2",
		`set api_key="abc 123" first`:                                                      `token:"abc 123"`,
		"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----": "private_key:-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
	}
	for text, want := range cases {
		if got := found(t, d, text); len(got) != 1 || got[0] != want {
			t.Errorf("%q: found %q; want %q", text, got, want)
		}
	}
}

// What looks like a value but is not one stays as it is.
func TestDetectorsLeaveLookalikes(t *testing.T) {
	t.Parallel()
	d, _ := privacy.NewDetector(nil)
	for _, text := range []string{
		"At 00:01:23 click Save; it was 2026-12-04 10:15:00 UTC.",
		"Order 1234567890123 and order #4242424242424241 (not Luhn) shipped.",
		"ticket 12345678901234567890123 (too long to be a card)",
		"Version 1.24.3, build 20261204.1, v2.0.0-rc.1",
		"job 123e4567-e89b-12d3-a456-426614174000 and 12345678-1234-1234-1234-123456789012",
		"phone support: +1 415 555 2671",
		"Use the sk-learn library and the pk column; xox is a game.",
		"Type your password into the Password field, then the token field.",
		"the DE89 line of the report, GB82 WEST 1234",
		"email the team at support (no address shown)",
		"Invoice INV-2026-000123 for 4,242.42 EUR",
	} {
		if got := found(t, d, text); len(got) != 0 {
			t.Errorf("%q: found %q", text, got)
		}
	}
}

// An operator's patterns find their own kind; a bad one is refused at start.
func TestOperatorPatterns(t *testing.T) {
	t.Parallel()
	// ";" separates, ";;" is a semicolon, blanks around a pattern and empty
	// patterns are dropped.
	patterns, err := privacy.ParsePatterns(`CUST-\d{6}; [a-z0-9-]+\.corp\.internal ;ref;;\d{4};`)
	if err != nil || len(patterns) != 3 || patterns[2] != `ref;\d{4}` {
		t.Fatalf("%q %v", patterns, err)
	}
	d, err := privacy.NewDetector(patterns)
	if err != nil {
		t.Fatal(err)
	}
	got := found(t, d, "Open CUST-004211 on billing-7.corp.internal (ref;2231), mail ops@example.com")
	if strings.Join(got, " ") != "custom:CUST-004211 custom:billing-7.corp.internal custom:ref;2231 email:ops@example.com" {
		t.Fatalf("%q", got)
	}
	for _, bad := range []string{`CUST-(\d`, `a*`} {
		if _, err := privacy.ParsePatterns(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Logs name the kind, not the value; with redaction off, nothing changes.
func TestScrub(t *testing.T) {
	t.Parallel()
	d, _ := privacy.NewDetector(nil)
	if got := d.Scrub(`node "ask-jane@acme.io" names no node`); got != `node "[email]" names no node` {
		t.Fatalf("%q", got)
	}
	var off *privacy.Detector
	if got := off.Scrub("jane@acme.io"); got != "jane@acme.io" {
		t.Fatalf("off: %q", got)
	}
}
