package pager

// isolatedAdd is set by the isolated engine (builds with cgo on Linux). Add
// calls it, holding layoutMu, for every region it adds to a pager with
// Config.Isolated: a Serve running then takes the region before Add returns,
// so that the region's first fault is served. It does nothing when no
// isolated Serve runs.
var isolatedAdd func(p *Pager, r *region) error
