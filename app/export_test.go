package app

// SetJournalHealth replaces the embedded ledger journal's health check, for
// tests: a failed fsync cannot be provoked from outside package storage.
// Call it before the App serves; the field is read without a lock.
func (a *App) SetJournalHealth(h interface{ Healthy() error }) { a.journalHealth = h }

// Crash stops the App as a crash would, as far as a test in one process
// can: no final snapshot; the kill switch and the ledger stop (releasing
// the storage directory's lock) with what was acknowledged already durable.
// A later Close does nothing.
func (a *App) Crash() {
	a.closeOnce.Do(func() {
		a.ready.Store(false)
		a.control.Close()
		_ = a.ledger.Close()
	})
}
