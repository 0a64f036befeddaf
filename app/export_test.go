package app

import "time"

// SetJournalHealth replaces the kill-switch journal's health check, for
// tests: a failed fsync cannot be provoked from outside package storage.
// Call it before the App serves; the field is read without a lock.
func (a *App) SetJournalHealth(h interface{ Healthy() error }) { a.journalHealth = h }

// SetNewConnGrace sets how long a connection may go without a request
// before it can be evicted at the connection cap; the returned func
// restores the previous value.
func SetNewConnGrace(d time.Duration) (restore func()) {
	old := newConnGrace.Swap(int64(d))
	return func() { newConnGrace.Store(old) }
}
