#!/usr/bin/env bash
# Runs a single-node Apache Kafka (KRaft, broker+controller in one JVM) on 127.0.0.1 for the
# integration tests: no Docker needed, only Java 17+ and Maven (the broker jars and their runtime
# dependencies come from Maven Central through testintegration/broker/pom.xml).
#
#   testintegration/kafka-broker.sh start    # prints the bootstrap address on stdout
#   testintegration/kafka-broker.sh status   # exit 0 when running
#   testintegration/kafka-broker.sh stop
#   testintegration/kafka-broker.sh fetch    # only resolve the jars; prints their directory
#
#   export KAFKA_BROKERS=$(testintegration/kafka-broker.sh start)
#
# Environment (all optional):
#   KAFKA_VERSION          Apache Kafka release (default 4.4.0; kafka-go v0.4.51 also verified with 4.0.2, 4.1.1)
#   KAFKA_PORT             PLAINTEXT listener port on 127.0.0.1 (default 9092). Keep both ports below
#                          Linux's ephemeral range (32768–60999): a client retrying a stopped
#                          broker's port can self-connect on it and block the restart.
#   KAFKA_CONTROLLER_PORT  KRaft controller port on 127.0.0.1 (default 9093)
#   KAFKA_HEAP_OPTS        JVM heap flags (default -Xms256m -Xmx512m)
#   KAFKA_BROKER_DIR       jars, data, log and pid file (default testintegration/.kafka, gitignored)
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 120)
#   KAFKA_KEEP_DATA        1: start on the existing storage (a broker restart keeping topics and offsets)
#
# Every start formats fresh storage, unless KAFKA_KEEP_DATA=1 and storage exists: a test run never
# sees topics or offsets of an earlier one, and a restart test can keep them.
# "Ready" means the listener answers and consumer groups work (broker/Warmup.java).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
version="${KAFKA_VERSION:-4.4.0}"
host=127.0.0.1
port="${KAFKA_PORT:-9092}"
cport="${KAFKA_CONTROLLER_PORT:-9093}"
heap="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
dir="${KAFKA_BROKER_DIR:-$here/.kafka}"
timeout="${KAFKA_START_TIMEOUT:-120}"
lib="$dir/lib-$version"
data="$dir/data"
pidfile="$dir/broker.pid"
logfile="$dir/broker.log"
bootstrap="$host:$port"
# Few partitions: a single test broker gains nothing from the default 50, and each one must be
# created and loaded before the broker is ready for consumer groups.
offsets_partitions=4

log() { echo "kafka-broker: $*" >&2; }

running_pid() {
	[[ -f $pidfile ]] || return 1
	local pid
	pid="$(cat "$pidfile")"
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/$host/$1") 2>/dev/null; }

fetch_jars() {
	[[ -f $lib/.complete ]] && return 0
	command -v mvn >/dev/null || { log "mvn not found: Maven resolves the broker jars"; return 1; }
	log "fetching Apache Kafka $version jars with Maven into $lib"
	rm -rf "$lib.tmp"
	# -B/-ntp: no progress bars in CI logs; -q would also hide a resolution error's cause.
	if ! mvn -B -ntp -f "$here/broker/pom.xml" -Dkafka.version="$version" \
		dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$lib.tmp" >"$dir/mvn.log" 2>&1; then
		tail -n 40 "$dir/mvn.log" >&2
		log "could not resolve org.apache.kafka:kafka_2.13:$version (full output: $dir/mvn.log)"
		return 1
	fi
	touch "$lib.tmp/.complete"
	rm -rf "$lib"
	mv "$lib.tmp" "$lib"
}

write_config() {
	# Single node, so every internal topic must have replication factor 1 or it is never created.
	# group.initial.rebalance.delay.ms=0: the default 3 s delay before the first rebalance of a new
	# group would add 3 s to every consumer-group test. group.min.session.timeout.ms=1000 lets a
	# test use a short session timeout to see a crashed member expire quickly.
	cat >"$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@$host:$cport
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data
num.partitions=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=$offsets_partitions
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
num.network.threads=2
num.io.threads=4
PROPS
}

# java_args builds the JVM command line; the classpath wildcard is expanded by the JVM, not the
# shell, and $heap is split into flags on purpose.
java_args() {
	# shellcheck disable=SC2206
	jargs=(java $heap -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/broker/log4j2.properties" -cp "$lib/*" "$@")
}

start() {
	mkdir -p "$dir"
	if pid="$(running_pid)"; then
		log "already running (pid $pid)"
		echo "$bootstrap"
		return 0
	fi
	command -v java >/dev/null || { log "java not found: Apache Kafka 4.x needs Java 17+"; return 1; }
	for p in "$port" "$cport"; do
		if port_open "$p"; then
			log "$host:$p is already in use by another process; set KAFKA_PORT / KAFKA_CONTROLLER_PORT"
			return 1
		fi
	done
	fetch_jars
	write_config
	if [[ "${KAFKA_KEEP_DATA:-}" == 1 && -f "$data/meta.properties" ]]; then
		log "keeping the existing storage in $data"
	else
		rm -rf "$data"
		# A cluster id is 16 random bytes, URL-safe base64 without padding (what StorageTool random-uuid
		# prints); generating it here saves one JVM start.
		local cluster_id
		# Not starting with '-', which StorageTool would read as an option (Kafka's Uuid.randomUuid
		# skips those too).
		cluster_id=-
		while [[ "$cluster_id" == -* ]]; do
			cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
		done
		java_args kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties"
		if ! "${jargs[@]}" >"$logfile" 2>&1; then
			cat "$logfile" >&2
			log "formatting storage failed"
			return 1
		fi
	fi
	log "starting Apache Kafka $version on $bootstrap (controller $host:$cport), log $logfile"
	# setsid: the broker must outlive this script and not get the caller's terminal signals.
	# bash -c 'exec …' keeps the recorded pid the JVM's own (setsid alone may fork).
	java_args kafka.Kafka "$dir/server.properties"
	setsid bash -c 'exec "$@"' _ "${jargs[@]}" >>"$logfile" 2>&1 </dev/null &
	echo $! >"$pidfile"
	local pid=$! deadline=$((SECONDS + timeout))
	until port_open "$port" && grep -q "Kafka Server started" "$logfile"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 60 "$logfile" >&2
			rm -f "$pidfile"
			log "broker exited during start"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			tail -n 60 "$logfile" >&2
			log "broker did not answer within ${timeout}s; stopping it"
			stop
			return 1
		fi
		sleep 0.2
	done
	# Ready for tests means consumer groups work too: see broker/Warmup.java.
	java_args "$here/broker/Warmup.java" "$bootstrap" "$offsets_partitions"
	if ! "${jargs[@]}" >>"$logfile" 2>&1; then
		tail -n 60 "$logfile" >&2
		log "the group coordinator did not become ready; stopping the broker"
		stop
		return 1
	fi
	log "ready after $((SECONDS + timeout - deadline))s"
	echo "$bootstrap"
}

stop() {
	local pid
	if ! pid="$(running_pid)"; then
		rm -f "$pidfile"
		log "not running"
		return 0
	fi
	# SIGTERM runs the broker's shutdown hook (controlled shutdown, flush, close the log); a
	# single node normally needs a few seconds. Past the deadline it is killed.
	kill -TERM "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + 30))
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "pid $pid did not stop within 30s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.2
	done
	rm -f "$pidfile"
	log "stopped (pid $pid)"
}

status() {
	local pid
	if pid="$(running_pid)"; then
		log "running (pid $pid) on $bootstrap, log $logfile"
		echo "$bootstrap"
		return 0
	fi
	log "not running"
	return 3
}

# kafka-cluster.sh sources this file for fetch_jars, java_args and port_open: the verbs run
# only when it is executed.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
	case "${1:-}" in
	start) start ;;
	stop) stop ;;
	status) status ;;
	fetch) mkdir -p "$dir" && fetch_jars && echo "$lib" ;;
	*)
		echo "usage: $0 start|stop|status|fetch" >&2
		exit 2
		;;
	esac
fi
