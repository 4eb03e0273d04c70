-- Leave room on each page so step checkpoints, which change no indexed column, are HOT
-- updates: no new index entries, less WAL per transition.
ALTER TABLE {schema}.execution SET (fillfactor = 70);
