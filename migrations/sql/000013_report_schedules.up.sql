-- Report schedules (report.schedule_*) and the reports the log recorded (report.generated),
-- read models with generations as in 000002; and the files of scheduled reports, which any
-- control replica serves.
CREATE TABLE rm_report_schedules (
    generation  integer     NOT NULL,
    schedule_id uuid        NOT NULL,
    org_id      text        NOT NULL, -- '' is the whole log
    kind        text        NOT NULL,
    spec        jsonb       NOT NULL, -- domain.ReportScheduleSpec
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL,
    since       timestamptz NOT NULL,
    paused      boolean     NOT NULL DEFAULT false,
    deleted_at  timestamptz,
    version     bigint      NOT NULL,
    position    bigint      NOT NULL,
    PRIMARY KEY (generation, schedule_id)
);
CREATE INDEX rm_report_schedules_org ON rm_report_schedules (generation, org_id, schedule_id);

CREATE TABLE rm_reports (
    generation   integer     NOT NULL,
    report_id    uuid        NOT NULL,
    org_id       text        NOT NULL, -- '' is the whole log
    kind         text        NOT NULL,
    format       text        NOT NULL,
    window_from  text        NOT NULL,
    window_to    text        NOT NULL,
    sha256       text        NOT NULL,
    bytes        bigint      NOT NULL,
    schedule_id  uuid,
    due_at       timestamptz,
    actor        text        NOT NULL,
    requested_by text,
    recorded_at  timestamptz NOT NULL,
    position     bigint      NOT NULL,
    PRIMARY KEY (generation, report_id)
);
CREATE INDEX rm_reports_org ON rm_reports (generation, org_id, recorded_at DESC, report_id);

CREATE VIEW report_schedules AS SELECT schedule_id, org_id, kind, spec, created_by, created_at, since, paused, deleted_at, version, position
    FROM rm_report_schedules WHERE generation = (SELECT generation FROM projection_state WHERE name = 'report_schedules');
CREATE VIEW reports AS SELECT report_id, org_id, kind, format, window_from, window_to, sha256, bytes, schedule_id, due_at, actor,
    requested_by, recorded_at, position
    FROM rm_reports WHERE generation = (SELECT generation FROM projection_state WHERE name = 'report_schedules');

-- The file of each scheduled run, written before its report.generated is appended (event is that
-- record's payload, so a retry after a crash appends the record of the file stored, never of
-- another rendering). A file is served only once the log holds its record (reports above).
-- At most 64 MiB a file; the scheduler keeps the newest 100 runs of each schedule.
CREATE TABLE report_files (
    report_id   uuid        PRIMARY KEY,
    schedule_id uuid        NOT NULL,
    due_at      timestamptz NOT NULL,
    org_id      text        NOT NULL,
    kind        text        NOT NULL,
    format      text        NOT NULL,
    sha256      text        NOT NULL,
    event       bytea       NOT NULL,
    file        bytea       NOT NULL CHECK (octet_length(file) <= 67108864),
    stored_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (schedule_id, due_at)
);

GRANT SELECT, INSERT, UPDATE, DELETE ON rm_report_schedules, rm_reports, report_files TO tunnelplane_app;
GRANT SELECT ON report_schedules, reports TO tunnelplane_app;
