package geminitest

import (
	"encoding/json"
	"strings"
	"testing"
)

// The stand-in refuses to let a script answer outside the request's schema,
// as structured output never does; cut-off and non-JSON text pass.
func TestOffSchema(t *testing.T) {
	schema := json.RawMessage(`{"type":"object","required":["triggers"],"properties":{"triggers":{"type":"array","items":
		{"type":"object","required":["type","config"],"properties":{"type":{"type":"string","enum":["cron","manual"]},"config":{"type":"string"}}}}}}`)
	for text, want := range map[string]string{
		`{"triggers":[{"type":"cron","config":"0 9 * * *"}]}`: "",
		`{"triggers":[{"type":"email","config":""}]}`:         `$.triggers[0].type: "email" is not one of`,
		`{"triggers":[{"type":"manual","config":{}}]}`:        `$.triggers[0].config: want a string`,
		`{"triggers":[{"type":"manual"}]}`:                    `$.triggers[0]: missing required "config"`,
		`{"triggers":[],"extra":1}`:                           `$: "extra" is not in the schema`,
		`{}`:                                                  `$: missing required "triggers"`,
		`this is not json`:                                    "",
	} {
		got := strings.Join(offSchema(JSON(text), schema), "; ")
		if (want == "") != (got == "") || !strings.Contains(got, want) {
			t.Errorf("%s: %q, want %q", text, got, want)
		}
	}
	if p := offSchema(Text(`{"triggers":[{"type":"email"}]}`, "MAX_TOKENS"), schema); p != nil {
		t.Errorf("a cut-off answer is checked: %v", p)
	}
}
