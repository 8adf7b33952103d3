#!/bin/sh
# One-shot schema job (temporalio/admin-tools): Temporal's two databases on PostgreSQL, created
# if missing and brought to the image's schema version. Safe to run again on every `up`.
set -eu
# the password comes from SQL_PASSWORD in the environment, as temporal-sql-tool reads it
tool() { temporal-sql-tool --plugin postgres12 --ep postgresql -p 5432 -u "$POSTGRES_USER" "$@"; }

until nc -z -w 5 postgresql 5432; do echo "waiting for postgresql:5432"; sleep 2; done

for db in temporal temporal_visibility; do
  tool --db "$db" create || true   # fails only when the database already exists
done
# setup-schema makes the version table; on a later run it exists and update-schema below is
# what must succeed (an error there fails the job, and compose does not start Temporal)
tool --db temporal setup-schema -v 0.0 || true
tool --db temporal update-schema -d /etc/temporal/schema/postgresql/v12/temporal/versioned
tool --db temporal_visibility setup-schema -v 0.0 || true
tool --db temporal_visibility update-schema -d /etc/temporal/schema/postgresql/v12/visibility/versioned
echo "Temporal schema on PostgreSQL is current"
