package pipeline_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/runops/runops/internal/geminitest"
	"github.com/runops/runops/internal/jobs"
	"github.com/runops/runops/internal/mediatest"
	"github.com/runops/runops/internal/privacytest"
	"github.com/runops/runops/internal/queue"
	"github.com/runops/runops/internal/supabasetest"
)

// formPassword is the password the sign-in forms below show.
const formPassword = "Vq7#kP2m!xL9wR4z"

// signInForm is a sign-in form, light, 720p (the corpus's signin screen),
// its password field holding field (the dots, or the password shown) and,
// when toggle is not empty, the field's Show/Hide button saying it.
func signInForm(field, toggle string) mediatest.Screen {
	return mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Sans,
		Boxes: []mediatest.Box{{X: 420, Y: 214, W: 460, H: 52, Thick: 2}, {X: 420, Y: 326, W: 460, H: 52, Thick: 2}, {X: 420, Y: 452, W: 460, H: 52, Fill: true}},
		Lines: []mediatest.Line{
			{Text: "Sign in to Acme Console", X: 430, Y: 60, Size: 32},
			{Text: "Welcome back. Use your work account to continue.", X: 430, Y: 120, Size: 20},
			{Text: "Email", X: 430, Y: 180, Size: 20},
			{Text: "ops@acme-corp.com", X: 436, Y: 228, Size: 22},
			{Text: "Password", X: 430, Y: 292, Size: 20},
			{Text: field, X: 436, Y: 340, Size: 22},
			{Text: toggle, X: 810, Y: 342, Size: 20}, // not drawn when empty
			{Text: "Keep me signed in on this device", X: 430, Y: 404, Size: 20},
			{Text: "Sign in", X: 608, Y: 466, Size: 22},
			{Text: "Forgot your password?", X: 430, Y: 540, Size: 20},
		}}
}

var consolePage = mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Sans, Lines: []mediatest.Line{
	{Text: "Acme Console      Dashboard      Billing      Team      Settings", X: 40, Y: 22, Size: 20},
	{Text: "Welcome back", X: 40, Y: 100, Size: 34},
	{Text: "Orders today 1284      Refunds 12      Open tickets 3", X: 40, Y: 180, Size: 22},
}}

// runForms runs a recording of screens (3 s each) through the pipeline
// with the privacy pass on; the model's steps are shown at seconds 1, 4,
// 7…, named by names, and neither repeat nor mark any value (a careful
// model, or one that missed the password). It returns what OCR reads on
// the stored screenshot of step check, having checked that it reads the
// password on the recording at that second.
func runForms(t *testing.T, screens []mediatest.Screen, names []string, check string) string {
	t.Helper()
	dir := t.TempDir()
	video := mediatest.MakeScreens(t, dir, "forms.mp4", mediatest.Screens{Width: 1280, Height: 720, Seconds: 3, Screens: screens})
	var steps []privacytest.Screen
	second := 0
	for i, n := range names {
		steps = append(steps, privacytest.Screen{Name: n, Title: "Step " + n, Second: 3*i + 1})
		if n == check {
			second = 3*i + 1
		}
	}
	raw := mediatest.Frame(t, video, float64(second), filepath.Join(dir, "raw.jpg"))
	if seen := privacytest.Read(t, raw); !privacytest.Reads(seen, privacytest.Value{Text: formPassword}) {
		t.Fatalf("OCR does not read the password on the recording (the test proves nothing):\n%s", seen)
	}
	fake, id, clock := runPrivately(t, dir, video, steps)
	obj, ok := fake.Object("videos/" + id.FramePath(check))
	if !ok {
		t.Fatalf("no screenshot of %s; frames %v", check, clock.md["frames"])
	}
	seen := privacytest.Read(t, obj.File)
	// The screenshot is the form, still read: covering all of it, or
	// storing another second, would hide the password too.
	if !strings.Contains(seen, "Sign in to Acme Console") {
		t.Fatalf("OCR does not read the form's title on the stored screenshot:\n%s", seen)
	}
	if counts, _ := clock.md["privacy"].(map[string]any)["counts"].(map[string]any); counts["password"] == nil {
		t.Errorf("metadata.privacy %v counts no password", clock.md["privacy"])
	}
	return seen
}

// A sign-in form with the password shown and its field's Hide button
// beside it (the corpus's own signin screen) is covered: OCR reads the
// button on the password's line ("Vq7#kP2m!xL9wR4z Hide"), which the rule
// for a label on its own line and its value on the next allows (the
// field's button); no other rule knows a 16-character password with no
// name on its line.
func TestAShownPasswordBesideItsHideButtonIsCovered(t *testing.T) {
	t.Parallel()
	seen := runForms(t, []mediatest.Screen{signInForm(formPassword, "Hide"), consolePage}, []string{"show", "console"}, "show")
	if privacytest.Reads(seen, privacytest.Value{Text: formPassword}) {
		t.Errorf("OCR reads the password on the stored screenshot:\n%s", seen)
	}
}

// The same form without the button is covered as the middle picture of
// three too (typed as dots, shown, then the console), read against the
// first (ocr.ReadAgainst): the label "Password" did not change and is
// reused, the field's line is read again and goes under it, so the form's
// rule sees the label above its value. (It went after every reused line.)
func TestAPasswordShownAfterTheFirstPictureIsCovered(t *testing.T) {
	t.Parallel()
	seen := runForms(t, []mediatest.Screen{
		signInForm(strings.Repeat("•", len(formPassword)), ""),
		signInForm(formPassword, ""),
		consolePage,
	}, []string{"type", "show", "console"}, "show")
	if privacytest.Reads(seen, privacytest.Value{Text: formPassword}) {
		t.Errorf("OCR reads the password on the stored screenshot:\n%s", seen)
	}
}

// The same form, shown as the first of two pictures (read whole), is
// covered: the case the test above is held to.
func TestAShownPasswordReadWholeIsCovered(t *testing.T) {
	t.Parallel()
	seen := runForms(t, []mediatest.Screen{signInForm(formPassword, ""), consolePage}, []string{"show", "console"}, "show")
	if privacytest.Reads(seen, privacytest.Value{Text: formPassword}) {
		t.Errorf("OCR reads the password on the stored screenshot:\n%s", seen)
	}
}

// coversOnScreen runs a recording of one screen and a plain console page
// (3 s each, 720p) through the pipeline with the privacy pass on. The model
// marks nothing; with said, it is careless and repeats those values in its
// first step's text (privacytest.ModelAnswer). Having checked that OCR
// reads secret on the recording, it checks that OCR does not read it on
// the stored screenshot of the first step (which still shows still), and
// that no text of the stored SOP or its Markdown holds it.
func coversOnScreen(t *testing.T, screen mediatest.Screen, secret, still string, said ...privacytest.Value) {
	t.Helper()
	dir := t.TempDir()
	video := mediatest.MakeScreens(t, dir, "screen.mp4", mediatest.Screens{Width: 1280, Height: 720, Seconds: 3,
		Screens: []mediatest.Screen{screen, consolePage}})
	steps := []privacytest.Screen{{Name: "shown", Title: "Step shown", Second: 1, Width: 1280, Height: 720, Values: said},
		{Name: "console", Title: "Step console", Second: 4}}
	raw := mediatest.Frame(t, video, 1, filepath.Join(dir, "raw.jpg"))
	if r := privacytest.Read(t, raw); !privacytest.Reads(r, privacytest.Value{Text: secret}) {
		t.Fatalf("OCR does not read the secret on the recording (the test proves nothing):\n%s", r)
	}
	fake, id, clock := runPrivately(t, dir, video, steps)
	obj, ok := fake.Object("videos/" + id.FramePath("shown"))
	if !ok {
		t.Fatalf("no screenshot; frames %v", clock.md["frames"])
	}
	seen := privacytest.Read(t, obj.File)
	if !strings.Contains(seen, still) {
		t.Fatalf("OCR does not read %q on the stored screenshot:\n%s", still, seen)
	}
	if privacytest.Reads(seen, privacytest.Value{Text: secret}) {
		t.Errorf("OCR reads %q on the stored screenshot:\n%s", secret, seen)
	}
	if strings.Contains(storedText(t, fake, id), secret) {
		t.Errorf("the stored SOP or its Markdown holds %q", secret)
	}
}

// A login request's body in a browser's devtools (Payload tab) or an API
// client: JSON, the key quoted, then ":".
func TestAPasswordInARequestsJSONIsCovered(t *testing.T) {
	t.Parallel()
	const pw = "Vq7#kP2m!xL9wR4z"
	screen := mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Mono, Lines: []mediatest.Line{
		{Text: "Network   Headers   Payload   Preview   Response", X: 40, Y: 30, Size: 20, Font: mediatest.Sans},
		{Text: "Request Payload      view source", X: 40, Y: 90, Size: 20, Font: mediatest.Sans},
		{Text: `{"email": "ops@acme-corp.com", "password": "` + pw + `", "remember": true}`, X: 40, Y: 140, Size: 20},
	}}
	coversOnScreen(t, screen, pw, "Request Payload", privacytest.Value{Kind: "password", Text: pw, Mark: "password"})
}

// aws configure in a dark terminal: the secret access key after its
// prompt's "[None]:". A careless model repeats it.
func TestAnAWSSecretKeyAtItsPromptIsCovered(t *testing.T) {
	t.Parallel()
	const secret = "kLDr79nDVJd/uN7B3MAtQhDp8kF3ONfqnZlVAvcx"
	screen := terminalScreen("ops@build-01:~$ aws configure", "AWS Access Key ID [None]: AKIA5ALWAMOYMVYEWCLE",
		"AWS Secret Access Key [None]: "+secret, "Default region name [None]: eu-west-1", "Default output format [None]: json")
	coversOnScreen(t, screen, secret, "aws configure", privacytest.Value{Kind: "aws_secret", Text: secret, Mark: "secret"})
}

// A .env file whose password begins with "$" (taken for a placeholder). A
// careless model repeats it.
func TestAPasswordBeginningWithADollarIsCovered(t *testing.T) {
	t.Parallel()
	const pw = "$uperS3cret!2024"
	screen := terminalScreen("ops@build-01:~/app$ cat .env", "DB_HOST=db.internal", "DB_USER=app", `DB_PASSWORD="`+pw+`"`)
	coversOnScreen(t, screen, pw, "cat .env", privacytest.Value{Kind: "password", Text: pw, Mark: "password"})
}

// A change-password form, its new password shown beside the field's Hide
// toggle: the label is two words ("New password").
func TestANewPasswordUnderItsTwoWordLabelIsCovered(t *testing.T) {
	t.Parallel()
	screen := mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Sans,
		Boxes: []mediatest.Box{{X: 420, Y: 214, W: 460, H: 52, Thick: 2}, {X: 420, Y: 326, W: 460, H: 52, Thick: 2}},
		Lines: []mediatest.Line{
			{Text: "Change your password", X: 430, Y: 60, Size: 32},
			{Text: "Current password", X: 430, Y: 180, Size: 20},
			{Text: "••••••••••••", X: 436, Y: 228, Size: 22},
			{Text: "New password", X: 430, Y: 292, Size: 20},
			{Text: formPassword, X: 436, Y: 340, Size: 22},
			{Text: "Hide", X: 810, Y: 342, Size: 20},
			{Text: "Use 12 characters or more.", X: 430, Y: 404, Size: 20},
		}}
	coversOnScreen(t, screen, formPassword, "Change your password", privacytest.Value{Kind: "password", Text: formPassword, Mark: "password"})
}

// Maven's settings.xml in a light editor: the password is an element's
// text (a fresh-eye attack's finding). A careless model repeats it.
func TestAPasswordInAnXMLElementIsCovered(t *testing.T) {
	t.Parallel()
	const pw = "Xk9mP2vQ7wLz"
	screen := mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Mono}
	for i, line := range []string{"settings.xml", "<servers>", "  <server>", "    <id>nexus-releases</id>",
		"    <username>deploy</username>", "    <password>" + pw + "</password>", "  </server>", "</servers>"} {
		screen.Lines = append(screen.Lines, mediatest.Line{Text: line, X: 40, Y: 40 + 40*i, Size: 24})
	}
	coversOnScreen(t, screen, pw, "<username>deploy</username>", privacytest.Value{Kind: "password", Text: pw, Mark: "password"})
}

// az webapp config appsettings list, as JSON in a dark terminal: the
// secret's name is one member's value, the secret the next member's (a
// fresh-eye attack's finding).
func TestASecretInAJSONNameValuePairIsCovered(t *testing.T) {
	t.Parallel()
	const secret = "Xk9mP2vQ7wLzAbCd"
	screen := terminalScreen("$ az webapp config appsettings list -g rg-prod -n acme-api", "[", "  {",
		`    "name": "API_SECRET",`, `    "slotSetting": false,`, `    "value": "`+secret+`"`, "  }", "]")
	coversOnScreen(t, screen, secret, "appsettings", privacytest.Value{Kind: "token", Text: secret, Mark: "secret"})
}

// Terraform's outputs as a table in a dark terminal: a password in its
// row, between bars (a fresh-eye attack's finding). The SSH and git
// remotes above it are no e-mail addresses, and stay readable.
func TestAPasswordInATablesRowIsCoveredAndRemotesAreNot(t *testing.T) {
	t.Parallel()
	const pw = "Xk9mP2vQ7wLz"
	screen := terminalScreen("$ git clone git@github.com:acme/payments-api.git", "$ ssh deploy@bastion.acme.io",
		"deploy@bastion:~$ terraform output", "db_host | db.internal", "db_password | "+pw, "db_port | 5432")
	coversOnScreen(t, screen, pw, "git@github.com:acme/payments-api.git", privacytest.Value{Kind: "password", Text: pw, Mark: "password"})
}

// runPrivately runs video through a pipeline with the privacy pass on, the
// model answering with steps, in dir; it returns the stand-in storage, the
// job and what the run reported.
func runPrivately(t *testing.T, dir, video string, steps []privacytest.Screen) (*supabasetest.Server, jobs.ID, *stageClock) {
	t.Helper()
	p, fake, ai := privatePipeline(t)
	id := jobs.ID("00000000-0000-4000-8000-0000000f0001")
	fake.PutFile("videos/"+id.RawPath(), video, "video/mp4")
	ai.Answer(geminitest.JSON(privacytest.ModelAnswer(steps)))
	clock := &stageClock{md: map[string]any{}}
	if err := p.Run(context.Background(), queue.Job{Job: jobs.Job{ID: id, Metadata: map[string]any{}}, TempDir: filepath.Join(dir, "work"), Token: "t"}, clock); err != nil {
		t.Fatal(err)
	}
	return fake, id, clock
}

// terminalScreen is a dark terminal showing lines, one under another.
func terminalScreen(lines ...string) mediatest.Screen {
	screen := mediatest.Screen{Theme: mediatest.Dark, Font: mediatest.Mono}
	for i, line := range lines {
		screen.Lines = append(screen.Lines, mediatest.Line{Text: line, X: 24, Y: 24 + 33*i, Size: 22})
	}
	return screen
}

// The browser devtools' Application tab, Cookies: one row per cookie, its
// value in the Value column. The session cookie is the one that lets
// anyone who types it in be the signed-in user; csrftoken (a "token" name)
// is covered, sessionid is not.
func TestASessionCookieInDevtoolsCookiesTableIsCovered(t *testing.T) {
	t.Parallel()
	const sid = "q8xz2lmn4vb7k3j9h5g1f6d0sa7c2e1b"
	screen := mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Mono, Lines: []mediatest.Line{
		{Text: "Elements   Console   Sources   Network   Application", X: 40, Y: 30, Size: 20, Font: mediatest.Sans},
		{Text: "Name        Value                               Domain      Path", X: 40, Y: 100, Size: 18},
		{Text: "csrftoken   Xk2mP9qL2vR8tY5wX1nB4cF7aZ0eU5iO    .acme.io    /", X: 40, Y: 140, Size: 18},
		{Text: "sessionid   " + sid + "    .acme.io    /", X: 40, Y: 180, Size: 18},
	}}
	coversOnScreen(t, screen, sid, "Application", privacytest.Value{Kind: "token", Text: sid, Mark: "secret"})
}

// redis-cli's -a: the password on the command line, as mysql's -p is.
func TestRedisCliPasswordIsCovered(t *testing.T) {
	t.Parallel()
	const pw = "Hunter2Sup3r"
	screen := terminalScreen("ops@build-01:~$ redis-cli -h cache.internal -a "+pw+" ping", "PONG")
	coversOnScreen(t, screen, pw, "PONG", privacytest.Value{Kind: "password", Text: pw, Mark: "password"})
}

// An ordinary Azure CLI command, no secret in it: on the screenshot OCR's
// spaces beside "-" are dropped (despaced), the command becomes one long
// "token" of high entropy, its words are destroyed, and the value learned
// from the screen replaces the command in the SOP's text.
func TestAnAzRoleAssignmentIsNotASecret(t *testing.T) {
	t.Parallel()
	const cmd = "az role assignment create --assignee 0f8fad5b-d9cb-469f-a165-70867728950e --role Contributor --scope /subscriptions/72f988bf-86f1-41af-91ab-2d7cd011db47"
	screen := terminalScreen("ops@build-01:~$ az login --identity", "ops@build-01:~$ "+cmd[:78], cmd[78:])
	dir := t.TempDir()
	video := mediatest.MakeScreens(t, dir, "screen.mp4", mediatest.Screens{Width: 1280, Height: 720, Seconds: 3,
		Screens: []mediatest.Screen{screen, consolePage}})
	steps := []privacytest.Screen{{Name: "shown", Title: "Step shown", Second: 1, Width: 1280, Height: 720,
		Values: []privacytest.Value{{Kind: "db_url", Shown: "ops@build-01:~/runops$ " + cmd}}},
		{Name: "console", Title: "Step console", Second: 4}}
	raw := privacytest.Read(t, mediatest.Frame(t, video, 1, filepath.Join(dir, "raw.jpg")))
	if !strings.Contains(raw, "Contributor") {
		t.Fatalf("OCR does not read the command on the recording:\n%s", raw)
	}
	fake, id, _ := runPrivately(t, dir, video, steps)
	obj, _ := fake.Object("videos/" + id.FramePath("shown"))
	seen := privacytest.Read(t, obj.File)
	if !strings.Contains(seen, "Contributor") || !strings.Contains(seen, "--assignee") {
		t.Errorf("the command is covered on the stored screenshot:\n%s", seen)
	}
	if text := storedText(t, fake, id); !strings.Contains(text, "--role Contributor") {
		i := strings.Index(text, "run az")
		t.Errorf("the SOP's text lost the command: %q", text[max(0, i):min(len(text), i+120)])
	}
}

// Recovery codes after enabling two-factor sign-in, a sentence between
// them and their heading, as GitHub shows them (a fresh-eye attack's
// finding: the rule wanted them on the next line). A careless model repeats
// one.
func TestRecoveryCodesBelowASentenceAreCovered(t *testing.T) {
	t.Parallel()
	screen := mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Sans, Lines: []mediatest.Line{
		{Text: "Save your recovery codes", X: 40, Y: 40, Size: 30},
		{Text: "Keep these somewhere safe. Each code can be used once.", X: 40, Y: 100, Size: 20},
		{Text: "8f2k9-d3m4x    7h1q2-w5e6r", X: 40, Y: 160, Size: 24, Font: mediatest.Mono},
		{Text: "p0z8c-v4b7n    k3j5h-g9f2d", X: 40, Y: 200, Size: 24, Font: mediatest.Mono},
	}}
	coversOnScreen(t, screen, "8f2k9-d3m4x", "Save your recovery codes", secretValue("8f2k9-d3m4x"))
}

// The same codes straight under their heading: each is a value of its
// own, so the one code a careless model repeats is replaced in the text (a
// fresh-eye attack's finding: the block was one value).
func TestRecoveryCodesUnderTheirHeadingAreEachCovered(t *testing.T) {
	t.Parallel()
	screen := mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Sans, Lines: []mediatest.Line{
		{Text: "Save your recovery codes", X: 40, Y: 40, Size: 30},
		{Text: "8f2k9-d3m4x    7h1q2-w5e6r", X: 40, Y: 100, Size: 24, Font: mediatest.Mono},
		{Text: "p0z8c-v4b7n    k3j5h-g9f2d", X: 40, Y: 140, Size: 24, Font: mediatest.Mono},
		{Text: "Keep these somewhere safe. Each code can be used once.", X: 40, Y: 200, Size: 20},
	}}
	coversOnScreen(t, screen, "8f2k9-d3m4x", "Save your recovery codes", secretValue("8f2k9-d3m4x"))
}

// An OAuth implicit flow's callback in the address bar: the token in the
// URL's fragment, then its next parameter (a fresh-eye attack's finding:
// the value ran on into "&token_type=Bearer", and the token the model
// repeats was not found in the text).
func TestATokenInACallbacksFragmentIsCovered(t *testing.T) {
	t.Parallel()
	const tok = "ya29.a0AfH6SMBx7Kq2mP9vL4wR8tY1nB5cF3aZ0eU"
	screen := mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Sans, Lines: []mediatest.Line{
		{Text: "app.acme.io/callback#access_token=" + tok + "&token_type=Bearer", X: 120, Y: 14, Size: 18},
		{Text: "Signed in", X: 400, Y: 120, Size: 30},
	}}
	coversOnScreen(t, screen, tok, "Signed in", secretValue(tok))
}

// The AWS console's new access key, shown once, in a table: OCR reads an
// extra letter into the key id (a fresh-eye attack's finding: the secret
// after it was no longer found, and stayed in the text).
func TestTheAWSConsolesNewSecretKeyIsCovered(t *testing.T) {
	t.Parallel()
	const secret = "h7Qz3kLmN9pR2sT5vW8xY1bC4dF6gJ0aE+uI/oPq"
	screen := mediatest.Screen{Theme: mediatest.Light, Font: mediatest.Sans, Lines: []mediatest.Line{
		{Text: "Retrieve access keys", X: 40, Y: 40, Size: 30},
		{Text: "This is the only time the secret access key can be viewed or downloaded.", X: 40, Y: 100, Size: 18},
		{Text: "Access key", X: 40, Y: 160, Size: 18}, {Text: "Secret access key", X: 380, Y: 160, Size: 18},
		{Text: "AKIA5ALWAMOYQ3HZ7RNE", X: 40, Y: 200, Size: 18}, {Text: secret, X: 380, Y: 200, Size: 18},
		{Text: "Hide", X: 900, Y: 200, Size: 18},
		{Text: "Download .csv file", X: 40, Y: 280, Size: 20},
	}}
	coversOnScreen(t, screen, secret, "Retrieve access keys", privacytest.Value{Kind: "aws_secret", Text: secret, Mark: "secret"})
}

// secretValue is a secret a careless model repeats in its text.
func secretValue(text string) privacytest.Value {
	return privacytest.Value{Kind: "token", Text: text, Mark: "secret"}
}
