package sop

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

const jobID = "3f2504e0-4f89-41d3-9a0c-0305e82c3301"

func sample(t testing.TB) *Document {
	t.Helper()
	b, err := os.ReadFile("../../docs/sample-sop.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestSampleIsValid(t *testing.T) {
	d := sample(t)
	Repair(d, jobID)
	if err := Validate(d); err != nil {
		t.Fatal(err)
	}
	if d.Meta.ID != jobID {
		t.Fatal(d.Meta.ID)
	}
}

// A document is written only while the API can read it back: one byte
// more is a *TooLarge that says its size, which Size also says.
func TestMarshalRefusesWhatCannotBeReadBack(t *testing.T) {
	d := sample(t)
	b, err := Marshal(d)
	if err != nil {
		t.Fatal(err)
	}
	d.Meta.Purpose += strings.Repeat("p", MaxDocumentBytes-len(b))
	if b, err := Marshal(d); err != nil || len(b) != MaxDocumentBytes || Size(d) != MaxDocumentBytes {
		t.Fatalf("a document of the limit: %d bytes, %v, Size %d", len(b), err, Size(d))
	}
	d.Meta.Purpose += "p"
	b, err = Marshal(d)
	var big *TooLarge
	if !errors.As(err, &big) || big.Size != MaxDocumentBytes+1 || b != nil || Size(d) != MaxDocumentBytes+1 {
		t.Fatalf("a byte over the limit: %d bytes, %v, Size %d", len(b), err, Size(d))
	}
}

// One case per rule: a mutation of the sample and the path the validator must blame.
func TestEveryRule(t *testing.T) {
	node := func(d *Document, id string) *Node {
		for i := range d.Public.Nodes {
			if d.Public.Nodes[i].ID == id {
				return &d.Public.Nodes[i]
			}
		}
		t.Fatalf("no node %s", id)
		return nil
	}
	cases := map[string]struct {
		mutate func(d *Document)
		blame  string
	}{
		"meta missing":               {func(d *Document) { d.Meta = nil }, "meta"},
		"meta.title missing":         {func(d *Document) { d.Meta.Title = " " }, "meta.title"},
		"unknown node type":          {func(d *Document) { node(d, "open").Type = "step" }, "public.nodes[0].type"},
		"duplicate id":               {func(d *Document) { node(d, "reply").ID = "open" }, "public.nodes[5].id"},
		"empty id":                   {func(d *Document) { node(d, "reply").ID = "" }, "public.nodes[5].id"},
		"missing label":              {func(d *Document) { node(d, "reply").Label = "" }, "public.nodes[5].label"},
		"edge to missing node":       {func(d *Document) { d.Public.Edges[0].Target = "ghost" }, "public.edges[0].target"},
		"edge from missing node":     {func(d *Document) { d.Public.Edges[0].Source = "ghost" }, "public.edges[0].source"},
		"bad condition":              {func(d *Document) { d.Public.Edges[0].Condition = "maybe" }, "public.edges[0].condition"},
		"two start edges":            {func(d *Document) { d.Public.Edges[6].Condition = "start" }, "public.edges"},
		"missing child":              {func(d *Document) { node(d, "each").Children = append(node(d, "each").Children, "ghost") }, "public.nodes[2].children"},
		"missing parent":             {func(d *Document) { node(d, "note").ParentID = "ghost" }, "public.nodes[4].parentId"},
		"parent does not list":       {func(d *Document) { node(d, "each").Children = []string{"refund"} }, "public.nodes[4].parentId"},
		"child names other parent":   {func(d *Document) { node(d, "note").ParentID = "reply" }, "public.nodes[2].children"},
		"cycle in children":          {func(d *Document) { node(d, "refund").Children = []string{"each"}; node(d, "each").ParentID = "refund" }, "public.nodes[2]"},
		"parent edge to child":       {func(d *Document) { d.Public.Edges[3].Source = "each" }, "public.edges[3]"},
		"child edge to parent":       {func(d *Document) { d.Public.Edges[4].Target = "each" }, "public.edges[4]"},
		"loop in loop":               {func(d *Document) { node(d, "refund").Type = "loop" }, "public.nodes[3]"},
		"decision without no":        {func(d *Document) { d.Public.Edges[2].Condition = "next" }, "public.nodes[1]"},
		"loop without all_processed": {func(d *Document) { d.Public.Edges[5].Condition = "next" }, "public.nodes[2]"},
		"bad importance":             {func(d *Document) { d.Public.ClarificationRequests[0].Importance = "urgent" }, "public.clarification_requests[0].importance"},
		"bad method type":            {func(d *Document) { d.Private.Skills[0].MethodType = "robot" }, "private.skills[0].method_type"},
		"step names missing node":    {func(d *Document) { d.Private.Steps[0].NodeID = "ghost" }, "private.steps[0].node_id"},
		"public missing":             {func(d *Document) { d.Public = nil }, "public"},
		"nodes absent":               {func(d *Document) { d.Public.Nodes = nil }, "public.nodes"},
		"triggers absent":            {func(d *Document) { d.Public.Triggers = nil }, "public.triggers"},
		"edges absent":               {func(d *Document) { d.Public.Edges = nil }, "public.edges"},
		"variables absent":           {func(d *Document) { d.Public.Variables = nil }, "public.variables"},
		"private absent":             {func(d *Document) { d.Private = nil }, "private"},
		"bad version":                {func(d *Document) { d.Meta.Version = "v1" }, "meta.version"},
		"children absent":            {func(d *Document) { node(d, "open").Children = nil }, "public.nodes[0].children"},
		"id_path absent":             {func(d *Document) { node(d, "open").IDPath = "" }, "public.nodes[0].id_path"},
		"unknown trigger type":       {func(d *Document) { d.Public.Triggers[1].Type = "schedule" }, "public.triggers[1].type"},
		"owner absent":               {func(d *Document) { d.Meta.Owner = nil }, "meta.owner"},
		"timestamp not HH:MM:SS":     {func(d *Document) { node(d, "open").Timestamp = "0:05" }, "public.nodes[0].timestamp"},
		"timestamp minutes past 59":  {func(d *Document) { node(d, "open").Timestamp = "00:61:00" }, "public.nodes[0].timestamp"},
		"unknown evidence":           {func(d *Document) { node(d, "open").Evidence = "seen" }, "public.nodes[0].evidence"},
		"screenshot of another node": {func(d *Document) { node(d, "open").Screenshot = node(d, "check").Screenshot }, "public.nodes[0].screenshot"},
		"screenshot elsewhere":       {func(d *Document) { node(d, "open").Screenshot = "raw/" + d.Meta.ID + ".mp4" }, "public.nodes[0].screenshot"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			d := sample(t)
			c.mutate(d)
			err := Validate(d)
			inv, ok := err.(*Invalid)
			if !ok {
				t.Fatalf("accepted (%v)", err)
			}
			for _, p := range inv.Problems {
				if p.Path == c.blame {
					return
				}
			}
			t.Fatalf("problems %v do not blame %s", inv.Problems, c.blame)
		})
	}
}

func TestTypeErrorsAreProblems(t *testing.T) {
	for doc, blame := range map[string]string{
		`{"meta":{"title":"x"},"public":{"nodes":[{"id":"a","id_path":2}]}}`:    "public.nodes.id_path",
		`{"meta":{"title":"x"},"public":{"nodes":{}}}`:                          "public.nodes",
		`{"meta":{"title":"x"},"public":{"edges":"none"}}`:                      "public.edges",
		`{"meta":{"title":"x"},"public":{"variables":{"a":{"nested":true}}}}`:   "public.variables",
		`{"meta":{"title":"x"},"public":{"nodes":[{"id":"a","children":"b"}]}}`: "public.nodes.children",
		`{"meta":"title"}`:                   "meta",
		`not json`:                           "$",
		`{"meta":{"title":"x"}} {"again":1}`: "$",
	} {
		_, err := Parse([]byte(doc))
		inv, ok := err.(*Invalid)
		if !ok || len(inv.Problems) != 1 || inv.Problems[0].Path != blame {
			t.Errorf("%s: %v; want a problem at %s", doc, err, blame)
		}
	}
}

func TestRepair(t *testing.T) {
	d, err := Parse([]byte(`{"meta":{"title":"T","version":"latest"},"public":{
		"nodes":[{"id":"l","type":"loop","label":"L","children":["a"]},{"id":"a","type":"task","label":"A"},
		         {"id":"b","type":"task","label":"B","parentId":"l"},{"id":"c","type":"end","label":"C"}],
		"edges":[{"source":"l","target":"c","condition":"all_processed"}]}}`))
	if err != nil {
		t.Fatal(err)
	}
	Repair(d, jobID)
	if err := Validate(d); err != nil {
		t.Fatal(err)
	}
	a, b, l := d.Public.Nodes[1], d.Public.Nodes[2], d.Public.Nodes[0]
	if d.Meta.ID != jobID || d.Meta.Version != "1.0.0" || a.ParentID != "l" || len(l.Children) != 2 || l.Children[1] != "b" ||
		l.IDPath != "1" || a.IDPath != "1.1" || b.IDPath != "1.2" || d.Public.Nodes[3].IDPath != "2" {
		t.Fatalf("%+v", d.Public.Nodes)
	}
	out, _ := Marshal(d)
	for _, want := range []string{`"triggers": []`, `"clarification_requests": []`, `"variables": {}`, `"artifacts": []`, `"owner": []`} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %s in %s", want, out)
		}
	}

	// A conflict is not repaired: a child claimed by two parents.
	d, _ = Parse([]byte(`{"meta":{"title":"T"},"public":{"nodes":[
		{"id":"p","type":"loop","label":"P","children":["x"]},{"id":"q","type":"loop","label":"Q","children":["x"]},
		{"id":"x","type":"task","label":"X"}]}}`))
	Repair(d, jobID)
	if Validate(d) == nil || d.Public.Nodes[2].ParentID != "" {
		t.Fatalf("conflict repaired: %+v", d.Public.Nodes[2])
	}
}

func FuzzValidate(f *testing.F) {
	b, _ := os.ReadFile("../../docs/sample-sop.json")
	f.Add(b)
	f.Add([]byte(`{"meta":{"title":"x"},"public":{"nodes":[{"id":"a","parentId":"a","children":["a"]}]}}`))
	f.Add([]byte(`{"public":{"nodes":[{"id":"a","parentId":"b"},{"id":"b","parentId":"a"}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := Parse(data)
		if err != nil {
			return
		}
		Repair(d, jobID)
		if Validate(d) != nil {
			return
		}
		out, err := Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("accepted document does not parse back: %v", err)
		}
		if err := Validate(again); err != nil {
			t.Fatalf("accepted document fails after a round trip: %v", err)
		}
	})
}

// What only a fresh answer is held to: evidence, a moment for a shown step,
// and no moment past the end of the recording.
func TestCheckRecorded(t *testing.T) {
	d := sample(t)
	Repair(d, jobID)
	if p := CheckRecorded(d, 3*time.Minute); len(p) != 0 {
		t.Fatalf("the sample, 3 minutes: %v", p)
	}
	// 00:02:50 is the last moment the sample shows; a video of 2:50 ends there.
	if p := CheckRecorded(d, 170*time.Second); len(p) != 1 || p[0].Path != "public.nodes[7].timestamp" ||
		!strings.Contains(p[0].Message, "00:02:50 is past the end of the video, which is 170.0 seconds long") {
		t.Fatalf("a video of 2:50: %v", p)
	}
	// A context citing a moment past the end is sent back too.
	d.Public.Nodes[0].Context = "00:09:59 the agent opens the ticket"
	if p := CheckRecorded(d, 3*time.Minute); len(p) != 1 || p[0].Path != "public.nodes[0].context" ||
		!strings.Contains(p[0].Message, "cites 00:09:59, past the end of the video") {
		t.Fatalf("a context past the end: %v", p)
	}
	d.Public.Nodes[0].Timestamp = ""
	d.Public.Nodes[1].Evidence = ""
	p := CheckRecorded(d, 0) // an unknown duration checks no range
	if len(p) != 2 || p[0].Path != "public.nodes[0].timestamp" || p[1].Path != "public.nodes[1].evidence" {
		t.Fatalf("%v", p)
	}
	// A person's document is held to the format only.
	if err := Validate(d); err != nil {
		t.Fatal(err)
	}
}

func TestParseTimestamp(t *testing.T) {
	for s, want := range map[string]time.Duration{"00:00:00": 0, "00:01:23": 83 * time.Second, "01:00:05": time.Hour + 5*time.Second} {
		if got, ok := ParseTimestamp(s); !ok || got != want {
			t.Errorf("%s: %v %v", s, got, ok)
		}
	}
	for _, bad := range []string{"", "1:23", "00:1:23", "00:00:60", "00:60:00", "aa:bb:cc", "00:00:05.5", "-0:00:05"} {
		if _, ok := ParseTimestamp(bad); ok {
			t.Errorf("%q parsed", bad)
		}
	}
}

// Labels and other text read as written in Markdown: nothing in them makes
// links, HTML, emphasis or headings.
func TestMarkdownTextReadsAsWritten(t *testing.T) {
	d := sample(t)
	Repair(d, jobID)
	d.Meta.Title = "Pay <script>alert(1)</script> *now*"
	d.Public.Nodes[0].Label = "Click [here](http://evil.test) & _save_ # done"
	d.Public.Nodes[0].Intent = "- not a list"
	d.Public.Variables = map[string]string{"a`b": "line one\nline two"}
	md := string(Markdown(d, nil))
	for _, want := range []string{
		"# Pay \\<script\\>alert(1)\\</script\\> \\*now\\*\n",
		"### 1 Click \\[here\\](http://evil.test) \\& \\_save\\_ \\# done\n",
		"\n\\- not a list\n",
		"- ``a`b``: line one line two\n",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("lacks %q:\n%s", want, md)
		}
	}
	if strings.Contains(md, "![") {
		t.Errorf("no image func, yet images:\n%s", md)
	}
}

// flowDoc is a document of nodes and edges, repaired as a model's answer is.
func flowDoc(nodes []Node, edges []Edge) *Document {
	d := &Document{Meta: &Meta{Title: "T", Version: "1.0.0"}, Public: &Public{Nodes: nodes, Edges: edges}}
	Repair(d, jobID)
	RepairFlow(d)
	return d
}

// task is a task node named id.
func task(id string) Node { return Node{ID: id, Type: "task", Label: id} }

// Deleting the step on a decision's yes branch, where the no branch goes to
// the step after it: answered only when the yes edge is listed first. The
// model (and the sample) list a decision's edges in either order; with no
// first, the yes edge joined around the step "repeats" the no edge and is
// dropped, and the edit is a 409.
func TestDeletingABranchStepKeepsBothBranchesWhateverTheirOrder(t *testing.T) {
	dec := Node{ID: "D", Type: "decision", Label: "Over the limit?"}
	d := flowDoc([]Node{task("T1"), dec, task("A"), task("B")}, []Edge{
		{Source: "T1", Target: "D", Condition: "start"}, {Source: "D", Target: "B", Condition: "no"},
		{Source: "D", Target: "A", Condition: "yes"}, {Source: "A", Target: "B"}})
	if err := Validate(d); err != nil {
		t.Fatal(err)
	}
	Delete(d, "A")
	if err := Validate(d); err != nil {
		t.Errorf("%v\nedges %v", err, d.Public.Edges)
	}
}

// A delete makes no second edge between two steps: a skip edge listed
// after the one it joins is not repeated (it once checked only the edges
// before it).
func TestADeleteMakesNoSecondEdgeBetweenTwoSteps(t *testing.T) {
	d := flowDoc([]Node{task("T1"), task("A"), task("B")}, []Edge{
		{Source: "T1", Target: "A", Condition: "start"}, {Source: "A", Target: "B"}, {Source: "T1", Target: "B"}})
	Delete(d, "A")
	if n := edgesBetween(d, "T1", "B"); n != 1 {
		t.Errorf("%d edges T1→B: %v", n, d.Public.Edges)
	}
}

// loopBack marks no forward step as a loop's next: with the loop's
// children listed in another order than its flow, the forward step stays a
// plain edge (it once became a second way back).
func TestRepairMarksNoForwardEdgeAsALoopsNext(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each invoice", Children: []string{"check", "pay"}}
	check, pay := task("check"), task("pay")
	check.ParentID, pay.ParentID = "L", "L"
	d := flowDoc([]Node{task("open"), loop, pay, check, task("done")}, []Edge{
		{Source: "open", Target: "L", Condition: "start"},
		{Source: "check", Target: "pay"}, {Source: "pay", Target: "check", Condition: "next"},
		{Source: "L", Target: "done", Condition: "all_processed"}})
	d.Public.Nodes[1].Children = []string{"pay", "check"} // the model's order
	RepairFlow(d)
	if !slices.Contains(d.Public.Edges, Edge{Source: "check", Target: "pay"}) {
		t.Errorf("the step check → pay became %v", d.Public.Edges)
	}
}

// A loop whose last step is a decision going back by yes: no second edge
// back, next, is added beside the model's yes (one once was).
func TestRepairAddsNoSecondEdgeBack(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each ticket", Children: []string{"read", "more"}}
	read := task("read")
	read.ParentID = "L"
	more := Node{ID: "more", Type: "decision", Label: "More tickets?", ParentID: "L"}
	d := flowDoc([]Node{task("open"), loop, read, more, task("done"), task("report")}, []Edge{
		{Source: "open", Target: "L", Condition: "start"}, {Source: "read", Target: "more"},
		{Source: "more", Target: "read", Condition: "yes"}, {Source: "more", Target: "report", Condition: "no"},
		{Source: "L", Target: "done", Condition: "all_processed"}})
	if n := edgesBetween(d, "more", "read"); n != 1 {
		t.Errorf("%d edges more → read: %v", n, d.Public.Edges)
	}
}

// An SOP the previous version stored (a loop whose model gave no next edge,
// a start edge left unmarked: both passed Validate then). The worker
// recorded the ETag of these bytes; GET answers If-None-Match with that
// recorded tag without reading storage, and compares If-Match with the tag
// of what Served returns now.
const storedBefore = `{"meta":{"id":"3f2504e0-4f89-41d3-9a0c-0305e82c3301","title":"Refunds","version":"1.0.0","goal":"","purpose":"","owner":[]},"public":{"triggers":[],"nodes":[{"id":"open","type":"task","label":"Open the queue","intent":"","context":"","children":[],"id_path":"1"},{"id":"each","type":"loop","label":"Each refund","intent":"","context":"","children":["refund","note"],"id_path":"2"},{"id":"refund","type":"task","label":"Refund","intent":"","context":"","children":[],"parentId":"each","id_path":"2.1"},{"id":"note","type":"task","label":"Note it","intent":"","context":"","children":[],"parentId":"each","id_path":"2.2"},{"id":"done","type":"task","label":"Close","intent":"","context":"","children":[],"id_path":"3"}],"edges":[{"source":"open","target":"each"},{"source":"refund","target":"note"},{"source":"each","target":"done","condition":"all_processed"}],"variables":{},"clarification_requests":[]},"private":{"skills":[],"steps":[],"artifacts":[]}}`

func TestAnSOPStoredBeforeIsServedAsStored(t *testing.T) {
	var stored bytes.Buffer
	if err := json.Indent(&stored, []byte(storedBefore), "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := Validate(mustParse(t, stored.Bytes())); err != nil {
		t.Fatal(err)
	}
	served, _, err := Served(stored.Bytes(), jobID)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(served, stored.Bytes()) {
		t.Errorf("an unchanged SOP is served changed, under a new ETag:\n%s", served)
	}
}

func mustParse(t *testing.T, b []byte) *Document {
	d, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// CheckRecorded now rejects a context that "cites" HH:MM:SS past the end of
// the video. A context quotes times of day too: a log line's, a schedule's.
// Each such answer is sent back to the model; one that keeps them fails the job.
func TestATimeOfDayInAContextIsNoMomentOfTheVideo(t *testing.T) {
	d := &Document{Meta: &Meta{Title: "T", Version: "1.0.0"}, Public: &Public{Nodes: []Node{{
		ID: "logs", Type: "task", Label: "Find the failed run", Evidence: EvidenceShown, Timestamp: "00:01:05",
		Context: "00:01:05 The log shows the export failing at 14:32:10 with a timeout; it runs nightly at 02:00:00."}}}}
	Repair(d, jobID)
	if got := CheckRecorded(d, 3*time.Minute); len(got) != 0 {
		t.Errorf("a correct answer is asked again: %v", got)
	}
}

// edgesBetween counts d's edges from source to target.
func edgesBetween(d *Document, source, target string) int {
	n := 0
	for _, e := range d.Public.Edges {
		if e.Source == source && e.Target == target {
			n++
		}
	}
	return n
}

// A model's slips in the flow that repairEdges mends, rather than store
// them or ask again (a fresh-eye attack's findings): a loop left by its
// last step with no all_processed (the edge then leaves from the loop); a
// first task a retry comes back to (it still gets the start); a yes out of
// a task, an all_processed out of a task, a next between steps of no loop
// (each a plain edge). Each document then passes Validate.
func TestFlowSlipsAreMended(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each invoice"}
	step := func(id string) Node { n := task(id); n.ParentID = "L"; return n }
	d := flowDoc([]Node{task("open"), loop, step("check"), step("pay"), task("done")}, []Edge{
		{Source: "open", Target: "L", Condition: "start"}, {Source: "check", Target: "pay"}, {Source: "pay", Target: "done"}})
	if got := edgeList(d); !slices.Contains(got, "L>done:all_processed") || !slices.Contains(got, "pay>check:next") ||
		slices.ContainsFunc(got, func(e string) bool { return strings.HasPrefix(e, "pay>done") }) {
		t.Errorf("a loop left by its last step: %v", got)
	}
	if err := Validate(d); err != nil {
		t.Errorf("a loop left by its last step, mended, is refused: %v", err)
	}
	dec := Node{ID: "ok", Type: "decision", Label: "Login worked?"}
	d = flowDoc([]Node{task("login"), dec, task("export"), {ID: "done", Type: "end", Label: "Done"}}, []Edge{
		{Source: "login", Target: "ok"}, {Source: "ok", Target: "export", Condition: "yes"},
		{Source: "ok", Target: "login", Condition: "no"}, {Source: "export", Target: "done"}})
	if e := d.Public.Edges[0]; e != (Edge{Source: "login", Target: "ok", Condition: "start"}) {
		t.Errorf("a first task a retry comes back to: %v", d.Public.Edges)
	}
	for _, c := range []string{"next", "yes", "all_processed"} {
		d := flowDoc([]Node{task("A"), {ID: "D", Type: "decision", Label: "Over?"}, task("B"), task("C")}, []Edge{
			{Source: "A", Target: "D", Condition: "start"}, {Source: "D", Target: "B", Condition: "yes"},
			{Source: "D", Target: "C", Condition: "no"}, {Source: "B", Target: "C", Condition: c}})
		if got := edgeList(d); !slices.Contains(got, "B>C:") || Validate(d) != nil {
			t.Errorf("%s out of a task: %v %v", c, got, Validate(d))
		}
	}
}

// edgeList is d's edges as "source>target:condition".
func edgeList(d *Document) []string {
	var out []string
	for _, e := range d.Public.Edges {
		out = append(out, e.Source+">"+e.Target+":"+e.Condition)
	}
	return out
}

// Deleting the decision (its no branch is left with no edge in), then the
// first step: the procedure starts where the first step went on, not at
// the step the decision's other branch left behind (a fresh-eye attack's
// finding); where it went on to a loop, no task starts it (and none that
// nothing reaches).
func TestAfterTheFirstStepsDeleteTheProcedureStartsWhereItWentOn(t *testing.T) {
	d := flowDoc([]Node{task("T1"), {ID: "D", Type: "decision", Label: "Over?"}, task("T2"), task("X"), task("T3")}, []Edge{
		{Source: "T1", Target: "D", Condition: "start"}, {Source: "D", Target: "T2", Condition: "yes"},
		{Source: "D", Target: "X", Condition: "no"}, {Source: "T2", Target: "T3"}})
	sample := sample(t)
	Repair(sample, jobID)
	for _, c := range []struct {
		d     *Document
		first string
	}{{d, "T2>T3:start"}, {sample, ""}} {
		for _, id := range []string{c.d.Public.Nodes[1].ID, c.d.Public.Nodes[0].ID} {
			if !Delete(c.d, id) {
				t.Fatalf("no %s", id)
			}
			if err := Validate(c.d); err != nil {
				t.Fatalf("delete %s: %v", id, err)
			}
		}
		got := edgeList(c.d)
		starts := slices.DeleteFunc(slices.Clone(got), func(e string) bool { return !strings.HasSuffix(e, ":start") })
		if c.first == "" && len(starts) > 0 || c.first != "" && got[0] != c.first {
			t.Errorf("the procedure starts at %v: %v", starts, got)
		}
	}
}

// startsOf lists d's start edges as "source>target:start".
func startsOf(d *Document) []string {
	return slices.DeleteFunc(edgeList(d), func(e string) bool { return !strings.HasSuffix(e, ":start") })
}

// (A reviewer's findings on the repairs above; each test failed on them.)
// A model's flow that begins with a decision and marks no start: startFirst's
// fallback (the first root task even when an edge leads to it) puts the
// start on the yes branch's step and lists it first; startFirst's own comment
// says such a flow "is left without one".
func TestAFlowThatBeginsWithADecisionGetsNoStartOnABranch(t *testing.T) {
	d := flowDoc([]Node{{ID: "D", Type: "decision", Label: "New customer?"}, task("A"), task("B"), task("C")}, []Edge{
		{Source: "D", Target: "A", Condition: "yes"}, {Source: "D", Target: "B", Condition: "no"},
		{Source: "A", Target: "C"}, {Source: "B", Target: "C"}})
	if s := startsOf(d); len(s) > 0 {
		t.Errorf("the yes branch's step starts the procedure: %v", edgeList(d))
	}
}

// A procedure that begins with a loop ("for each invoice …"), as a model
// answers it or as a document stored without a start edge: the start goes
// to the step after the loop, midway (report → close), on RepairFlow and on
// any delete of such a stored document (TestAfterTheFirstStepsDelete… says
// "where it went on to a loop, no task starts it").
func TestAFlowThatBeginsWithALoopGetsNoStartMidway(t *testing.T) {
	build := func() *Document {
		loop := Node{ID: "L", Type: "loop", Label: "Each invoice", Children: []string{"check", "pay"}}
		return flowDoc([]Node{loop, task("check"), task("pay"), task("report"), task("close"), task("archive")}, []Edge{
			{Source: "check", Target: "pay"}, {Source: "pay", Target: "check", Condition: "next"},
			{Source: "L", Target: "report", Condition: "all_processed"}, {Source: "report", Target: "close"},
			{Source: "close", Target: "archive"}})
	}
	d := build()
	if s := startsOf(d); len(s) > 0 {
		t.Errorf("RepairFlow starts the procedure midway: %v", edgeList(d))
	}
	d = build()
	for i := range d.Public.Edges {
		if d.Public.Edges[i].Condition == "start" {
			d.Public.Edges[i].Condition = "" // stored without one, as before startFirst
		}
	}
	if err := Validate(d); err != nil {
		t.Fatal(err)
	}
	Delete(d, "archive")
	if s := startsOf(d); len(s) > 0 {
		t.Errorf("deleting the last step starts the procedure midway: %v", edgeList(d))
	}
}

// A loop whose first step is checked by a model's yes/no on a task (a slip
// conditionFits mends into plain edges): loopExit takes the first plain
// edge out of any step, the early way out (verify → flag), as the loop's
// all_processed, and leaves the last step's way on (pay → done) a plain
// edge out of the loop. Its comment says "a loop left by its last step".
func TestTheLoopsAllProcessedIsItsLastStepsWayOut(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each invoice", Children: []string{"verify", "pay"}}
	d := flowDoc([]Node{task("open"), loop, task("verify"), task("pay"), task("flag"), task("done")}, []Edge{
		{Source: "open", Target: "L", Condition: "start"},
		{Source: "verify", Target: "pay", Condition: "yes"}, {Source: "verify", Target: "flag", Condition: "no"},
		{Source: "pay", Target: "done"}})
	if got := edgeList(d); !slices.Contains(got, "L>done:all_processed") {
		t.Errorf("when all are processed the loop goes on to %v", got)
	}
}

// A procedure that is one loop ("each ticket: read it, answer it"): the first
// real task is the loop's first step and the model starts there, as the
// contract says ("the first edge starts at the first real task with start").
// conditionFits now drops that start; on RepairFlow, and on every delete of
// such a stored document (search is off once it had a start), none is found
// again.
func TestAProcedureThatIsOneLoopKeepsItsStart(t *testing.T) {
	build := func() *Document {
		loop := Node{ID: "L", Type: "loop", Label: "Each ticket", Children: []string{"read", "answer", "close"}}
		d := &Document{Meta: &Meta{Title: "T", Version: "1.0.0"}, Public: &Public{Nodes: []Node{loop, task("read"), task("answer"), task("close")}, Edges: []Edge{
			{Source: "read", Target: "answer", Condition: "start"}, {Source: "answer", Target: "close"},
			{Source: "close", Target: "read", Condition: "next"}}}}
		Repair(d, jobID)
		return d
	}
	d := build()
	if err := Validate(d); err != nil {
		t.Fatal(err)
	}
	RepairFlow(d)
	if len(startsOf(d)) != 1 {
		t.Errorf("RepairFlow drops the start: %v", edgeList(d))
	}
	d = build()
	Delete(d, "answer")
	if len(startsOf(d)) != 1 {
		t.Errorf("a delete drops the start: %v", edgeList(d))
	}
}

// A loop inside a group step (a task with children; only loops in loops are
// refused) whose step goes back up to the group: valid as answered; loopExit
// moves that edge onto the loop, which then has an edge to its own parent,
// and Validate refuses the answer (asked again) or the edit (409).
func TestALoopsExitNeverLinksItToItsParent(t *testing.T) {
	grp := Node{ID: "G", Type: "task", Label: "Month end", Children: []string{"L", "post"}}
	loop := Node{ID: "L", Type: "loop", Label: "Each account", Children: []string{"rec"}}
	d := &Document{Meta: &Meta{Title: "T", Version: "1.0.0"}, Public: &Public{Nodes: []Node{task("open"), grp, loop, task("rec"), task("post"), task("close")}, Edges: []Edge{
		{Source: "open", Target: "G", Condition: "start"}, {Source: "rec", Target: "G"}, {Source: "rec", Target: "rec", Condition: "next"},
		{Source: "G", Target: "close"}}}}
	Repair(d, jobID)
	if err := Validate(d); err != nil {
		t.Fatal(err)
	}
	RepairFlow(d)
	if err := Validate(d); err != nil {
		t.Errorf("a valid answer, repaired, is refused: %v\n%v", err, edgeList(d))
	}
}

// A model marks the procedure's start (open → loop) and, as models do, the
// loop's first step too (check → pay: start). conditionFits used to make the
// loop's one a plain edge; keeping every start but an end's gave the
// answer two starts, and Validate refused it (a reviewer's finding).
func TestAStartInsideALoopBesideTheRealOneIsDropped(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each invoice", Children: []string{"check", "pay"}}
	d := flowDoc([]Node{task("open"), loop, task("check"), task("pay"), task("close")}, []Edge{
		{Source: "open", Target: "L", Condition: "start"},
		{Source: "check", Target: "pay", Condition: "start"}, {Source: "pay", Target: "check", Condition: "next"},
		{Source: "L", Target: "close", Condition: "all_processed"}})
	if err := Validate(d); err != nil {
		t.Errorf("%v\n%v", err, edgeList(d))
	}
}

// The same slip with no start of the procedure's own: the start is kept
// midway, on the loop's first step, and open (the first real task) was
// not started (a reviewer's finding).
func TestAStartInsideALoopIsNotTheProceduresStart(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each invoice", Children: []string{"check", "pay"}}
	d := flowDoc([]Node{task("open"), loop, task("check"), task("pay"), task("close")}, []Edge{
		{Source: "open", Target: "L"},
		{Source: "check", Target: "pay", Condition: "start"}, {Source: "pay", Target: "check", Condition: "next"},
		{Source: "L", Target: "close", Condition: "all_processed"}})
	if s := startsOf(d); !slices.Equal(s, []string{"open>L:start"}) {
		t.Errorf("starts %v\n%v", s, edgeList(d))
	}
}

// A procedure that is one loop: deleting its first step hands the start to
// the next step of the loop (a reviewer's finding: Delete marked only a
// step of no loop).
func TestDeletingTheFirstStepOfAOneLoopProcedureKeepsAStart(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each ticket", Children: []string{"read", "answer", "close"}}
	d := &Document{Meta: &Meta{Title: "T", Version: "1.0.0"}, Public: &Public{Nodes: []Node{loop, task("read"), task("answer"), task("close")}, Edges: []Edge{
		{Source: "read", Target: "answer", Condition: "start"}, {Source: "answer", Target: "close"},
		{Source: "close", Target: "read", Condition: "next"}}}}
	Repair(d, jobID)
	Delete(d, "read")
	if len(startsOf(d)) != 1 {
		t.Errorf("no start after deleting the first step: %v", edgeList(d))
	}
}

// A model's answer with a duplicate id (a loop and a task both "L"): the
// repairs take the first, as Repair and Validate do, and do not panic;
// Validate sends "duplicate id" back to the model (a panic once failed the
// job: "handler panicked").
func TestADuplicateIDDoesNotPanicTheRepairs(t *testing.T) {
	defer func() {
		if v := recover(); v != nil {
			t.Errorf("RepairFlow panicked: %v", v)
		}
	}()
	a, b := task("a"), task("b")
	a.ParentID, b.ParentID = "L", "L"
	d := flowDoc([]Node{{ID: "L", Type: "loop", Label: "Each"}, a, b, task("L")}, []Edge{
		{Source: "a", Target: "b", Condition: "start"}, {Source: "b", Target: "a", Condition: "next"}})
	if Validate(d) == nil {
		t.Error("a duplicate id is accepted")
	}
}

// The commit's own slip (open → loop start, and the loop's first step
// marked start too), with the loop listed before open: leadNode goes by
// the list, not the edges, so both starts stay and the answer is refused.
func TestAStartInsideALoopListedFirstIsDropped(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each invoice", Children: []string{"check", "pay"}}
	d := flowDoc([]Node{loop, task("check"), task("pay"), task("open"), task("close")}, []Edge{
		{Source: "open", Target: "L", Condition: "start"},
		{Source: "check", Target: "pay", Condition: "start"}, {Source: "pay", Target: "check", Condition: "next"},
		{Source: "L", Target: "close", Condition: "all_processed"}})
	if err := Validate(d); err != nil {
		t.Errorf("%v\n%v", err, edgeList(d))
	}
	if s := startsOf(d); !slices.Equal(s, []string{"open>L:start"}) {
		t.Errorf("starts %v", s)
	}
}

// A valid one-loop procedure listed with the step after the loop first:
// the start on the loop's first step (the first real task, kept before)
// is dropped, and no start is given.
func TestAOneLoopProcedureListedOutOfOrderKeepsItsStart(t *testing.T) {
	loop := Node{ID: "L", Type: "loop", Label: "Each ticket", Children: []string{"read", "answer"}}
	d := flowDoc([]Node{task("close"), loop, task("read"), task("answer")}, []Edge{
		{Source: "read", Target: "answer", Condition: "start"}, {Source: "answer", Target: "read", Condition: "next"},
		{Source: "L", Target: "close", Condition: "all_processed"}})
	if s := startsOf(d); !slices.Equal(s, []string{"read>answer:start"}) {
		t.Errorf("starts %v\n%v", s, edgeList(d))
	}
}
