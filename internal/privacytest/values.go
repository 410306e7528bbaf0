package privacytest

import (
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"math/rand/v2"
	"strings"
)

// Alphabets the generated values are drawn from.
const (
	digits   = "0123456789"
	lower    = "abcdefghijklmnopqrstuvwxyz"
	upper    = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	alnum    = upper + lower + digits
	hexa     = "0123456789abcdef"
	base32   = upper + "234567"
	urlsafe  = alnum + "-_"
	base64ch = alnum + "+/"
)

// gen makes values that look exactly like real ones, from a seeded
// generator: random bodies in each format's own alphabet and length.
type gen struct{ r *rand.Rand }

func newGen(seed uint64) *gen { return &gen{rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))} }

// str is n characters of alphabet, with at least one digit, one upper-
// and one lower-case letter when the alphabet has them and n allows
// (what every real token's body has).
func (g *gen) str(alphabet string, n int) string {
	for {
		b := make([]byte, n)
		for i := range b {
			b[i] = alphabet[g.r.IntN(len(alphabet))]
		}
		s := string(b)
		if n < 12 || (mixed(s, alphabet, digits) && mixed(s, alphabet, upper) && mixed(s, alphabet, lower)) {
			return s
		}
	}
}

// mixed: s has a character of class, or alphabet has none.
func mixed(s, alphabet, class string) bool {
	return !strings.ContainsAny(alphabet, class) || strings.ContainsAny(s, class)
}

func (g *gen) digits(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.r.IntN(10)]
	}
	return string(b)
}

func (g *gen) pick(from ...string) string { return from[g.r.IntN(len(from))] }

// Secrets of providers, in their documented formats.

func (g *gen) github() string { return "ghp_" + g.str(alnum, 36) }

// githubFine is a fine-grained personal access token: 22 characters, an
// underscore and 59 more.
func (g *gen) githubFine() string {
	return "github_pat_11" + g.str(upper+digits, 20) + "_" + g.str(alnum, 59)
}

func (g *gen) gitlab() string { return "glpat-" + g.str(alnum, 20) }

func (g *gen) slack() string {
	return "xoxb-" + g.digits(12) + "-" + g.digits(13) + "-" + g.str(alnum, 24)
}

// stripe is a live secret key, or with restricted a restricted one.
func (g *gen) stripe(restricted bool) string {
	prefix := "sk_live_51"
	if restricted {
		prefix = "rk_live_51"
	}
	return prefix + g.str(alnum, 30)
}

func (g *gen) awsID() string     { return "AKIA" + g.str(base32, 16) }
func (g *gen) awsSecret() string { return g.str(base64ch, 40) }
func (g *gen) google() string    { return "AIzaSy" + g.str(urlsafe, 33) }

// openai is a project key: 74 characters, T3BlbkFJ ("openai" in base64),
// 74 more.
func (g *gen) openai() string {
	return "sk-proj-" + g.str(urlsafe, 74) + "T3BlbkFJ" + g.str(urlsafe, 74)
}

func (g *gen) anthropic() string { return "sk-ant-api03-" + g.str(urlsafe, 93) + "AA" }
func (g *gen) npm() string       { return "npm_" + g.str(alnum, 36) }

// pypi is an upload token: a base64 macaroon that always starts with the
// encoding of its location, pypi.org.
func (g *gen) pypi() string { return "pypi-AgEIcHlwaS5vcmc" + g.str(urlsafe, 64) }

func (g *gen) sendgrid() string { return "SG." + g.str(urlsafe, 22) + "." + g.str(urlsafe, 43) }

// twilio is an API key's SID (SK…), or with account an account SID (AC…).
func (g *gen) twilio(account bool) string {
	if account {
		return "AC" + g.str(hexa, 32)
	}
	return "SK" + g.str(hexa, 32)
}

// bearer is an opaque access token as OAuth servers hand out.
func (g *gen) bearer() string { return g.str(urlsafe, 44) }

// supabaseRef is a Supabase project's reference: 20 lower-case letters.
func (g *gen) supabaseRef() string { return g.str(lower, 20) }

// supabaseServiceKey is the service-role key of project ref: an HS256 JWT
// signed with the project's JWT secret, as the dashboard shows it.
func (g *gen) supabaseServiceKey(ref, secret string) string {
	enc := base64.RawURLEncoding
	header := enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	iat := 1_690_000_000 + g.r.IntN(60_000_000)
	payload, _ := json.Marshal(struct {
		Iss  string `json:"iss"`
		Ref  string `json:"ref"`
		Role string `json:"role"`
		Iat  int    `json:"iat"`
		Exp  int    `json:"exp"`
	}{"supabase", ref, "service_role", iat, iat + 315_360_000})
	signed := header + "." + enc.EncodeToString(payload)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(mac.Sum(nil))
}

// password is what a password manager makes: letters, digits and signs.
func (g *gen) password(n int) string {
	for {
		p := g.str(alnum+"!#$%&*?@", n)
		if strings.ContainsAny(p, "!#$%&*?@") {
			return p
		}
	}
}

// rsaKey is a real 1024-bit RSA private key, PKCS #1 in PEM (64-character
// lines), its primes drawn from the generator so that it is the same on
// every run.
func (g *gen) rsaKey() string {
	e := big.NewInt(65537)
	one := big.NewInt(1)
	prime := func() *big.Int {
		for {
			b := make([]byte, 64)
			for i := range b {
				b[i] = byte(g.r.IntN(256))
			}
			b[0] |= 0xc0
			b[63] |= 1
			p := new(big.Int).SetBytes(b)
			if p.ProbablyPrime(20) && new(big.Int).GCD(nil, nil, e, new(big.Int).Sub(p, one)).Cmp(one) == 0 {
				return p
			}
		}
	}
	p, q := prime(), prime()
	for p.Cmp(q) == 0 {
		q = prime()
	}
	n := new(big.Int).Mul(p, q)
	phi := new(big.Int).Mul(new(big.Int).Sub(p, one), new(big.Int).Sub(q, one))
	key := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: 65537}, D: new(big.Int).ModInverse(e, phi), Primes: []*big.Int{p, q}}
	key.Precompute()
	if err := key.Validate(); err != nil {
		panic("privacytest: generated RSA key: " + err.Error())
	}
	return strings.TrimSuffix(string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})), "\n")
}

// opensshKey is a real unencrypted Ed25519 key in OpenSSH's format
// (openssh-key-v1, base64 in 70-character lines), as ssh-keygen writes it.
func (g *gen) opensshKey(comment string) string {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(g.r.IntN(256))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	pub := priv.Public().(ed25519.PublicKey)
	field := func(out, f []byte) []byte { return append(binary.BigEndian.AppendUint32(out, uint32(len(f))), f...) }
	pubBlob := field(field(nil, []byte("ssh-ed25519")), pub)
	check := uint32(g.r.Uint64())
	private := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, check), check)
	for _, f := range [][]byte{[]byte("ssh-ed25519"), pub, priv, []byte(comment)} {
		private = field(private, f)
	}
	for i := byte(1); len(private)%8 != 0; i++ {
		private = append(private, i)
	}
	out := field(field(field([]byte("openssh-key-v1\x00"), []byte("none")), []byte("none")), nil) // cipher, KDF, KDF options
	out = binary.BigEndian.AppendUint32(out, 1)                                                   // one key
	out = field(field(out, pubBlob), private)
	body := base64.StdEncoding.EncodeToString(out)
	lines := []string{"-----BEGIN OPENSSH PRIVATE KEY-----"}
	for len(body) > 70 {
		lines, body = append(lines, body[:70]), body[70:]
	}
	return strings.Join(append(lines, body, "-----END OPENSSH PRIVATE KEY-----"), "\n")
}

// card is a Luhn-valid card number of a network (4 Visa, 5 Mastercard),
// grouped 4-4-4-4 as cards print it.
func (g *gen) card(network byte) string {
	d := []byte{network}
	if network == '5' {
		d = append(d, byte('1'+g.r.IntN(5)))
	}
	for len(d) < 15 {
		d = append(d, byte('0'+g.r.IntN(10)))
	}
	d = append(d, luhnDigit(string(d)))
	return string(d[0:4]) + " " + string(d[4:8]) + " " + string(d[8:12]) + " " + string(d[12:16])
}

// luhnDigit is the check digit that makes digits+it Luhn-valid.
func luhnDigit(digits string) byte {
	sum := 0
	for i := len(digits) - 1; i >= 0; i-- {
		n := int(digits[i] - '0')
		if (len(digits)-1-i)%2 == 0 {
			if n *= 2; n > 9 {
				n -= 9
			}
		}
		sum += n
	}
	return byte('0' + (10-sum%10)%10)
}

// iban is a mod-97-valid IBAN of country (DE, GB or FR) in its national
// layout, printed in groups of 4.
func (g *gen) iban(country string) string {
	var bban string
	switch country {
	case "DE":
		bban = g.digits(8) + g.digits(10)
	case "GB":
		bban = g.pick("NWBK", "BARC", "LOYD", "HBUK", "MIDL") + g.digits(6) + g.digits(8)
	case "FR":
		bank, branch, account := g.digits(5), g.digits(5), g.digits(11)
		rib := 97 - (89*mod97(bank)+15*mod97(branch)+3*mod97(account))%97
		bban = bank + branch + account + fmt.Sprintf("%02d", rib)
	default:
		panic("privacytest: no IBAN layout for " + country)
	}
	check := 98 - ibanMod97(bban+country+"00")
	s := fmt.Sprintf("%s%02d%s", country, check, bban)
	var groups []string
	for len(s) > 4 {
		groups, s = append(groups, s[:4]), s[4:]
	}
	return strings.Join(append(groups, s), " ")
}

// ibanMod97 is the remainder by 97 of s with its letters as numbers (A=10).
func ibanMod97(s string) int {
	var digits strings.Builder
	for _, c := range s {
		if c >= 'A' && c <= 'Z' {
			fmt.Fprintf(&digits, "%d", c-'A'+10)
		} else {
			digits.WriteRune(c)
		}
	}
	return mod97(digits.String())
}

func mod97(digits string) int {
	r := 0
	for _, c := range digits {
		r = (r*10 + int(c-'0')) % 97
	}
	return r
}

// Personal values.

// names are people's names, most with letters beyond ASCII; each corpus
// uses them all, in an order of its seed.
var names = []string{"Chloé Dupré", "José Núñez", "Zoë Lindqvist", "Inès Moreau-Lefèvre", "Priya Raman"}

// email is an address made of a name, with tag after a + when not empty.
func email(name, tag, domain string) string {
	local := strings.ReplaceAll(strings.ToLower(ascii(name)), " ", ".")
	if tag != "" {
		local += "+" + tag
	}
	return local + "@" + domain
}

// ascii drops the accents of Latin letters.
func ascii(s string) string {
	var b strings.Builder
	for _, r := range s {
		if a, ok := accents[r]; ok {
			r = a
		}
		b.WriteRune(r)
	}
	return b.String()
}

// phone is a number of country (FR, ES, GB, US) as people write it.
func (g *gen) phone(country string) string {
	switch country {
	case "FR":
		return "+33 6 " + g.digits(2) + " " + g.digits(2) + " " + g.digits(2) + " " + g.digits(2)
	case "ES":
		return "+34 6" + g.digits(2) + " " + g.digits(3) + " " + g.digits(3)
	case "GB":
		return "+44 20 7946 0" + g.digits(3)
	default:
		return "+1 (415) 555-01" + g.digits(2)
	}
}

// address is a postal address of country (FR, ES, GB, DE) on its lines.
func (g *gen) address(country string) []string {
	n := fmt.Sprint(2 + g.r.IntN(180))
	switch country {
	case "FR":
		return []string{n + " " + g.pick("rue de la Roquette", "boulevard Voltaire", "rue Oberkampf"), "750" + fmt.Sprintf("%02d", 1+g.r.IntN(20)) + " Paris", "France"}
	case "ES":
		return []string{"Calle de " + g.pick("Alcalá", "Atocha", "Fuencarral") + " " + n + ", " + fmt.Sprint(1+g.r.IntN(8)) + "º B", "280" + fmt.Sprintf("%02d", 1+g.r.IntN(50)) + " Madrid", "Spain"}
	case "GB":
		return []string{"Flat " + fmt.Sprint(1+g.r.IntN(40)) + ", " + n + " " + g.pick("Clerkenwell Road", "Holloway Road", "Caledonian Road"), "London " + g.pick("EC1M", "N7", "N1") + " " + fmt.Sprint(1+g.r.IntN(9)) + g.pick("RN", "AB", "HX", "QT"), "United Kingdom"}
	default:
		return []string{g.pick("Torstraße", "Kastanienallee", "Oranienstraße") + " " + n, "10" + g.digits(3) + " Berlin", "Germany"}
	}
}
