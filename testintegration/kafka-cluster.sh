#!/usr/bin/env bash
# Runs a 3-node Apache Kafka KRaft cluster on 127.0.0.1 for the cluster chaos tests: three JVMs,
# each a combined broker+controller, from the same Maven jars as kafka-broker.sh (sourced here for
# the jar resolution and the JVM command line). No Docker; Java 17+ and Maven.
#
#   testintegration/kafka-cluster.sh start          # fresh storage; prints the bootstrap list
#   testintegration/kafka-cluster.sh stop           # SIGTERM all, SIGKILL what is left after 15 s
#   testintegration/kafka-cluster.sh status         # one line per node; exit 0 when all 3 run
#   testintegration/kafka-cluster.sh kill N         # SIGKILL node N (1–3) and wait for it to exit
#   testintegration/kafka-cluster.sh term N         # SIGTERM node N: controlled shutdown; waits for the exit
#   testintegration/kafka-cluster.sh start-node N   # start node N on its kept storage, wait until registered
#   testintegration/kafka-cluster.sh wait-isr       # wait until every partition's replicas are all in sync
#   testintegration/kafka-cluster.sh leader-of TOPIC PARTITION      # prints the leader's node id
#   testintegration/kafka-cluster.sh coordinator-of GROUP           # prints the coordinator's node id
#   testintegration/kafka-cluster.sh elect-leaders TOPIC            # move TOPIC's partitions to their preferred leaders
#   testintegration/kafka-cluster.sh addr N         # prints node N's client address
#   testintegration/kafka-cluster.sh bootstrap      # prints the bootstrap list
#
#   export KAFKA_CLUSTER_BROKERS=$(testintegration/kafka-cluster.sh start)
#
# Node N (1–3) has node id N, its client listener on 127.0.0.1:(KAFKA_CLUSTER_PORT+N-1), its
# controller on KAFKA_CLUSTER_CONTROLLER_PORT+N-1 and a broker-to-broker listener on
# KAFKA_CLUSTER_INTERNAL_PORT+N-1. Clients only ever see the client listener, so a test can put a
# proxy in front of one broker's client traffic without touching replication:
#
#   KAFKA_ADVERTISED_ADDR=127.0.0.1:PROXYPORT kafka-cluster.sh start-node 3
#
# advertises node 3's client listener at the proxy's address (until node 3 starts again without it).
#
# Environment (all optional):
#   KAFKA_VERSION                  Apache Kafka release (default 4.4.0)
#   KAFKA_CLUSTER_PORT             first client port (default 19092: nodes on 19092–19094)
#   KAFKA_CLUSTER_CONTROLLER_PORT  first controller port (default 19192)
#   KAFKA_CLUSTER_INTERNAL_PORT    first broker-to-broker port (default 19292)
#                                  All ports stay below Linux's ephemeral range (32768–60999) and
#                                  clear of kafka-broker.sh's 9092/9093.
#   KAFKA_CLUSTER_HEAP_OPTS        JVM heap flags per node (default -Xms128m -Xmx512m)
#   KAFKA_CLUSTER_JVM_OPTS         other JVM flags per node (default -XX:TieredStopAtLevel=1 -XX:+UseSerialGC)
#   KAFKA_CLUSTER_DIR              data, logs, configs and pid files (default testintegration/.kafka-cluster)
#   KAFKA_START_TIMEOUT            seconds to wait for readiness (default 180)
#   KAFKA_KEEP_DATA                1: `start` keeps the existing storage
#   KAFKA_ADVERTISED_ADDR          start-node only: the client address node N advertises
#
# Cluster settings: static controller.quorum.voters, one cluster id for the three storages,
# every internal topic and new topics at replication factor 3 with min.insync.replicas=2,
# 6 __consumer_offsets partitions, no initial rebalance delay, sessions down to 1 s allowed.
# "Ready" (start) means all three brokers are registered and unfenced and the group coordinator
# answers for every __consumer_offsets partition (broker/ClusterCtl.java).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# fetch_jars, java_args, port_open, $lib (the jars, shared with the single broker) and $version.
# shellcheck source=kafka-broker.sh
source "$here/kafka-broker.sh"

host=127.0.0.1
nodes=3
cbase="${KAFKA_CLUSTER_PORT:-19092}"
ccbase="${KAFKA_CLUSTER_CONTROLLER_PORT:-19192}"
cibase="${KAFKA_CLUSTER_INTERNAL_PORT:-19292}"
# Read by java_args. Besides the heap: C1 only and the serial collector. Three JVMs share two
# cores with the tests; C2 compilation and parallel GC threads would compete for them during every
# start, while a test cluster's throughput needs neither.
heap="${KAFKA_CLUSTER_HEAP_OPTS:--Xms128m -Xmx512m} ${KAFKA_CLUSTER_JVM_OPTS:--XX:TieredStopAtLevel=1 -XX:+UseSerialGC}"
cdir="${KAFKA_CLUSTER_DIR:-$here/.kafka-cluster}"
ctimeout="${KAFKA_START_TIMEOUT:-180}"
coffsets=6

log() { echo "kafka-cluster: $*" >&2; }

node_port() { echo $((cbase + $1 - 1)); }
node_cport() { echo $((ccbase + $1 - 1)); }
node_iport() { echo $((cibase + $1 - 1)); }
node_dir() { echo "$cdir/node$1"; }

cluster_bootstrap() {
	local n out=""
	for ((n = 1; n <= nodes; n++)); do
		out+="${out:+,}$host:$(node_port "$n")"
	done
	echo "$out"
}

check_node() {
	[[ ${1:-} =~ ^[1-3]$ ]] || {
		log "node must be 1, 2 or 3, got '${1:-}'"
		exit 2
	}
}

node_pid() {
	local f
	f="$(node_dir "$1")/pid"
	[[ -f $f ]] || return 1
	local pid
	pid="$(cat "$f")"
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

write_node_config() {
	local n=$1 adv=${2:-} voters="" i
	for ((i = 1; i <= nodes; i++)); do
		voters+="${voters:+,}$i@$host:$(node_cport "$i")"
	done
	adv="${adv:-$host:$(node_port "$n")}"
	mkdir -p "$(node_dir "$n")"
	# INTERNAL carries replication and is never advertised through a proxy; PLAINTEXT is what
	# clients bootstrap from and get in metadata.
	# group.min.session.timeout.ms=1000: tests may use short sessions to see an expiry quickly.
	cat >"$(node_dir "$n")/server.properties" <<PROPS
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=PLAINTEXT://$host:$(node_port "$n"),INTERNAL://$host:$(node_iport "$n"),CONTROLLER://$host:$(node_cport "$n")
advertised.listeners=PLAINTEXT://$adv,INTERNAL://$host:$(node_iport "$n")
controller.listener.names=CONTROLLER
inter.broker.listener.name=INTERNAL
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,INTERNAL:PLAINTEXT
log.dirs=$(node_dir "$n")/data
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=3
offsets.topic.num.partitions=$coffsets
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
num.network.threads=2
num.io.threads=4
PROPS
}

# ctl runs broker/ClusterCtl.java, compiled once into $cdir/ctl (compiling the single-file source
# on every call would cost seconds per call on 2 cores), logging warnings only (the later
# -D wins over java_args' broker logging).
ctl() {
	local src="$here/broker/ClusterCtl.java" classes="$cdir/ctl"
	if [[ ! -f $classes/ClusterCtl.class || $src -nt $classes/ClusterCtl.class ]]; then
		mkdir -p "$classes"
		javac -nowarn -cp "$lib/*" -d "$classes" "$src" >&2
	fi
	# shellcheck disable=SC2206
	local cmd=(java $heap -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/broker/log4j2-tool.properties" -cp "$lib/*:$classes" ClusterCtl "$@")
	"${cmd[@]}"
}

# launch starts node N's JVM in the background (setsid, as kafka-broker.sh does) and records its pid.
launch() {
	local n=$1 d
	d="$(node_dir "$n")"
	java_args kafka.Kafka "$d/server.properties"
	echo "--- start $(date -u +%H:%M:%S)" >>"$d/broker.log"
	setsid bash -c 'exec "$@"' _ "${jargs[@]}" >>"$d/broker.log" 2>&1 </dev/null &
	echo $! >"$d/pid"
}

# wait_up waits until node N listens and logged "Kafka Server started" after line $2 of its log.
wait_up() {
	local n=$1 from=$2 deadline=$3 d pid
	d="$(node_dir "$n")"
	pid="$(cat "$d/pid")"
	until port_open "$(node_port "$n")" && tail -n "+$((from + 1))" "$d/broker.log" | grep -q "Kafka Server started"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			tail -n 40 "$d/broker.log" >&2
			rm -f "$d/pid"
			log "node $n exited during start"
			return 1
		fi
		if ((SECONDS >= deadline)); then
			tail -n 40 "$d/broker.log" >&2
			log "node $n did not start within ${ctimeout}s"
			return 1
		fi
		sleep 0.2
	done
}

log_lines() {
	local f
	f="$(node_dir "$1")/broker.log"
	if [[ -f $f ]]; then wc -l <"$f"; else echo 0; fi
}

cluster_start() {
	local n all=1
	for ((n = 1; n <= nodes; n++)); do
		node_pid "$n" >/dev/null || all=0
	done
	if ((all)); then
		log "already running"
		cluster_bootstrap
		return 0
	fi
	command -v java >/dev/null || { log "java not found: Apache Kafka 4.x needs Java 17+"; return 1; }
	for ((n = 1; n <= nodes; n++)); do
		if node_pid "$n" >/dev/null; then
			log "node $n is running but not all nodes are: stop first"
			return 1
		fi
		for p in "$(node_port "$n")" "$(node_cport "$n")" "$(node_iport "$n")"; do
			if port_open "$p"; then
				log "$host:$p is already in use by another process; set KAFKA_CLUSTER_PORT / _CONTROLLER_PORT / _INTERNAL_PORT"
				return 1
			fi
		done
	done
	mkdir -p "$dir" "$cdir"
	fetch_jars
	local keep=0
	if [[ "${KAFKA_KEEP_DATA:-}" == 1 ]]; then
		keep=1
		for ((n = 1; n <= nodes; n++)); do
			[[ -f "$(node_dir "$n")/data/meta.properties" ]] || keep=0
		done
	fi
	for ((n = 1; n <= nodes; n++)); do
		write_node_config "$n"
	done
	if ((keep)); then
		log "keeping the existing storage in $cdir"
	else
		# One cluster id for all three storages (16 random bytes, URL-safe base64, no padding).
		local cluster_id pids=()
		# Not starting with '-', which StorageTool would read as an option (Kafka's Uuid.randomUuid
		# skips those too).
		cluster_id=-
		while [[ "$cluster_id" == -* ]]; do
			cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
		done
		for ((n = 1; n <= nodes; n++)); do
			rm -rf "$(node_dir "$n")/data"
			: >"$(node_dir "$n")/broker.log"
			java_args kafka.tools.StorageTool format -t "$cluster_id" -c "$(node_dir "$n")/server.properties"
			"${jargs[@]}" >>"$(node_dir "$n")/broker.log" 2>&1 &
			pids+=($!)
		done
		for ((n = 1; n <= nodes; n++)); do
			if ! wait "${pids[n - 1]}"; then
				cat "$(node_dir "$n")/broker.log" >&2
				log "formatting node $n's storage failed"
				return 1
			fi
		done
	fi
	log "starting Apache Kafka $version, 3 nodes on $(cluster_bootstrap) (controllers $host:$ccbase–$((ccbase + nodes - 1))), logs $cdir/node*/broker.log"
	local from=() deadline=$((SECONDS + ctimeout)) t0=$SECONDS
	for ((n = 1; n <= nodes; n++)); do
		from+=("$(log_lines "$n")")
		launch "$n"
	done
	for ((n = 1; n <= nodes; n++)); do
		if ! wait_up "$n" "${from[n - 1]}" "$deadline"; then
			cluster_stop
			return 1
		fi
	done
	log "all nodes listening after $((SECONDS - t0))s; waiting for 3 registered brokers and the group coordinator"
	if ! ctl ready "$(cluster_bootstrap)" "$nodes" "$coffsets" "$((deadline - SECONDS > 30 ? deadline - SECONDS : 30))" >&2; then
		log "the cluster did not become ready; stopping it"
		cluster_stop
		return 1
	fi
	log "ready after $((SECONDS - t0))s"
	cluster_bootstrap
}

# stop_node sends sig to node N and waits up to $3 seconds for it to exit, then SIGKILLs it.
stop_node() {
	local n=$1 sig=$2 grace=$3 pid
	if ! pid="$(node_pid "$n")"; then
		rm -f "$(node_dir "$n")/pid"
		log "node $n not running"
		return 0
	fi
	local t0=$SECONDS
	kill "-$sig" "$pid" 2>/dev/null || true
	local deadline=$((SECONDS + grace)) rc=0
	while kill -0 "$pid" 2>/dev/null; do
		if ((SECONDS >= deadline)); then
			log "node $n (pid $pid) did not exit within ${grace}s of SIG$sig; killing it"
			kill -KILL "$pid" 2>/dev/null || true
			rc=1
			grace=$((grace + 10))
			deadline=$((SECONDS + 10))
		fi
		sleep 0.1
	done
	rm -f "$(node_dir "$n")/pid"
	log "node $n (pid $pid) exited $((SECONDS - t0))s after SIG$sig"
	return $rc
}

cluster_stop() {
	local n
	# All at once, 15 s of grace: whichever way they are stopped, the last node's controlled
	# shutdown can wait for a controller quorum that is already gone (seen: 30 s and more). The
	# next start formats fresh storage anyway, and a kept one recovers from a SIGKILL.
	for ((n = 1; n <= nodes; n++)); do
		stop_node "$n" TERM 15 &
	done
	wait || true
	log "stopped"
}

cluster_status() {
	local n pid up=0
	for ((n = 1; n <= nodes; n++)); do
		if pid="$(node_pid "$n")"; then
			echo "node $n: running (pid $pid) on $host:$(node_port "$n"), log $(node_dir "$n")/broker.log"
			up=$((up + 1))
		else
			echo "node $n: stopped"
		fi
	done
	((up == nodes))
}

start_node() {
	local n=$1 pid
	if pid="$(node_pid "$n")"; then
		log "node $n already running (pid $pid)"
		return 0
	fi
	[[ -f "$(node_dir "$n")/data/meta.properties" ]] || { log "node $n has no storage: run start first"; return 1; }
	for p in "$(node_port "$n")" "$(node_cport "$n")" "$(node_iport "$n")"; do
		if port_open "$p"; then
			log "$host:$p is already in use by another process"
			return 1
		fi
	done
	write_node_config "$n" "${KAFKA_ADVERTISED_ADDR:-}"
	local from t0=$SECONDS deadline=$((SECONDS + ctimeout))
	from="$(log_lines "$n")"
	launch "$n"
	wait_up "$n" "$from" "$deadline" || return 1
	# Registered and unfenced: the broker caught up with the metadata log and takes leadership
	# again (its replicas still have to catch up: wait-isr).
	if ! ctl registered "$(cluster_bootstrap)" "$nodes" "$((deadline - SECONDS > 30 ? deadline - SECONDS : 30))" >&2; then
		log "node $n did not register within ${ctimeout}s"
		return 1
	fi
	log "node $n up and registered after $((SECONDS - t0))s${KAFKA_ADVERTISED_ADDR:+, advertised at $KAFKA_ADVERTISED_ADDR}"
}

case "${1:-}" in
start) cluster_start ;;
stop) cluster_stop ;;
status) cluster_status ;;
kill)
	check_node "${2:-}"
	stop_node "$2" KILL 30
	;;
term)
	check_node "${2:-}"
	stop_node "$2" TERM 60
	;;
start-node)
	check_node "${2:-}"
	start_node "$2"
	;;
wait-isr) ctl isr "$(cluster_bootstrap)" "${2:-$ctimeout}" >&2 ;;
leader-of) ctl leader-of "$(cluster_bootstrap)" "${2:?topic}" "${3:?partition}" ;;
coordinator-of) ctl coordinator-of "$(cluster_bootstrap)" "${2:?group}" ;;
elect-leaders) ctl elect-leaders "$(cluster_bootstrap)" "${2:?topic}" >&2 ;;
addr)
	check_node "${2:-}"
	echo "$host:$(node_port "$2")"
	;;
bootstrap) cluster_bootstrap ;;
*)
	echo "usage: $0 start|stop|status|kill N|term N|start-node N|wait-isr [SECONDS]|leader-of TOPIC PARTITION|coordinator-of GROUP|elect-leaders TOPIC|addr N|bootstrap" >&2
	exit 2
	;;
esac
