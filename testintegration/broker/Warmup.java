// Run by kafka-broker.sh as a single-file program (java -cp "lib/*" Warmup.java BOOTSTRAP N):
// waits until the group coordinator serves every partition of __consumer_offsets.
//
// A fresh broker creates __consumer_offsets on the first FindCoordinator and answers
// GROUP_COORDINATOR_NOT_AVAILABLE until the partitions are loaded. A kafka-go ConsumerGroup
// returns that error from Next and retries only after JoinGroupBackoff (5 s), and a test that
// treats the error as fatal fails. The broker is "ready" for tests once groups work.

import java.util.HashMap;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.common.utils.Utils;

public class Warmup {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        int offsetsPartitions = Integer.parseInt(args[1]);
        // One group id per __consumer_offsets partition: the broker maps a group to
        // abs(groupId.hashCode()) % offsets.topic.num.partitions.
        Map<Integer, String> groups = new HashMap<>();
        for (int i = 0; groups.size() < offsetsPartitions; i++) {
            String id = "kafka-broker-sh-warmup-" + i;
            groups.putIfAbsent(Utils.abs(id.hashCode()) % offsetsPartitions, id);
        }
        Properties props = new Properties();
        props.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, "60000");
        try (Admin admin = Admin.create(props)) {
            for (String id : groups.values()) {
                // The admin client retries retriable errors (coordinator not available, load in
                // progress) until the API timeout.
                admin.listConsumerGroupOffsets(id).partitionsToOffsetAndMetadata().get(70, TimeUnit.SECONDS);
            }
        }
        System.out.println("group coordinator ready for all " + offsetsPartitions + " __consumer_offsets partitions");
    }
}
