-- A signal that commits while its holder releases the lease must still wake the execution:
-- every signal stamps its id on the execution row (taking the row lock, so it orders with the
-- release), and each checkpoint records the highest id its worker has applied. A release that
-- finds a later stamp makes the execution due at once, whatever the lease state was.
ALTER TABLE {schema}.execution
    ADD COLUMN last_signal  bigint NOT NULL DEFAULT 0,
    ADD COLUMN signals_done bigint NOT NULL DEFAULT 0;
