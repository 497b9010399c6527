package pager_test

import (
	"testing"

	"github.com/gouffd/uffd/mem"
	"github.com/gouffd/uffd/pager"
)

func TestServeImage(t *testing.T) {
	for _, cfg := range []struct {
		name string
		cfg  pager.Config
	}{
		{"page", pager.Config{}},
		{"fixed64k", pager.Config{Prefetch: pager.Fixed(64 << 10)}},
		{"adaptive", pager.Config{Prefetch: pager.Adaptive()}},
		{"thread", pager.Config{Reader: pager.ReaderThread}},
		{"workers", pager.Config{Workers: 2}},
	} {
		t.Run(cfg.name, func(t *testing.T) {
			const size = 4 << 20
			u, m := setup(t, mem.Anonymous, size, 0)
			img := pattern(size)
			p := pager.New(u, cfg.cfg)
			if err := p.Add(pager.Region{Start: m.Addr(), Len: m.Len(), Source: pager.Image(img)}); err != nil {
				t.Fatal(err)
			}
			stop := serving(t, p)
			checkAll(t, m.Data, img)
			stop()
			st := p.Stats()
			if st.Pages != size/4096 {
				t.Errorf("Pages = %d, want %d", st.Pages, size/4096)
			}
			if st.Faults == 0 || st.Latency.Count() == 0 {
				t.Errorf("stats: %+v", st)
			}
			t.Logf("%+v", st)
		})
	}
}
