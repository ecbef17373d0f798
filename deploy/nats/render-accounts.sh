#!/usr/bin/env bash
# render-accounts.sh — write tunnelplane's NATS accounts (accounts.conf, which nats-server.conf
# includes) from a list of credentials, one per line:
#
#   control <bcrypt-hash>
#   node    <node-id> <bcrypt-hash>
#   cluster <name>
#
# Blank lines and text after # are ignored. A "cluster <name>" line starts the credentials of the
# installation whose processes run with --cluster <name> (TUNNELPLANE_CLUSTER); lines before the
# first one belong to the default installation. Each installation gets its own JetStream
# account, TUNNELPLANE for the default and TUNNELPLANE_<NAME> otherwise, whose streams, bucket,
# consumers and subjects carry the cluster's prefixes as the product names them (bus/wire
# Names: <name>_TP_EVENTS, <name>.events.>, …), and its own control user, "control" or
# "control-<name>". So several installations share one NATS server without seeing each other,
# and each needs exactly one control line. <node-id> is the node's id as in its
# <data-dir>/node/id (a lower-case UUID); <bcrypt-hash> is the bcrypt hash of the password that
# credential's holder puts in its --nats-url. The list holds no secrets, only hashes.
#
#   ./render-accounts.sh credentials.txt > accounts.conf && nats-server --signal reload
#
# The result is, per installation, account TUNNELPLANE (templates/tunnelplane-account.conf.tmpl:
# JetStream and the control plane) and one account per node (templates/node-account.conf.tmpl).
# Everything is checked before anything is written: a plain-text password, a malformed id or
# cluster name, or a repeated node or cluster is refused (exit 1), because nats-server would
# accept a plain-text password and ids and cluster names are spliced into subjects and account
# names.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
templates="$here/templates"

[[ $# -eq 1 ]] || { echo "usage: $0 CREDENTIALS_FILE  (- for standard input)" >&2; exit 2; }
input="$1"
[[ "$input" == - ]] && input=/dev/stdin

cluster_re='^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$'   # bus/wire's cluster names
uuid_re='^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
bcrypt_re='^\$2[abxy]\$[0-9]{2}\$[./A-Za-z0-9]{53}$'

control_tmpl="$(<"$templates/tunnelplane-account.conf.tmpl")"
node_tmpl="$(<"$templates/node-account.conf.tmpl")"

lineno=0
fail() { echo "$0: line $lineno: $*" >&2; exit 1; }

# The current installation's names: account, control user, resource prefix ${R} and subject
# prefix ${S} (all as bus/wire names them; empty prefixes for the default installation).
set_cluster() {
  cluster="$1"
  if [[ -z "$cluster" ]]; then
    account=TUNNELPLANE control_user=control rprefix="" sprefix=""
  else
    account="TUNNELPLANE_${cluster^^}" control_user="control-$cluster" rprefix="${cluster}_" sprefix="$cluster."
  fi
}

# render TEMPLATE NODE_ID HASH: the template with ${NODE_ID}, ${PASSWORD_HASH} and the current
# installation's ${ACCOUNT}, ${CONTROL_USER}, ${R} and ${S} replaced and nothing else touched
# (the templates are full of $JS… and $KV… subjects). The replacements are quoted, so no
# character in them is special.
render() {
  local out="$1"
  out="${out//'${NODE_ID}'/"$2"}"
  out="${out//'${PASSWORD_HASH}'/"$3"}"
  out="${out//'${ACCOUNT}'/"$account"}"
  out="${out//'${CONTROL_USER}'/"$control_user"}"
  out="${out//'${R}'/"$rprefix"}"
  out="${out//'${S}'/"$sprefix"}"
  printf '%s\n' "$out"
}

declare -A seen=() clusters=()
controls=()  # one rendered control account per installation, in input order
nodes=()
control=""   # the current installation's control account, once its control line is read
set_cluster ""
# end_cluster: the installation just read must have had its control line.
end_cluster() {
  [[ -n "$control" ]] || fail "no control credential${cluster:+ for cluster $cluster}"
  controls+=("$control")
}
while IFS= read -r line || [[ -n "$line" ]]; do
  lineno=$((lineno + 1))
  line="${line%%#*}"
  read -r -a f <<<"$line" || true
  [[ ${#f[@]} -eq 0 ]] && continue
  case "${f[0]}" in
    control)
      [[ ${#f[@]} -eq 2 ]] || fail "want: control <bcrypt-hash>"
      [[ "${f[1]}" =~ $bcrypt_re ]] || fail "control: not a bcrypt hash (never put a plain password here)"
      [[ -z "$control" ]] || fail "control: listed twice${cluster:+ for cluster $cluster}"
      control="$(render "$control_tmpl" "" "${f[1]}")"
      ;;
    node)
      [[ ${#f[@]} -eq 3 ]] || fail "want: node <node-id> <bcrypt-hash>"
      [[ "${f[1]}" =~ $uuid_re ]] || fail "node: id ${f[1]@Q} is not a lower-case UUID"
      [[ "${f[2]}" =~ $bcrypt_re ]] || fail "node ${f[1]}: not a bcrypt hash (never put a plain password here)"
      [[ -z "${seen[${f[1]}]:-}" ]] || fail "node ${f[1]}: listed twice"
      seen[${f[1]}]=1
      nodes+=("$(render "$node_tmpl" "${f[1]}" "${f[2]}")")
      ;;
    cluster)
      [[ ${#f[@]} -eq 2 ]] || fail "want: cluster <name>"
      [[ "${f[1]}" =~ $cluster_re ]] || fail "cluster: ${f[1]@Q} is not a cluster name (1-32 lower-case letters, digits and '-', as --cluster takes)"
      [[ -z "${clusters[${f[1]}]:-}" ]] || fail "cluster ${f[1]}: listed twice"
      clusters[${f[1]}]=1
      # Lines before the first cluster line are the default installation's, if there are any.
      if [[ -n "$control" || -n "$cluster" || ${#nodes[@]} -gt 0 ]]; then end_cluster; fi
      set_cluster "${f[1]}"
      control=""
      ;;
    *)
      fail "unknown kind ${f[0]@Q} (want control, node or cluster)"
      ;;
  esac
done <"$input"
lineno=end
end_cluster

echo "# Generated by render-accounts.sh from templates/*.conf.tmpl. Do not edit; render again."
echo "accounts {"
printf '%s\n' "${controls[@]}"
[[ ${#nodes[@]} -eq 0 ]] || printf '%s\n' "${nodes[@]}"
echo "}"
