#!/bin/sh
# Starts MLflow's tracking server behind its basic-auth app: every API call, artifact
# uploads and downloads included, needs a user, and a user without a grant may only read
# (default_permission = READ). The admin is created on the first start from
# MLFLOW_AUTH_ADMIN_PASSWORD; users.py adds serving's read-only user. Users and grants live
# in the backend store's database (MLFLOW_BACKEND_STORE_URI), beside MLflow's own tables.
# A password check is a deliberately slow hash: each worker remembers a good one for 60 s,
# or every poll of every serving replica would pay it (a changed password reaches the other
# workers within those 60 s).
# Arguments are passed on to `mlflow server`.
set -eu
umask 077
config="${TMPDIR:-/tmp}/mlflow-auth.ini"
cat > "$config" <<EOF
[mlflow]
default_permission = READ
database_uri = ${MLFLOW_BACKEND_STORE_URI:?the backend store URI, also the users database}
admin_username = admin
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
auth_cache_ttl_seconds = 60
EOF
export MLFLOW_AUTH_CONFIG_PATH="$config"
exec mlflow server --app-name basic-auth "$@"
