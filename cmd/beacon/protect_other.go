//go:build !linux

package main

// protectCredentials does nothing outside Linux.
func protectCredentials() error { return nil }
