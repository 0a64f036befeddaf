// Package bridge turns Alertmanager's webhook notifications into the
// announcements and kill-switch revocations of sentinel's ledger: it
// decodes a notification, decides in a pure function what it changes, and
// commits that in one durable write before Alertmanager gets its 200.
package bridge
