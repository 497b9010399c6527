package features

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as aligned tables, for people.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }

	p("Kernel\t%s %s\n", r.Kernel.Release, r.Kernel.Machine)
	p("Effective user ID\t%d\n", r.EUID)
	p("Page size\t%d\n", r.PageSize)
	if len(r.HugePages) == 0 {
		p("Huge pages\tnone\n")
	}
	for i, hp := range r.HugePages {
		label := ""
		if i == 0 {
			label = "Huge pages"
		}
		def := ""
		if hp.Default {
			def = " (default)"
		}
		p("%s\t%s: %d total, %d free, %d of them reserved%s\n", label, sizeString(hp.Size), hp.Total, hp.Free, hp.Reserved, def)
	}
	if v := r.UnprivilegedUserfaultfd.Value; v != nil {
		p("vm.unprivileged_userfaultfd\t%d\n", *v)
	} else {
		p("vm.unprivileged_userfaultfd\tunknown: %s\n", r.UnprivilegedUserfaultfd.Error)
	}
	switch d := r.Device; {
	case d.Exists:
		p("%s\t%s (%s)\n", d.Path, d.Mode, d.Perm)
	case d.Error != "":
		p("%s\tunknown: %s\n", d.Path, d.Error)
	default:
		p("%s\tdoes not exist\n", d.Path)
	}
	p("PAGEMAP_SCAN\t%s\n", yesNo(r.PagemapScan.Supported, r.PagemapScan.Error))
	p("CAP_SYS_PTRACE\t%s\n", yesNo(r.CapSysPtrace, ""))
	for _, path := range r.Paths {
		s := yesNo(path.OK, path.Error)
		if path.Reason != "" {
			s += " (" + path.Reason + ")"
		}
		p("Open path %s\t%s\n", path.Path, s)
	}
	if r.API != 0 {
		p("API version\t%#x\n", r.API)
	}
	if r.API != 0 {
		p("Descriptor ioctls\t%s\n", strings.Join(r.FdIoctls, " "))
	}

	p("\nFEATURE\tSUPPORTED\tKERNEL NAME\tSINCE\n")
	for _, f := range r.Features {
		supported := yesNo(f.Supported, "")
		if r.API == 0 {
			supported = "unknown" // no descriptor to ask
		}
		p("%s\t%s\t%s\t%s\n", f.Name, supported, f.KernelName, f.Since)
	}

	p("\nMEMORY\tMODE\tREGISTERS\tRANGE IOCTLS\n")
	if len(r.Registrations) == 0 {
		p("(none tried: no userfaultfd)\n")
	}
	for _, reg := range r.Registrations {
		var ok, detail string
		switch {
		case reg.Skipped != "":
			ok, detail = "skipped", reg.Skipped
		case reg.OK:
			ok, detail = "yes", strings.Join(reg.Ioctls, " ")
		case reg.Errno != "":
			ok, detail = "no", reg.Errno
		default:
			ok, detail = "no", reg.Error
		}
		p("%s\t%s\t%s\t%s\n", reg.Memory, reg.Mode, ok, detail)
	}
	return tw.Flush()
}

func yesNo(ok bool, why string) string {
	switch {
	case ok:
		return "yes"
	case why != "":
		return "no: " + why
	}
	return "no"
}
