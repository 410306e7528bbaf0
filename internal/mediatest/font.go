package mediatest

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sync"
)

// TextWidth is how many pixels wide drawtext draws s in f at size: the
// sum of its characters' advances, read from the font file, each rounded
// to whole pixels as FreeType's hinting does (drawtext does not kern).
// The ink ends 2 to 5 pixels short of it, the last glyph's side bearing.
// It panics when the font is not installed (Debian package
// fonts-dejavu-core): it serves generators that have no test at hand.
func TextWidth(f Font, size int, s string) int {
	m := fontMetrics(f)
	scale := func(units int) int { // 26.6 fixed point, rounded to whole pixels
		v := math.Round(float64(units) * float64(size) * 64 / float64(m.unitsPerEm))
		return int(math.Floor((v + 32) / 64))
	}
	w := 0
	for _, r := range s {
		w += scale(int(m.advance(m.cmap[r])))
	}
	return w
}

// metrics are what TextWidth needs of a TrueType font: its units per em,
// its glyphs' advances and its character map.
type metrics struct {
	unitsPerEm int
	advances   []uint16
	cmap       map[rune]uint16
}

func (m *metrics) advance(g uint16) uint16 {
	if int(g) < len(m.advances) {
		return m.advances[g]
	}
	return m.advances[len(m.advances)-1]
}

var fonts sync.Map // Font: *metrics

func fontMetrics(f Font) *metrics {
	if m, ok := fonts.Load(f); ok {
		return m.(*metrics)
	}
	path := filepath.Join("/usr/share/fonts/truetype/dejavu", string(f))
	b, err := os.ReadFile(path)
	if err != nil {
		panic(fmt.Sprintf("mediatest: font %s is missing (Debian package fonts-dejavu-core): %v", path, err))
	}
	m, err := parseFont(b)
	if err != nil {
		panic(fmt.Sprintf("mediatest: font %s: %v", path, err))
	}
	fonts.Store(f, m)
	return m
}

func parseFont(b []byte) (m *metrics, err error) {
	defer func() {
		if recover() != nil { // a table shorter than it says
			err = fmt.Errorf("malformed TrueType font")
		}
	}()
	u16 := func(off int) int { return int(binary.BigEndian.Uint16(b[off:])) }
	u32 := func(off int) int { return int(binary.BigEndian.Uint32(b[off:])) }
	tables := map[string]int{}
	for i := range u16(4) {
		rec := 12 + 16*i
		tables[string(b[rec:rec+4])] = u32(rec + 8)
	}
	for _, tag := range []string{"head", "hhea", "hmtx", "cmap"} {
		if _, ok := tables[tag]; !ok {
			return nil, fmt.Errorf("no %s table", tag)
		}
	}
	m = &metrics{unitsPerEm: u16(tables["head"] + 18), cmap: map[rune]uint16{}}
	for i := range u16(tables["hhea"] + 34) {
		m.advances = append(m.advances, uint16(u16(tables["hmtx"]+4*i)))
	}
	// The Unicode BMP subtable (platform 3, encoding 1), format 4.
	cmap := tables["cmap"]
	for i := range u16(cmap + 2) {
		rec := cmap + 4 + 8*i
		if u16(rec) != 3 || u16(rec+2) != 1 {
			continue
		}
		sub := cmap + u32(rec+4)
		if u16(sub) != 4 {
			return nil, fmt.Errorf("cmap format %d", u16(sub))
		}
		segs := u16(sub+6) / 2
		ends, starts, deltas, ranges := sub+14, sub+16+2*segs, sub+16+4*segs, sub+16+6*segs
		for s := range segs {
			start, end := u16(starts+2*s), u16(ends+2*s)
			delta, rangeOff := u16(deltas+2*s), u16(ranges+2*s)
			for c := start; c <= end && c != 0xffff; c++ {
				g := (c + delta) & 0xffff
				if rangeOff != 0 {
					if g = u16(ranges + 2*s + rangeOff + 2*(c-start)); g != 0 {
						g = (g + delta) & 0xffff
					}
				}
				if g != 0 {
					m.cmap[rune(c)] = uint16(g)
				}
			}
		}
	}
	return m, nil
}
