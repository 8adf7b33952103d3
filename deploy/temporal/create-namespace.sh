#!/bin/sh
# One-shot job (temporalio/admin-tools): the namespace and orderflow's custom search attributes.
# It retries until every attribute is registered (an order start fails on a missing CustomerId)
# and exits non-zero only after SETUP_DEADLINE_SECONDS, so compose restarts it (on-failure).
set -eu
NAMESPACE=${NAMESPACE:-default}
ADDRESS=${TEMPORAL_ADDRESS:-temporal:7233}
# name=Type pairs, the same list as orderflow/contracts/order.py SEARCH_ATTRIBUTE_ARGS
ATTRIBUTES=${SEARCH_ATTRIBUTES:-OrderStatus=Keyword OrderTotal=Int CustomerId=Keyword}
deadline=$(( $(date +%s) + ${SETUP_DEADLINE_SECONDS:-300} ))

attempt() {
  temporal operator cluster health --address "$ADDRESS" >/dev/null || return 1
  temporal operator namespace describe -n "$NAMESPACE" --address "$ADDRESS" >/dev/null 2>&1 ||
    temporal operator namespace create -n "$NAMESPACE" --address "$ADDRESS" || return 1
  registered=$(temporal operator search-attribute list -n "$NAMESPACE" --address "$ADDRESS") || return 1
  for pair in $ATTRIBUTES; do
    name=${pair%%=*}
    type=${pair#*=}
    echo "$registered" | grep -qw "$name" && continue
    temporal operator search-attribute create -n "$NAMESPACE" --address "$ADDRESS" \
      --name "$name" --type "$type" || return 1
  done
  # check, do not assume: list again and require every name
  registered=$(temporal operator search-attribute list -n "$NAMESPACE" --address "$ADDRESS") || return 1
  for pair in $ATTRIBUTES; do echo "$registered" | grep -qw "${pair%%=*}" || return 1; done
}

until attempt; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "namespace $NAMESPACE or its search attributes are still missing; giving up" >&2
    exit 1
  fi
  echo "Temporal not ready for namespace $NAMESPACE yet; retrying in 3 s"
  sleep 3
done
echo "namespace $NAMESPACE has search attributes: $ATTRIBUTES"
