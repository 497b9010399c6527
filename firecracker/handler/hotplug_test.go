//go:build linux

package handler_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gouffd/uffd/firecracker/fctest"
	"github.com/gouffd/uffd/firecracker/handler"
	"github.com/gouffd/uffd/pager"
)

// hotplugGuest has two regions, the second a hotpluggable one of which
// the upper half is not plugged (PROT_NONE in the VMM) when the VM
// connects; it plugs it once PlugFile exists, then touches and checks it.
func hotplugGuest(start, plug string) fctest.Config {
	return fctest.Config{
		Regions:   []fctest.Region{{Size: 8 << 20}, {Size: 8 << 20, Offset: 8 << 20, Unplugged: 4 << 20}},
		Touch:     []string{"random"},
		Verify:    true,
		StartFile: start,
		PlugFile:  plug,
	}
}

const pluggedAtStart, unplugged = 12 << 20, 4 << 20

// TestHotplugPrefault: prefault populates the plugged memory and leaves
// the unplugged part alone (no page of it resident when the VM plugs it);
// once plugged, its faults are served on demand and every byte checks.
func TestHotplugPrefault(t *testing.T) {
	d := startDaemon(t, testMem, handler.Config{Mode: handler.Prefault})
	dir := t.TempDir()
	start, plug := filepath.Join(dir, "start"), filepath.Join(dir, "plug")
	p := d.startVM(hotplugGuest(start, plug))
	waitFor(t, "the prefault", func() bool { return len(d.logLines("prefault done")) == 1 })
	if got := d.logLines("prefault done", "skipped_bytes=4194304"); len(got) != 1 {
		t.Errorf("prefault did not skip the 4 MiB unplugged:\n%s", d.logs.String())
	}
	if st := d.s.Stats(); st.Filled != uint64(basePages(pluggedAtStart)) {
		t.Errorf("prefault filled %d pages, want the %d plugged", st.Filled, basePages(pluggedAtStart))
	}
	os.WriteFile(start, nil, 0o600)
	os.WriteFile(plug, nil, 0o600)
	res := p.wait(t)
	if res.UnpluggedResident != 0 {
		t.Errorf("%d of the %d unplugged pages were populated before the guest plugged them", res.UnpluggedResident, basePages(unplugged))
	}
	if res.Plugged != basePages(unplugged) || res.Verified != basePages(pluggedAtStart) {
		t.Errorf("verified %d plugged-at-start and %d plugged-later pages", res.Verified, res.Plugged)
	}
	d.waitIdle(t)
	if st := d.s.Stats(); st.Faults == 0 {
		t.Error("no fault served for the memory plugged after the prefault")
	}
}

// TestHotplugReplay: a replay skips the pages of the trace that lie in
// unplugged memory; they are served on demand once plugged.
func TestHotplugReplay(t *testing.T) {
	trace := filepath.Join(t.TempDir(), "trace")
	d := startDaemon(t, testMem, handler.Config{Mode: handler.RecordReplay, Trace: trace, Prefetch: pager.Adaptive()})
	// The recorded restore touches all 16 MiB, plugged.
	all := hotplugGuest("", "")
	all.Regions[1].Unplugged = 0
	d.startVM(all).wait(t)
	d.waitIdle(t)
	first := d.s.Stats()

	dir := t.TempDir()
	start, plug := filepath.Join(dir, "start"), filepath.Join(dir, "plug")
	p := d.startVM(hotplugGuest(start, plug))
	waitFor(t, "the replay", func() bool { return len(d.logLines("replay done")) == 1 })
	if got := d.logLines("replay done", "skipped_bytes=4194304"); len(got) != 1 {
		t.Errorf("the replay did not skip the 4 MiB unplugged:\n%s", d.logs.String())
	}
	if filled := d.s.Stats().Filled - first.Filled; filled != uint64(basePages(pluggedAtStart)) {
		t.Errorf("the replay installed %d pages, want the %d plugged", filled, basePages(pluggedAtStart))
	}
	os.WriteFile(start, nil, 0o600)
	os.WriteFile(plug, nil, 0o600)
	res := p.wait(t)
	if res.UnpluggedResident != 0 {
		t.Errorf("%d of the %d unplugged pages were populated before the guest plugged them", res.UnpluggedResident, basePages(unplugged))
	}
	if res.Plugged != basePages(unplugged) {
		t.Errorf("verified %d pages plugged later", res.Plugged)
	}
	d.waitIdle(t)
	if faults := d.s.Stats().Faults - first.Faults; faults == 0 {
		t.Error("no fault served for the memory plugged after the replay")
	}
}
