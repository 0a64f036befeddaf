package app

import "time"

// SetJournalHealth replaces the embedded ledger journal's health check, for
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

// Crash stops the App as a crash would, as far as a test in one process
// can: no final snapshot; the kill switch and the ledger stop (releasing
// the storage directory's lock) with what was acknowledged already durable.
// A later Close does nothing.
func (a *App) Crash() {
	a.closeOnce.Do(func() {
		a.ready.Store(false)
		a.stopBridge()
		a.control.Close()
		_ = a.ledger.Close()
	})
}

// SetLazyDeadlines sets how often lazy deadlines are swept and how far a
// deadline must be to be kept lazily, for listeners made afterwards; the
// returned func restores the previous values.
func SetLazyDeadlines(tick, eager time.Duration) (restore func()) {
	oldTick, oldEager := deadlineTick.Swap(int64(tick)), eagerDeadline.Swap(int64(eager))
	return func() {
		deadlineTick.Store(oldTick)
		eagerDeadline.Store(oldEager)
	}
}
