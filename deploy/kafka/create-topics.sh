#!/bin/sh
# Creates every topic of the Single Window broker (the list in broker/core/topics.py,
# `Topics(prefix).all()`; tests/ops checks that they match) on an Apache Kafka cluster:
# replication factor 3, min.insync.replicas 2 (with the producers' acks=all, a write survives
# the loss of one broker and is refused, not lost, when two are gone), and SWB_PARTITIONS
# partitions for every topic, so one submission's records share a partition number everywhere.
# Idempotent (--if-not-exists): safe to run on every deployment.
set -eu

BOOTSTRAP="${KAFKA_BOOTSTRAP:-kafka-1:19092,kafka-2:19092,kafka-3:19092}"
PREFIX="${SWB_TOPIC_PREFIX:-sw}"
PARTITIONS="${SWB_PARTITIONS:-4}"
REPLICATION="${REPLICATION_FACTOR:-3}"
MIN_INSYNC="${MIN_INSYNC_REPLICAS:-2}"
KAFKA_BIN="${KAFKA_BIN:-/opt/kafka/bin}"
# Agency codes (DESIGN §3): each has a requests and a responses topic.
AGENCIES="customs veterinary plant food medicines standards police environment wildlife radiation strategic excise"
# The DLQ is read by people, maybe days later: keep it 30 days.
DLQ_RETENTION_MS=2592000000

attempt=0
until "$KAFKA_BIN/kafka-broker-api-versions.sh" --bootstrap-server "$BOOTSTRAP" >/dev/null 2>&1; do
  attempt=$((attempt + 1))
  if [ "$attempt" -ge 60 ]; then
    echo "create-topics: Kafka at $BOOTSTRAP did not answer in 2 minutes" >&2
    exit 1
  fi
  sleep 2
done

create() {
  topic="$PREFIX.$1"
  shift
  "$KAFKA_BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$topic" --partitions "$PARTITIONS" --replication-factor "$REPLICATION" \
    --config "min.insync.replicas=$MIN_INSYNC" "$@"
  echo "create-topics: $topic"
}

create submissions
# The router rebuilds its memory of each submission's last plan from here: compact, so
# amendments stay possible for as long as the submission lives, not for 7 days.
create routing --config cleanup.policy=compact
create decisions
# Arrival notices of declarations lodged before the goods arrived (pre-arrival).
create arrivals
create dlq --config "retention.ms=$DLQ_RETENTION_MS"
# The aggregator's state per submission: the last record per key wins, so compact it.
create aggregator.changelog --config cleanup.policy=compact
# Permits (LPCO) and what was written off them, per permit id: compacted.
create permits --config cleanup.policy=compact
# The gateway's webhook registrations, per trader and receiver: compacted.
create gateway.webhooks --config cleanup.policy=compact
for agency in $AGENCIES; do
  create "agency.$agency.requests"
  create "agency.$agency.responses"
done
