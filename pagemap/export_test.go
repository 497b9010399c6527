package pagemap

// SetCopyRegions forces (or not) the bounce-buffer path of ScanInto and
// returns a function that restores the default.
func SetCopyRegions(on bool) (restore func()) {
	old := copyRegions
	copyRegions = on
	return func() { copyRegions = old }
}
