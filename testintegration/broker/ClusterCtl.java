// Run by kafka-cluster.sh as a single-file program (java -cp "lib/*" ClusterCtl.java VERB BOOTSTRAP …):
// the questions the cluster script asks the cluster itself, through the Java admin client.
//
//   ready BOOTSTRAP BROKERS OFFSETS_PARTITIONS TIMEOUT_S   BROKERS brokers registered and unfenced, and
//                                                          the group coordinator serving every
//                                                          __consumer_offsets partition
//   registered BOOTSTRAP BROKERS TIMEOUT_S                 BROKERS brokers registered and unfenced
//   isr BOOTSTRAP TIMEOUT_S                                every partition of every topic has its full
//                                                          replica set in sync
//   leader-of BOOTSTRAP TOPIC PARTITION                    prints the leader's node id
//   coordinator-of BOOTSTRAP GROUP                         prints the group coordinator's node id
//   elect-leaders BOOTSTRAP TOPIC                          moves every partition of TOPIC back to its
//                                                          preferred leader (first replica)
//
// Exit 0 when the condition holds (or the answer is printed), 1 when it did not within the timeout.

import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.ElectionNotNeededException;
import org.apache.kafka.common.utils.Utils;

public class ClusterCtl {
    public static void main(String[] args) throws Exception {
        String verb = args[0];
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, args[1]);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "30000");
        props.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, "5000");
        try (Admin admin = Admin.create(props)) {
            switch (verb) {
                case "ready" -> {
                    int brokers = Integer.parseInt(args[2]);
                    long deadline = deadline(args[4]);
                    waitRegistered(admin, brokers, deadline);
                    waitGroups(admin, Integer.parseInt(args[3]), deadline);
                    System.out.println(brokers + " brokers registered; group coordinator ready for all " + args[3] + " __consumer_offsets partitions");
                }
                case "registered" -> {
                    int brokers = Integer.parseInt(args[2]);
                    waitRegistered(admin, brokers, deadline(args[3]));
                    System.out.println(brokers + " brokers registered");
                }
                case "isr" -> {
                    waitInSync(admin, deadline(args[2]));
                    System.out.println("every partition has its full replica set in sync");
                }
                case "leader-of" -> {
                    String topic = args[2];
                    int partition = Integer.parseInt(args[3]);
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
                    TopicPartitionInfo p = d.partitions().get(partition);
                    if (p.leader() == null) {
                        System.err.println(topic + "/" + partition + " has no leader");
                        System.exit(1);
                    }
                    System.out.println(p.leader().id());
                }
                case "coordinator-of" -> {
                    // The coordinator is the leader of the group's __consumer_offsets partition,
                    // abs(groupId.hashCode()) % its partition count: this answers for a group
                    // that does not exist yet too (describeConsumerGroups would not).
                    String offsets = "__consumer_offsets";
                    TopicDescription d = admin.describeTopics(List.of(offsets)).allTopicNames().get(30, TimeUnit.SECONDS).get(offsets);
                    TopicPartitionInfo p = d.partitions().get(Utils.abs(args[2].hashCode()) % d.partitions().size());
                    if (p.leader() == null) {
                        System.err.println(offsets + "/" + p.partition() + " has no leader");
                        System.exit(1);
                    }
                    System.out.println(p.leader().id());
                }
                case "elect-leaders" -> {
                    String topic = args[2];
                    TopicDescription d = admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
                    Set<TopicPartition> parts = new HashSet<>();
                    for (TopicPartitionInfo p : d.partitions()) {
                        parts.add(new TopicPartition(topic, p.partition()));
                    }
                    // A partition already on its preferred leader answers ELECTION_NOT_NEEDED: fine.
                    admin.electLeaders(ElectionType.PREFERRED, parts).partitions().get(30, TimeUnit.SECONDS).forEach((tp, err) -> {
                        if (err.isPresent() && !(err.get() instanceof ElectionNotNeededException)) {
                            System.err.println(tp + ": " + err.get());
                        }
                    });
                    System.out.println("preferred leaders elected for " + topic);
                }
                default -> {
                    System.err.println("unknown verb " + verb);
                    System.exit(2);
                }
            }
        }
    }

    static long deadline(String seconds) {
        return System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(seconds));
    }

    static void pause(long deadline, String what) throws InterruptedException {
        if (System.nanoTime() > deadline) {
            System.err.println("timed out waiting for " + what);
            System.exit(1);
        }
        Thread.sleep(250);
    }

    // describeCluster lists the brokers the controller has registered and not fenced: a killed
    // broker leaves the list once its session (broker.session.timeout.ms) expires, a restarted
    // one joins it once it has caught up with the metadata log.
    static void waitRegistered(Admin admin, int brokers, long deadline) throws InterruptedException {
        while (true) {
            try {
                int n = admin.describeCluster().nodes().get(5, TimeUnit.SECONDS).size();
                if (n >= brokers) {
                    return;
                }
            } catch (Exception e) {
                // not reachable yet: retry until the deadline
            }
            pause(deadline, brokers + " registered brokers");
        }
    }

    // One group per __consumer_offsets partition (the broker maps a group to
    // abs(groupId.hashCode()) % offsets.topic.num.partitions), as broker/Warmup.java does.
    static void waitGroups(Admin admin, int offsetsPartitions, long deadline) throws Exception {
        Map<Integer, String> groups = new HashMap<>();
        for (int i = 0; groups.size() < offsetsPartitions; i++) {
            String id = "kafka-cluster-sh-warmup-" + i;
            groups.putIfAbsent(Utils.abs(id.hashCode()) % offsetsPartitions, id);
        }
        for (String id : groups.values()) {
            while (true) {
                try {
                    admin.listConsumerGroupOffsets(id).partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
                    break;
                } catch (Exception e) {
                    pause(deadline, "the group coordinator of " + id);
                }
            }
        }
    }

    static void waitInSync(Admin admin, long deadline) throws InterruptedException {
        while (true) {
            try {
                Set<String> names = admin.listTopics(new org.apache.kafka.clients.admin.ListTopicsOptions().listInternal(true)).names().get(5, TimeUnit.SECONDS);
                int behind = 0;
                for (TopicDescription d : admin.describeTopics(names).allTopicNames().get(10, TimeUnit.SECONDS).values()) {
                    for (TopicPartitionInfo p : d.partitions()) {
                        if (p.isr().size() < p.replicas().size()) {
                            behind++;
                        }
                    }
                }
                if (behind == 0) {
                    return;
                }
            } catch (Exception e) {
                // a broker is moving: retry until the deadline
            }
            pause(deadline, "every partition's replicas to be in sync");
        }
    }
}
