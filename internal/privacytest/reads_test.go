package privacytest

import (
	"strings"
	"testing"
)

// Reads counts a value as read through what OCR does to it — confusable
// characters, inserted spaces, a character or two wrong in a long value,
// a wrapped or multi-line value read in part — and never a value of the
// same shape that is not it, nor a part every value of its kind shares.
func TestReadsAsAPersonWould(t *testing.T) {
	t.Parallel()
	stripe := val("stripe", "sk_live_51umKo75M0rBx8AAzdxpkiaShC4ShRfZ")
	jwt := val("supabase_jwt", "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6Im5xbmtjbWlyend5bGxtc3d0c3pzIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImlhdCI6MTcyMDg4NzAyNCwiZXhwIjoyMDM2MjQ3MDI0fQ.X4ENEohkJAxozwcP9rnHjUTuYHzyWhhwqixoL8O2V_E")
	jwt.Pieces = []string{jwt.Text[:85], jwt.Text[85:]}
	other := "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6InF3aGJ2bXprcHRybHhuY2RzYWdmIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImlhdCI6MTY5OTExMjIzMywiZXhwIjoyMDE0NDcyMjMzfQ.GfR2vJ8kq1LmZx0TtWcYp5NbHs7DeUaQ3iKo9rXlM4w"
	pemKey := val("pem", "-----BEGIN RSA PRIVATE KEY-----\nMIICXAIBAAKBgQDV0S3mrQrVH5muC4sHr0ENlo9fG8ON+3KW0/EOfhkkGMa4h3CK\n96gzZ47yLz9akYCcs/EJ35zyorjkREuIojzm4ShNKqaqMVW6go53h6ue7xC5+V8P\n-----END RSA PRIVATE KEY-----")
	pemKey.Pieces = strings.Split(pemKey.Text, "\n")[1:3]
	address := val("address", "Flat 33, 163 Holloway Road\nLondon EC1M 8HX\nUnited Kingdom")
	address.Pieces = []string{"Flat 33, 163 Holloway Road"}
	name := val("name", "José Núñez")
	email := val("email", "chloe.dupre+ops@acme-corp.com")
	card := val("card", "4739 6833 8703 7073")
	iban := val("iban", "GB39 BARC 0975 9339 8686 15")
	phone := val("phone", "+33 6 40 27 62 34")
	for _, c := range []struct {
		ocr  string
		v    Value
		want bool
	}{
		{"API key sk_live_51umKo75M0rBx8AAzdxpkiaShC4ShRfZ Created", stripe, true},
		{"SK_LIVE_51UMKO75M0RBX8AAZDXPKIASHC4SHRFZ", stripe, true},
		{"sk_live_5lumKo7SMOrBx8AAzdxpk iaShC4ShRfZ", stripe, true},  // 1/l, 5/S, 0/O, a space
		{"sk live 51umKo75M0rBx8AAzdxpkiaShC4ShRf", stripe, true},    // _ read as a space, the last letter lost
		{"sk_live_51umKo7*M0rBx8AAzdxpk1aShC4ShRfZ |", stripe, true}, // a wrong character
		{"sk_live_51umKo75M0rBxAAzdxpkiaShC4hR", stripe, true},       // three lost of 40
		{"sk_live_51umKo75M0rB… Production", stripe, false},          // cut short
		{"sk_live_51nLA4AOASED4Jcqe8eGycfbGFPuhMJB", stripe, false},  // another key of the shape
		{"sk_live_", stripe, false},                                  // the prefix every key has
		{"export SUPABASE_SERVICE_ROLE_KEY=" + jwt.Text[:85] + "\n" + jwt.Text[85:], jwt, true},
		{"Zm9v " + strings.ReplaceAll(jwt.Text[85:], "O", "0"), jwt, true},                     // the second row alone
		{jwt.Text[:85] + " and then a black box", jwt, true},                                   // the first row alone
		{"eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZSIsInJlZiI6I", jwt, false}, // what every service-role key starts with
		{other[:85] + "\n" + other[85:], jwt, false},                                           // another project's key
		{"MIICXAIBAAKBgQDV0S3mrQrVH5muC4sHrOENLo9 FG80N+3KWO/EOfhkkGMa4h3CK", pemKey, true},    // one body line, misread
		{"-----BEGIN RSA PRIVATE KEY-----\n-----END RSA PRIVATE KEY-----", pemKey, false},      // only what every key has
		{"Address Flat 33, 163 Holloway Road Bank account", address, true},
		{"London EC1M 8HX\nUnited Kingdom", address, false},
		{"\"name\": \"José Nufiez\",", name, true}, // ñ read as fi
		{"Jose Nunez", name, true},
		{"JOSE NUNES", name, true},
		{"José Martínez", name, false},
		{"José", name, false},
		{"Email chloe.dupre+ops@acme-corp.com", email, true},
		{"chloe . dupre+ops@acme-corp.corn", email, true}, // m read as rn
		{"chloe.dupre@acme-corp.com", email, false},
		{"Card number 4739 6833 8703 7O73 Expires", card, true},
		{"4739 6833 8703 7073", card, true},
		{"4739 6833 5521 0964", card, false},
		{"IBAN GB39BARC09759339868615", iban, true},
		{"GB39 BARC 0975 9339 1234 56", iban, false},
		{"Phone +33 640 27 62 34", phone, true},
		{"Phone +33 6 40 27 99 11", phone, false},
	} {
		if got := Reads(c.ocr, c.v); got != c.want {
			t.Errorf("Reads(%q, %s %q) = %v", c.ocr, c.v.Kind, c.v.Text, got)
		}
	}
}

// WordsRead takes a word as read when OCR read it whole, confusable
// characters and case aside.
func TestWordsRead(t *testing.T) {
	t.Parallel()
	words := []string{"Billing", "Invoices", "Settings", "Données", "Export", "Reports"}
	read, total := WordsRead("Bi11ing: lnvoices\nSetting DONNEES (Exp0rt) Rep orts", words)
	if read != 4 || total != 6 {
		t.Errorf("read %d of %d words; want 4 of 6 (Settings and Reports are not read)", read, total)
	}
}
