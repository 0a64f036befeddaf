// Package storage is the one place in sentinel that persists. It offers
// byte-level durability primitives and knows nothing about agents: callers
// decide what the bytes mean.
//
//   - Journal is an append-only log of opaque records for changes that must be
//     on disk before the request that made them is answered (revocations,
//     pending commands, the webhook outbox, ...). Replay returns the records in
//     order; compaction replaces them atomically.
//   - WriteSnapshot and ReadSnapshot move a large, streamed payload (the hot
//     state) in and out of a checksummed container, verified before a single
//     byte reaches the caller.
//   - WriteFileAtomic is the temp-file, fsync, rename, fsync-directory dance
//     the other writers are built on.
//   - ReadOrCreateKey keeps the key that signs runtime tokens.
//
// Ownership: a file belongs to exactly one owner. A Journal owns its file from
// OpenJournal to Close and must be the only writer of it (in this or any other
// process); a snapshot or key path must be written by one caller at a time.
// Directories are created with mode 0700 and files with 0600 because they hold
// credentials and customer data.
//
// Durability: every function that returns nil after a write has made the data
// and the directory entry durable with fsync; nothing is acknowledged from the
// page cache alone. Corruption is never repaired silently: the only data ever
// discarded is a journal's torn tail, which by construction was never
// acknowledged, and that is logged. Every other integrity failure is an error
// that names the file and satisfies errors.Is(err, ErrCorrupt).
package storage
