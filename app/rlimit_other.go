//go:build !unix

package app

// fileLimit is unknown here: the connection cap is taken as configured.
func fileLimit() (uint64, bool) { return 0, false }
