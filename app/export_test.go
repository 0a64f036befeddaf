package app

// SetJournalHealth replaces the kill-switch journal's health check, for
// tests: a failed fsync cannot be provoked from outside package storage.
// Call it before the App serves; the field is read without a lock.
func (a *App) SetJournalHealth(h interface{ Healthy() error }) { a.journalHealth = h }
