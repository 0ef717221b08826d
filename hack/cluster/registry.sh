# The private registry of the local cluster, sourced by up.sh (needs lib.sh, with its
# start_daemon/wait_for). Debian's docker-registry (CNCF distribution 2.8) with htpasswd
# (bcrypt) auth, plain HTTP on loopback only: containerd on this host is its only client,
# so nothing crosses a wire, and the login path (401, then basic auth) is the same as with
# TLS. containerd reaches it through CRI `config_path` + certs.d/<addr>/hosts.toml.
# The step image is pushed under a private name; the e2e tests read address, login and
# image from $REGISTRY_DIR/credentials.
# shellcheck shell=bash disable=SC2153  # REGISTRY_ADDR etc. come from lib.sh

REGISTRY_DIR=$STATE/registry
REGISTRY_CREDENTIALS=$REGISTRY_DIR/credentials
REGISTRY_USER=baton-e2e
# a ctr namespace of its own: the private image must never be in k8s.io, where the CRI
# would find it without a pull (and a missing secret would go unnoticed)
REGISTRY_PUSH_NS=baton-registry

# the password is made once per state dir (down.sh removes it with the registry's data)
registry_password() { sed -n 's/^password=//p' "$REGISTRY_CREDENTIALS"; }

write_registry_config() {
  mkdir -p "$REGISTRY_DIR/data" "$STATE/config/certs.d/$REGISTRY_ADDR"
  chmod 700 "$REGISTRY_DIR"
  if [[ ! -f $REGISTRY_CREDENTIALS ]]; then
    local pw; pw=$(openssl rand -hex 16)
    printf 'address=%s\nusername=%s\npassword=%s\nimage=%s\n' \
      "$REGISTRY_ADDR" "$REGISTRY_USER" "$pw" "$PRIVATE_STEP_IMAGE" >"$REGISTRY_CREDENTIALS.tmp"
    chmod 600 "$REGISTRY_CREDENTIALS.tmp"; mv "$REGISTRY_CREDENTIALS.tmp" "$REGISTRY_CREDENTIALS"
    # htpasswd -B: bcrypt, the only hash distribution accepts; -i: password on stdin
    registry_password | htpasswd -niB "$REGISTRY_USER" >"$REGISTRY_DIR/htpasswd" 2>/dev/null
  fi
  put "$STATE/config/registry.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
  headers:
    X-Content-Type-Options: [nosniff]
auth:
  htpasswd:
    realm: baton-registry
    path: $REGISTRY_DIR/htpasswd
EOF
  put "$STATE/config/certs.d/$REGISTRY_ADDR/hosts.toml" <<EOF
server = "http://$REGISTRY_ADDR"

[host."http://$REGISTRY_ADDR"]
  capabilities = ["pull", "resolve"]
EOF
}

# curl with the login from a file descriptor, never on the command line
registry_curl() {
  curl -sf --max-time 5 -K <(printf 'user = "%s:%s"\n' "$REGISTRY_USER" "$(registry_password)") "$@"
}
# serves, and refuses an anonymous request (401): auth is on
registry_up() {
  registry_curl -o /dev/null "http://$REGISTRY_ADDR/v2/" &&
    [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$REGISTRY_ADDR/v2/") == 401 ]]
}

# digest of the private image in the registry ('' if absent)
registry_digest() {
  local repo=${PRIVATE_STEP_IMAGE#*/}
  registry_curl -I -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
    "http://$REGISTRY_ADDR/v2/${repo%:*}/manifests/${repo##*:}" 2>/dev/null |
    tr -d '\r' | awk 'tolower($1)=="docker-content-digest:" {print $2}'
}
# the registry holds the step image as built (same digest as its archive)
registry_ready() {
  local ref dig
  read -r ref dig <"$BATON_CACHE/images/step.digest" || return 1
  registry_up && [[ $(registry_digest) == "$dig" ]]
}

# push the step archive as $PRIVATE_STEP_IMAGE, through a ctr namespace of its own
push_private_image() {
  registry_ready && { log "registry has $PRIVATE_STEP_IMAGE"; return; }
  local in_ns=(ctr --address "$CONTAINERD_SOCK" -n "$REGISTRY_PUSH_NS") ref dig
  read -r ref dig <"$BATON_CACHE/images/step.digest"
  log "pushing $ref as $PRIVATE_STEP_IMAGE ($dig)"
  "${in_ns[@]}" images import --platform linux/amd64 "$BATON_CACHE/images/step.tar" >/dev/null
  "${in_ns[@]}" images tag --force "$ref" "$PRIVATE_STEP_IMAGE" >/dev/null
  # ctr takes the login only as an argument; a throwaway test password, loopback only
  local out
  out=$("${in_ns[@]}" images push --plain-http --user "$REGISTRY_USER:$(registry_password)" \
    "$PRIVATE_STEP_IMAGE" 2>&1) || { echo "$out" >&2; die "ctr images push $PRIVATE_STEP_IMAGE failed"; }
  "${in_ns[@]}" images rm "$ref" "$PRIVATE_STEP_IMAGE" >/dev/null
  registry_ready || die "the registry does not serve $PRIVATE_STEP_IMAGE at $dig after the push"
}

# needs containerd (for the push) and the step archive (imported by start_node)
start_registry() {
  start_daemon docker-registry /usr/bin/docker-registry serve "$STATE/config/registry.yml"
  wait_for "registry on $REGISTRY_ADDR (login required)" docker-registry registry_up
  push_private_image
}
