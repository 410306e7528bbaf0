package jobs

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParseID(t *testing.T) {
	good := map[string]ID{
		"3F2504E0-4F89-41D3-9A0C-0305E82C3301":  "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
		" 3f2504e0-4f89-41d3-9a0c-0305e82c3301": "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
		"3f2504e04f8941d39a0c0305e82c3301":      "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
		"3f2504e0-4f89-41d3-9a0c-0305e82c330F":  "3f2504e0-4f89-41d3-9a0c-0305e82c330f",
		"3f2504e0-4f89-41d3-9a0c-0305e82c3301":  "3f2504e0-4f89-41d3-9a0c-0305e82c3301",
	}
	for in, want := range good {
		got, err := ParseID(in)
		if err != nil || got != want {
			t.Errorf("ParseID(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "../../etc/passwd", "{3f2504e0-4f89-41d3-9a0c-0305e82c3301}",
		"urn:uuid:3f2504e0-4f89-41d3-9a0c-0305e82c3301", "3f2504e0-4f89-41d3-9a0c-0305e82c330g"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q) accepted", bad)
		}
	}
}

func TestPaths(t *testing.T) {
	id := ID("3f2504e0-4f89-41d3-9a0c-0305e82c3301")
	if id.RawPath() != "raw/3f2504e0-4f89-41d3-9a0c-0305e82c3301.mp4" ||
		id.SlimPath() != "slim/3f2504e0-4f89-41d3-9a0c-0305e82c3301.mp4" ||
		id.SOPPath() != "sops/3f2504e0-4f89-41d3-9a0c-0305e82c3301.json" {
		t.Fatal(id.RawPath(), id.SlimPath(), id.SOPPath())
	}
	if MaxUploadBytes != 786432000 {
		t.Fatal(MaxUploadBytes)
	}
}

func TestMetadataAccessors(t *testing.T) {
	j := Job{Metadata: map[string]any{"stage": "probing", "progress": 0.5, "owner": "u1"}}
	if j.Stage() != "probing" || *j.Progress() != 0.5 || j.Owner() != "u1" {
		t.Fatal(j.Stage(), j.Progress(), j.Owner())
	}
	if (Job{}).Progress() != nil || (Job{}).Stage() != "" {
		t.Fatal("empty metadata")
	}
}

func TestCheckUploadSize(t *testing.T) {
	if err := CheckUploadSize(MaxUploadBytes); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	for size, want := range map[int64]error{0: ErrEmptyUpload, MaxUploadBytes + 1: ErrUploadTooLarge} {
		var f *Failure
		err := CheckUploadSize(size)
		if !errors.As(err, &f) || !errors.Is(err, want) || f.Message == "" {
			t.Errorf("size %d: %v", size, err)
		}
	}
}

// Metadata merges as the database merges it: objects into objects, anything
// else replaces; neither side changes.
func TestMergeMetadata(t *testing.T) {
	a := map[string]any{"timings": map[string]any{"probing_ms": 1.0}, "stage": "probing", "keep": "person's"}
	b := map[string]any{"timings": map[string]any{"transcoding_ms": 2.0}, "stage": "transcoding", "probe": []any{1.0}}
	got, _ := json.Marshal(MergeMetadata(a, b))
	if string(got) != `{"keep":"person's","probe":[1],"stage":"transcoding","timings":{"probing_ms":1,"transcoding_ms":2}}` {
		t.Fatalf("%s", got)
	}
	if before, _ := json.Marshal(a); string(before) != `{"keep":"person's","stage":"probing","timings":{"probing_ms":1}}` {
		t.Fatalf("a changed: %s", before)
	}
}
