// Task events to containerd: containerd.services.events.ttrpc.v1.Events/Forward on the ttrpc socket
// containerd names in $TTRPC_ADDRESS, one Envelope per event (topic, namespace, the event as an Any), in
// the order they happened (a queue: /tasks/create must reach containerd before /tasks/exit).
import { packAny, TtrpcClient, timestamp } from "../ttrpc";

export interface EventPublisher {
  publish(topic: string, eventType: string, event: object): Promise<void>;
  close(): void;
}

const FORWARD_TIMEOUT_MS = 5000;

export class TtrpcPublisher implements EventPublisher {
  private client?: Promise<TtrpcClient>;
  private queue: Promise<void> = Promise.resolve();

  constructor(
    private readonly address: string,
    private readonly namespace: string,
    private readonly log: (msg: string) => void,
  ) {}

  private connection(): Promise<TtrpcClient> {
    if (!this.client) {
      const c = TtrpcClient.connect(this.address.replace(/^unix:\/\//, ""));
      this.client = c;
      // A closed connection is made anew for the next event (containerd restarted).
      void c.then(
        (cl) => cl.closed.then(() => (this.client = undefined)),
        () => (this.client = undefined),
      );
    }
    return this.client;
  }

  publish(topic: string, eventType: string, event: object): Promise<void> {
    const envelope = {
      timestamp: timestamp(),
      namespace: this.namespace,
      topic,
      event: packAny(eventType, event),
    };
    this.queue = this.queue.then(async () => {
      try {
        const c = await this.connection();
        await c.call(
          "containerd.services.events.ttrpc.v1.Events",
          "Forward",
          "containerd.services.events.ttrpc.v1.ForwardRequest",
          "google.protobuf.Empty",
          { envelope },
          { timeoutMs: FORWARD_TIMEOUT_MS },
        );
      } catch (err) {
        // containerd learns of exits from Wait too; a lost event is logged, not fatal.
        this.log(`publish ${topic}: ${(err as Error).message}`);
      }
    });
    return this.queue;
  }

  close(): void {
    void this.client?.then((c) => c.close()).catch(() => {});
  }
}
