#!/bin/sh
# orderflow's own database beside Temporal's, on the same PostgreSQL server (first start only);
# its password comes from the required ORDERFLOW_DB_PASSWORD, never from this file
set -eu
psql -v ON_ERROR_STOP=1 -v pw="$APP_DB_PASSWORD" --username "$POSTGRES_USER" <<'EOSQL'
CREATE USER orderflow WITH PASSWORD :'pw';
CREATE DATABASE orderflow OWNER orderflow;
EOSQL
