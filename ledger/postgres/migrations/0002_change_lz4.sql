-- Changes compressed with lz4 before they go out of line. A revoke-all of
-- 100k agents is one ~30 MB change of alike JSON ops: lz4 makes it about a
-- tenth of that in ~0.1 s of server CPU, which halves the time of its insert
-- (fewer TOAST rows, a tenth of the WAL to write) and the disk it holds until
-- it is pruned. pglz, the default, was the one that cost more than it saved.
-- A server built without lz4 keeps the uncompressed storage of 0001: slower,
-- not wrong. Existing rows keep their storage; only new ones are compressed.
DO $$
BEGIN
    ALTER TABLE ledger_changes ALTER COLUMN change SET COMPRESSION lz4;
    ALTER TABLE ledger_changes ALTER COLUMN change SET STORAGE EXTENDED;
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available: ledger changes stay uncompressed';
END
$$;
