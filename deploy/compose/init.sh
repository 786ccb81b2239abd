#!/bin/sh
# The compose federation's one-shot init (deploy/compose/compose.yaml, service `init`).
# The same steps an operator and node/local/federation.py take, with the real CLI: the
# authority (`federation init`), three nodes and an overseer (`node enroll`,
# `oversight enroll`), the members file (`directory add`) and the signed directory
# (`directory sign`); then each node's node.toml for PostgreSQL, its OPA sidecar, the
# database audit store and /metrics over TLS; then `db upgrade` for each node. Everything
# secret (CA and directory-signing keys, node keys) is generated here, into the volume
# `federation` (/var/lib/liaison): the compose file holds none. A second run (the stack
# brought up again) enrols nothing and only upgrades the databases. The two variables below
# are for tests/unit/test_compose.py, which runs this script outside a container.
set -eu

FED=${LIAISON_COMPOSE_DIR:-/var/lib/liaison}
FEDERATION=liaison.example
NODES="DE-BKA FR-DGPN NL-KLPD"
OVERSEER=EU-EDPS
AGREEMENTS=${LIAISON_COMPOSE_AGREEMENTS:-/etc/liaison-compose/agreements}

# The compose service name that reaches a node (its sidecar is opa-<cc>, its database
# liaison_<cc>).
short() { echo "$1" | cut -c1-2 | tr 'A-Z' 'a-z'; }

if [ ! -f "$FED/.enrolled" ]; then
  liaison federation init --dir "$FED/authority" --federation "$FEDERATION"
  for id in $NODES; do
    cc=$(short "$id")
    liaison node enroll "$id" --authority "$FED/authority" --out "$FED/$id" --endpoint "node-$cc:7001" --host "node-$cc" --host localhost --host 127.0.0.1 --metrics 0.0.0.0:9464 --policy-dir /opt/liaison/policies
    liaison directory add --authority "$FED/authority" --members "$FED/members.json" --member "$FED/$id/member.json"
  done
  liaison oversight enroll "$OVERSEER" --authority "$FED/authority" --out "$FED/overseer"
  liaison directory add --authority "$FED/authority" --members "$FED/members.json" --member "$FED/overseer/member.json"
  liaison directory sign --authority "$FED/authority" --members "$FED/members.json" --out "$FED/directory.json" --valid-days 30
  for id in $NODES; do
    cc=$(short "$id")
    cp "$FED/directory.json" "$FED/$id/directory.json"
    cp "$AGREEMENTS/$id.json" "$FED/$id/agreements.json"
    # As the Helm chart renders it (deploy/helm/liaison/templates/_helpers.tpl), with paths
    # relative to this file: the node's folder is /var/lib/liaison in its own container
    # and $FED/$id here. No password: libpq reads PGPASSFILE.
    cat > "$FED/$id/node.toml" <<TOML
# Written by deploy/compose/init.sh; docs/operating.md lists every key.
[node]
id = "$id"
federation = "$FEDERATION"
profile = "bilateral"

[server]
listen = "0.0.0.0:7001"
metrics = "0.0.0.0:9464"

[tls]
certificate = "tls.crt"
key = "tls.key"
ca = "ca.crt"

[trust]
directory = "directory.json"
authority_public_key = "authority.pub"
signing_key = "signing.key"

[store]
url = "postgresql+psycopg://liaison@postgres:5432/liaison_$cc"

[policy]
engine = "opa"
policy_dir = "/opt/liaison/policies"
data = "agreements.json"
opa_url = "http://opa-$cc:8181"

[audit]
store = "database"

[admin]
socket = "/tmp/liaison-admin.sock"
TOML
  done
  touch "$FED/.enrolled"
fi

for id in $NODES; do
  liaison db upgrade --config "$FED/$id/node.toml"
done
