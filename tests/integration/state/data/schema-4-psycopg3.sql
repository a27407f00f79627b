-- A PostgreSQL state (schema 4) written by provisioning before the psycopg2 port (psycopg 3.3.9),
-- dumped with pg_dump 15 --no-owner --no-privileges --inserts (comments and psql meta-commands
-- removed): two machine entries, a lock and a run of four machines (one done, one failed, one
-- claimed, one pending) whose runner's session is gone. test_postgres_store.py restores it.
SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;
SET default_tablespace = '';
SET default_table_access_method = heap;
CREATE TABLE public.provisioning_entries (
    kind text NOT NULL,
    name text NOT NULL,
    data text NOT NULL,
    version integer NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL
);
COMMENT ON COLUMN public.provisioning_entries.data IS 'JSON: reference, last_action, last_error, updated_at, cluster, group';
CREATE TABLE public.provisioning_locks (
    name text NOT NULL,
    token text NOT NULL,
    holder jsonb NOT NULL,
    session_key integer NOT NULL,
    expires_at timestamp with time zone NOT NULL
);
CREATE TABLE public.provisioning_meta (
    key text NOT NULL,
    value text NOT NULL
);
CREATE TABLE public.provisioning_runs (
    run_key text NOT NULL,
    generation integer NOT NULL,
    operation text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    touched_at timestamp with time zone DEFAULT now() NOT NULL,
    finished_at timestamp with time zone
);
CREATE TABLE public.provisioning_schema (
    version integer NOT NULL,
    description text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE public.provisioning_work (
    run_key text NOT NULL,
    generation integer NOT NULL,
    name text NOT NULL,
    state text DEFAULT 'pending'::text NOT NULL,
    token text,
    holder jsonb,
    session_key integer,
    expires_at timestamp with time zone,
    claimed_at timestamp with time zone,
    done_at timestamp with time zone,
    error text,
    CONSTRAINT provisioning_work_state_check CHECK ((state = ANY (ARRAY['pending'::text, 'claimed'::text, 'done'::text, 'failed'::text])))
);
INSERT INTO public.provisioning_entries VALUES ('machine', 'web-1', '{"last_action": null, "last_error": null, "reference": {"driver_url": "fake:/srv/cloud", "id": "fake-1"}, "updated_at": 1796182323.07768}', 1, '2026-12-02 03:32:03.078468+00');
INSERT INTO public.provisioning_entries VALUES ('machine', 'web-2', '{"last_action": null, "last_error": null, "reference": {"driver_url": "fake:/srv/cloud", "id": "fake-2"}, "updated_at": 1796182323.0791478}', 1, '2026-12-02 03:32:03.079322+00');
INSERT INTO public.provisioning_locks VALUES ('web-3', 'd8225c162c8d0c1057cf65e1910f3818', '{"pid": 7942, "host": "vm", "since": "2026-12-02T03:32:03Z", "command": "make.py"}', 103109229, '2026-12-02 04:32:03.090361+00');
INSERT INTO public.provisioning_runs VALUES ('up:oldrun', 1, 'up', '2026-12-02 03:32:03.079627+00', '2026-12-02 03:32:03.079627+00', NULL);
INSERT INTO public.provisioning_schema VALUES (1, 'entries, metadata and lock leases', '2026-12-02 03:32:03.057692+00');
INSERT INTO public.provisioning_schema VALUES (2, 'runs and work claims for many runners', '2026-12-02 03:32:03.057692+00');
INSERT INTO public.provisioning_schema VALUES (3, 'entries belong to a cluster (data.cluster): older code must not rewrite them', '2026-12-02 03:32:03.057692+00');
INSERT INTO public.provisioning_schema VALUES (4, 'an index of the open work of each run: claims and counts cost the open rows only', '2026-12-02 03:32:03.057692+00');
INSERT INTO public.provisioning_work VALUES ('up:oldrun', 1, 'web-4', 'pending', NULL, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO public.provisioning_work VALUES ('up:oldrun', 1, 'web-1', 'done', 'tok-old', '{"pid": 4242, "host": "old-host", "since": "T0", "command": "converge up"}', 103109229, NULL, '2026-12-02 03:32:03.084533+00', '2026-12-02 03:32:03.086125+00', NULL);
INSERT INTO public.provisioning_work VALUES ('up:oldrun', 1, 'web-2', 'failed', 'tok-old', '{"pid": 4242, "host": "old-host", "since": "T0", "command": "converge up"}', 103109229, NULL, '2026-12-02 03:32:03.084533+00', '2026-12-02 03:32:03.086125+00', 'ProvisioningError: it broke');
INSERT INTO public.provisioning_work VALUES ('up:oldrun', 1, 'web-3', 'claimed', 'tok-old', '{"pid": 4242, "host": "old-host", "since": "T0", "command": "converge up"}', 103109229, '2026-12-02 04:32:03.088401+00', '2026-12-02 03:32:03.087865+00', NULL, NULL);
ALTER TABLE ONLY public.provisioning_entries
    ADD CONSTRAINT provisioning_entries_pkey PRIMARY KEY (kind, name);
ALTER TABLE ONLY public.provisioning_locks
    ADD CONSTRAINT provisioning_locks_pkey PRIMARY KEY (name);
ALTER TABLE ONLY public.provisioning_meta
    ADD CONSTRAINT provisioning_meta_pkey PRIMARY KEY (key);
ALTER TABLE ONLY public.provisioning_runs
    ADD CONSTRAINT provisioning_runs_pkey PRIMARY KEY (run_key, generation);
ALTER TABLE ONLY public.provisioning_schema
    ADD CONSTRAINT provisioning_schema_pkey PRIMARY KEY (version);
ALTER TABLE ONLY public.provisioning_work
    ADD CONSTRAINT provisioning_work_pkey PRIMARY KEY (run_key, generation, name);
CREATE INDEX provisioning_work_open ON public.provisioning_work USING btree (run_key, generation, name COLLATE "C") WHERE (state = ANY (ARRAY['pending'::text, 'claimed'::text]));
ALTER TABLE ONLY public.provisioning_work
    ADD CONSTRAINT provisioning_work_run_key_generation_fkey FOREIGN KEY (run_key, generation) REFERENCES public.provisioning_runs(run_key, generation) ON DELETE CASCADE;
